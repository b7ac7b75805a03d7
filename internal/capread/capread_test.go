package capread

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReader(t *testing.T) {
	tooBig := errors.New("too big")
	for _, tc := range []struct {
		in   string
		max  int64
		want string
		err  error
	}{
		{"abc", 3, "abc", nil},
		{"abc", 5, "abc", nil},
		{"abcd", 3, "abc", tooBig},
		{"", 0, "", nil},
		{"a", 0, "", tooBig},
	} {
		for _, src := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
			r := &Reader{R: src, Left: tc.max, Err: tooBig}
			got, err := io.ReadAll(r)
			if string(got) != tc.want || !errors.Is(err, tc.err) && !(tc.err == nil && err == nil) {
				t.Errorf("%q cap %d: %q %v, want %q %v", tc.in, tc.max, got, err, tc.want, tc.err)
			}
		}
	}
}
