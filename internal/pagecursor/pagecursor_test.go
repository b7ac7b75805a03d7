package pagecursor

import (
	"strings"
	"testing"
	"time"
)

func TestCursor(t *testing.T) {
	for _, tc := range []struct {
		at time.Time
		id string
	}{
		{time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), "aud_0123456789abcdef01234567"},
		{time.Unix(0, 0), "aud_x"},
		{time.Unix(0, -1), "a"},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("y", -7200)), "aud_1"},
	} {
		c := Encode(tc.at, tc.id)
		at, id, err := Parse(c)
		if err != nil || !at.Equal(tc.at) || id != tc.id || at.Location() != time.UTC {
			t.Errorf("%q: %v %q %v", c, at, id, err)
		}
	}
	for s, want := range map[string]time.Time{
		"2026-01-02T03:04:05Z":           time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		"2026-01-02T03:04:05.5+01:00":    time.Date(2026, 1, 2, 2, 4, 5, 5e8, time.UTC),
		"9999-12-31T23:59:59Z":           maxTime,
		"0001-01-01T00:00:00Z":           minTime,
		"1970-01-01T00:00:00.000000001Z": time.Unix(0, 1).UTC(),
	} {
		at, id, err := Parse(s)
		if err != nil || !at.Equal(want) || id != "" {
			t.Errorf("Parse(%q) = %v %q %v; want %v", s, at, id, err, want)
		}
	}
	for _, s := range []string{
		"", "_", "1_", "_aud_1", "01_aud_1", "-0_aud_1", "+1_aud_1", "1_aud 1", "1_aud/1", "1_" + strings.Repeat("a", 65),
		"99999999999999999999_aud_1", "2026-01-02", "2026-01-02 03:04:05Z", "yesterday", "1x_aud_1",
		strings.Repeat("1", 200), "2026-01-02T03:04:05Z_aud_1",
	} {
		at, id, err := Parse(s)
		if err == nil || !at.IsZero() || id != "" {
			t.Errorf("Parse(%.30q) = %v %q %v; want an error", s, at, id, err)
		} else if err != errCursor {
			t.Errorf("Parse(%.30q): error %v", s, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		Encode(time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), "aud_0123456789abcdef01234567"), "0_a", "-1_a", "2026-01-02T03:04:05Z",
		"2026-01-02T03:04:05.123456789-07:00", "9999-12-31T23:59:59Z", "01_a", "1_", "_", "x", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		at, id, err := Parse(s)
		if err != nil {
			if err != errCursor || !at.IsZero() || id != "" {
				t.Fatalf("Parse(%q) = %v %q %v", s, at, id, err)
			}
			return
		}
		if at.Location() != time.UTC || at.Before(minTime) || at.After(maxTime) {
			t.Fatalf("Parse(%q): time %v", s, at)
		}
		if id != "" {
			if back := Encode(at, id); back != s {
				t.Fatalf("cursor %q reads back as %q", s, back)
			}
			return
		}
		// A time: its cursor form parses back to it.
		c := Encode(at, "aud_1")
		if at2, id2, err := Parse(c); err != nil || !at2.Equal(at) || id2 != "aud_1" {
			t.Fatalf("time %q: cursor %q: %v %q %v", s, c, at2, id2, err)
		}
	})
}

// TestEncodeClamps: a time beyond int64 nanoseconds clamps to the
// nearest representable one, never wraps around to another century.
func TestEncodeClamps(t *testing.T) {
	for at, want := range map[time.Time]time.Time{
		time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC):  maxTime,
		time.Date(2262, 4, 12, 0, 0, 0, 0, time.UTC): maxTime,
		time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC):  minTime,
		{}:      minTime,
		maxTime: maxTime,
		minTime: minTime,
	} {
		got, id, err := Parse(Encode(at, "aud_1"))
		if err != nil || !got.Equal(want) || id != "aud_1" {
			t.Errorf("Encode(%v) reads back as %v %q %v, want %v", at, got, id, err, want)
		}
	}
}
