package state

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/pgtest"
)

// secret is a password that must never appear in an error.
const secret = "Sup3rS3cretPw"

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string // a substring of the error; "" for valid
	}{
		{Config{Backend: "sqlite", DSN: "/x/state.db"}, ""},
		{Config{Backend: "postgres", DSN: "postgres://u:" + secret + "@db.example:5432/av"}, ""},
		{Config{Backend: "postgres", DSN: "host=db.example user=u password=" + secret}, ""},
		{Config{}, "state: no backend"},
		{Config{Backend: "mysql", DSN: "x"}, `state: unknown backend "mysql"`},
		{Config{Backend: "sqlite"}, "state sqlite: no database file path"},
		{Config{Backend: "postgres"}, "state postgres: no DSN"},
		{Config{Backend: "sqlite", DSN: "x", MaxStale: -time.Second}, "state sqlite: max_stale must not be negative"},
		{Config{Backend: "postgres", DSN: "postgres://h/db", ReloadInterval: -1}, "state postgres: reload_interval must not be negative"},
		{Config{Backend: "sqlite", DSN: "x", MaxStale: time.Second}, "state sqlite: max_stale (1s) must be longer than the ping interval (1s)"},
		{Config{Backend: "sqlite", DSN: "x", MaxStale: 30 * time.Millisecond, PingInterval: 10 * time.Millisecond}, ""},
		{Config{Backend: "sqlite", DSN: "x", ReloadInterval: time.Nanosecond}, "state sqlite: reload_interval must be at least 1s, got 1ns"},
		{Config{Backend: "postgres", DSN: "postgres://h/db", ReloadInterval: 999 * time.Millisecond}, "state postgres: reload_interval must be at least 1s, got 999ms"},
		{Config{Backend: "sqlite", DSN: "x", ReloadInterval: time.Second}, ""},
		{Config{Backend: "sqlite", DSN: "x", PingInterval: time.Millisecond}, "state sqlite: ping interval must be at least 10ms, got 1ms"},
		{Config{Backend: "postgres", DSN: "postgres://u:" + secret + "@host:notaport/db"}, "state postgres: the DSN does not parse: invalid port"},
		{Config{Backend: "postgres", DSN: "postgres://u:" + secret + "@ho st/db"}, "state postgres: the DSN does not parse: failed to parse as URL"},
		{Config{Backend: "postgres", DSN: "postgres://u:Sup3r@S3cretPw@host/db?sslmode=bogus"}, "state postgres: the DSN does not parse: failed to configure TLS"},
		{Config{Backend: "postgres", DSN: "postgres://u:" + url.PathEscape(secret+"/@:") + "@host/db?connect_timeout=zz"}, "invalid connect_timeout"},
		{Config{Backend: "postgres", DSN: "postgres://u@host/db?password=" + secret + "&port=zz"}, "invalid port"},
		{Config{Backend: "postgres", DSN: "host=x password=" + secret + " port=abc"}, "invalid port"},
		{Config{Backend: "postgres", DSN: "host=x password='" + secret + " port=5432"}, "failed to parse as keyword/value"},
		{Config{Backend: "postgres", DSN: "postgres://u:" + secret + "%zz@host/db"}, "failed to parse as URL"},
	} {
		err := tc.cfg.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want it to contain %q", tc.cfg, err, tc.want)
		}
		if err != nil {
			for _, part := range []string{secret, "S3cretPw", "Sup3r"} {
				if strings.Contains(err.Error(), part) {
					t.Errorf("error %q contains the password (%q)", err, part)
				}
			}
		}
	}
}

func TestOpenBadConfigTouchesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.db")
	if _, err := Open(context.Background(), Config{Backend: "sqlite", DSN: path, PingInterval: -1}); err == nil {
		t.Fatal("Open accepted a negative ping interval")
	}
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Fatalf("a bad config created %s: %v", filepath.Dir(path), err)
	}
}

// freePort returns a loopback port nothing listens on.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestOpenUnreachablePostgres(t *testing.T) {
	dsn := "postgres://agent:" + secret + "@127.0.0.1:" + strconv.Itoa(freePort(t)) + "/av?sslmode=disable"
	start := time.Now()
	_, err := Open(context.Background(), Config{Backend: "postgres", DSN: dsn})
	if err == nil {
		t.Fatal("Open succeeded without a server")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "state postgres: connect: ") || strings.Contains(msg, secret) {
		t.Fatalf("error %q: want it to start with state postgres: connect: and not contain the password", msg)
	}
	if d := time.Since(start); d > openTimeout {
		t.Fatalf("took %v", d)
	}
	// A caller's deadline ends the attempt too.
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Open(cctx, Config{Backend: "postgres", DSN: dsn}); err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("cancelled Open: %v", err)
	}
}

func TestOpenWrongPassword(t *testing.T) {
	u, err := url.Parse(pgtest.Shared(t).NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), secret)
	_, err = Open(context.Background(), Config{Backend: "postgres", DSN: u.String()})
	if err == nil {
		t.Fatal("Open with a wrong password succeeded")
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "state postgres: connect: ") || !strings.Contains(msg, "password authentication failed") || strings.Contains(msg, secret) {
		t.Fatalf("error %q", msg)
	}
}

func TestErrorsNeverCarryThePassword(t *testing.T) {
	// The password of a working DSN is scrubbed from every error, also
	// when a driver quotes connection settings.
	dsn := pgtest.Shared(t).NewDatabase(t)
	s, err := Config{Backend: "postgres", DSN: dsn}.settings()
	if err != nil {
		t.Fatal(err)
	}
	pw := pgtest.Shared(t).Password()
	db := &DB{s: s, backend: BackendPostgres}
	if msg := db.wrap("op", &testErr{"dial " + dsn + " failed, password " + pw}).Error(); strings.Contains(msg, pw) {
		t.Fatalf("wrap kept the password: %q", msg)
	}
}

type testErr struct{ s string }

func (e *testErr) Error() string { return e.s }
