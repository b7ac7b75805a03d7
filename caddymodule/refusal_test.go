package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
)

// errorResponse is the one mapping from a pipeline error to what the
// agent sees; anything it does not know is refused as internal.
func TestErrorResponse(t *testing.T) {
	tgt := target{host: "api.example.com", port: 443, tls: true}
	denied := &egress.RefusedError{Host: "db", Addr: netip.MustParseAddr("10.0.0.1"), Reason: "a private address"}
	for _, tc := range []struct {
		name   string
		err    error
		status int
		reason string
	}{
		{"refusal", refused(http.StatusForbidden, "credential %s is not bound", "K"), 403, "credential K is not bound"},
		{"wrapped refusal", fmt.Errorf("x: %w", refused(421, "misdirected")), 421, "misdirected"},
		{"unknown credential", &credentials.UnavailableError{Name: "K"}, 503, "credential K is not available"},
		{"stale store", &credentials.UnavailableError{Name: "K", Err: errors.New(`store "vault" is stale`)}, 503, `credential K cannot be used: store "vault" is stale`},
		{"unusable value", &services.UnusableCredentialError{Name: "K", Reason: "its value is empty"}, 500, "credential K cannot be injected"},
		{"egress", denied, 403, "10.0.0.1"},
		{"egress via upstream", &upstreamFailure{target: tgt, err: denied}, 403, "10.0.0.1"},
		{"client gone", &upstreamFailure{target: tgt, err: context.Canceled}, statusClientClosed, ""},
		{"upstream", &upstreamFailure{target: tgt, err: errors.New("connection reset")}, 502, "upstream https://api.example.com:443 failed: connection reset"},
		{"unknown", errors.New("something odd"), 500, "internal error"},
		{"state down", stateHealthy(&dbHealth{db: downHealth{errors.New("state postgres: ping: failed to connect to `user=pgtest database=test`: 127.0.0.1:41451")}, backend: "postgres", maxStale: time.Minute, now: time.Now}), 503, "the state database is unreachable, so agent-vault refuses requests until it is back: state postgres: database unreachable for more than 1m0s"},
		{"state down, any error", stateHealthy(downHealth{errors.New("user=pgtest")}), 503, "the state database is unreachable, so agent-vault refuses requests until it is back: state database unreachable"},
		{"state error", fmt.Errorf("saving: %w", &stateError{errors.New("state sqlite: disk I/O error")}), 503, "state database error; the broker's log has the details"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, reason := errorResponse(tc.err)
			if status != tc.status || !strings.Contains(reason, tc.reason) {
				t.Errorf("errorResponse = %d %q, want %d containing %q", status, reason, tc.status, tc.reason)
			}
		})
	}
}

// fakeHealth is a state database whose health the test sets.
type fakeHealth struct{ err error }

func (f *fakeHealth) Healthy() error { return f.err }

func TestStateHealthy(t *testing.T) {
	if err := stateHealthy(nil); err != nil {
		t.Fatalf("no database: %v", err)
	}
	h := &fakeHealth{}
	if err := stateHealthy(h); err != nil {
		t.Fatalf("healthy database: %v", err)
	}
	h.err = errors.New("state sqlite: no contact for 2m")
	var down *stateUnavailable
	if err := stateHealthy(h); !errors.As(err, &down) {
		t.Fatalf("unhealthy database: %v", err)
	}
}

// downHealth is a state health that fails with err.
type downHealth struct{ err error }

func (h downHealth) Healthy() error { return h.err }
