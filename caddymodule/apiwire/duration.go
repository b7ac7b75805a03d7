package apiwire

import (
	"strings"
	"time"
)

// FormatDuration renders d as the API writes durations: Go duration
// text without zero tails ("1h", "1h30m", "90s" as "1m30s"; not
// "1h0m0s"), which reads better and still parses with
// time.ParseDuration.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
