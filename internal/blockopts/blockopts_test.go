package blockopts

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestParse(t *testing.T) {
	got := map[string]string{}
	set := func(opt, val string) error { got[opt] = val; return nil }
	d := caddyfile.NewTestDispenser("x {\n a 1\n b\n}")
	if err := Parse(d, set); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["a"] != "1" || got["b"] != "" {
		t.Errorf("got %v", got)
	}
	for _, bad := range []string{"x arg {\n}", "x {\n a 1 2\n}"} {
		if err := Parse(caddyfile.NewTestDispenser(bad), set); err == nil || !strings.Contains(err.Error(), "wrong argument count") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
