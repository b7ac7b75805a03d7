package storemodule

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalOption(t *testing.T) {
	d := caddyfile.NewTestDispenser("x {\n name prod\n poll_interval 2s\n max_staleness 1m\n timeout 3s\n allow_empty\n other 1\n name\n}")
	var c SyncConfig
	d.Next()
	var unknown []string
	for d.NextBlock(0) {
		ok, err := c.UnmarshalOption(d)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			unknown = append(unknown, d.Val())
			d.RemainingArgs()
		}
	}
	if c.Name != "prod" || time.Duration(c.PollInterval) != 2*time.Second || time.Duration(c.MaxStaleness) != time.Minute ||
		time.Duration(c.Timeout) != 3*time.Second || !c.AllowEmpty || len(unknown) != 1 || unknown[0] != "other" {
		t.Fatalf("parsed %+v, unknown %v", c, unknown)
	}
	for _, in := range []string{"x {\n poll_interval soon\n}", "x {\n allow_empty yes\n}", "x {\n name a b\n}"} {
		d := caddyfile.NewTestDispenser(in)
		d.Next()
		d.NextBlock(0)
		var c SyncConfig
		if _, err := c.UnmarshalOption(d); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestRequestTimeout(t *testing.T) {
	if got := (&SyncConfig{}).RequestTimeout(); got != 10*time.Second {
		t.Errorf("default %s", got)
	}
	if got := (&SyncConfig{MaxStaleness: caddyDuration(4 * time.Second)}).RequestTimeout(); got != 2*time.Second {
		t.Errorf("short staleness %s", got)
	}
	if got := (&SyncConfig{Timeout: caddyDuration(time.Second)}).RequestTimeout(); got != time.Second {
		t.Errorf("explicit %s", got)
	}
}

func TestSecret(t *testing.T) {
	t.Setenv("STOREMODULE_TEST_SECRET", "from-env")
	if v, err := Secret("token", "{env.STOREMODULE_TEST_SECRET}", ""); err != nil || v != "from-env" {
		t.Fatalf("env: %q %v", v, err)
	}
	f := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(f, []byte("from-file\n"), 0o600)
	if v, err := Secret("token", "inline", f); err != nil || v != "from-file" {
		t.Fatalf("file wins: %q %v", v, err)
	}
	if _, err := Secret("token", "", filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func caddyDuration(d time.Duration) caddy.Duration { return caddy.Duration(d) }
