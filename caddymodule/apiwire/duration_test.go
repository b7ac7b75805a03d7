package apiwire

import (
	"testing"
	"time"
)

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                              "0s",
		time.Second:                    "1s",
		1500 * time.Millisecond:        "1.5s",
		90 * time.Second:               "1m30s",
		time.Hour:                      "1h",
		2 * time.Hour:                  "2h",
		time.Hour + 30*time.Minute:     "1h30m",
		time.Hour + time.Second:        "1h0m1s",
		24 * time.Hour:                 "24h",
		10 * time.Minute:               "10m",
		-time.Hour:                     "-1h",
		time.Hour + 10*time.Minute + 0: "1h10m",
	} {
		got := FormatDuration(d)
		if got != want {
			t.Errorf("FormatDuration(%d) = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(got); err != nil || back != d {
			t.Errorf("FormatDuration(%d) = %q parses as %v, %v", d, got, back, err)
		}
	}
}
