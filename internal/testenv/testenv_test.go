package testenv

import (
	"testing"
)

// recorder is a testing.TB that records how Unavailable ended the test.
type recorder struct {
	testing.TB
	how string
}

func (r *recorder) Helper()               {}
func (r *recorder) Fatalf(string, ...any) { r.how = "fail" }
func (r *recorder) Skipf(string, ...any)  { r.how = "skip" }

func TestUnavailable(t *testing.T) {
	for strict, want := range map[string]string{"": "skip", "0": "skip", "1": "fail"} {
		t.Setenv(StrictVar, strict)
		r := &recorder{TB: t}
		Unavailable(r, "no %s", "tool")
		if r.how != want {
			t.Errorf("%s=%q: %s, want %s", StrictVar, strict, r.how, want)
		}
	}
}
