package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
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
		code   string
	}{
		{"placeholder", refused(http.StatusForbidden, "x").as(activity.CodePlaceholder), 403, "x", "placeholder"},
		{"uncovered", uncoveredHost(tgt, "x", "", &sessions.Session{Agent: "a"}), 403, "no service", "uncovered_host"},
		{"407", &refusal{status: 407, reason: "auth"}, 407, "auth", "auth"},
		{"505", &refusal{status: 505, reason: "v"}, 505, "v", "bad_request"},
		{"refusal", refused(http.StatusForbidden, "credential %s is not bound", "K"), 403, "credential K is not bound", "forbidden"},
		{"wrapped refusal", fmt.Errorf("x: %w", refused(421, "misdirected")), 421, "misdirected", "misdirected"},
		{"unknown credential", &credentials.UnavailableError{Name: "K"}, 503, "credential K is not available", "internal"},
		{"token source", &credentials.UnavailableError{Name: "K", TokenSource: true, Err: errors.New("token endpoint https://login.example/t: HTTP 400 invalid_grant; input RT")}, 503, "credential K cannot be used: its token could not be refreshed", "store_stale"},
		{"stale store", &credentials.UnavailableError{Name: "K", Err: errors.New(`store "vault" is stale`)}, 503, `credential K cannot be used: store "vault" is stale`, "store_stale"},
		{"unusable value", &services.UnusableCredentialError{Name: "K", Reason: "its value is empty"}, 500, "credential K cannot be injected", "internal"},
		{"egress", denied, 403, "10.0.0.1", "egress_policy"},
		{"egress via upstream", &upstreamFailure{target: tgt, err: denied}, 403, "10.0.0.1", "egress_policy"},
		{"client gone", &upstreamFailure{target: tgt, err: context.Canceled}, statusClientClosed, "", "client_closed"},
		{"upstream", &upstreamFailure{target: tgt, err: errors.New("connection reset")}, 502, "upstream https://api.example.com:443 failed: connection reset", "upstream"},
		{"unknown", errors.New("something odd"), 500, "internal error", "internal"},
		{"state down", stateHealthy(&dbHealth{db: downHealth{errors.New("state postgres: ping: failed to connect to `user=pgtest database=test`: 127.0.0.1:41451")}, backend: "postgres", maxStale: time.Minute, now: time.Now}), 503, "the state database is unreachable, so agent-vault refuses requests until it is back: state postgres: database unreachable for more than 1m0s", "state_unavailable"},
		{"state down, any error", stateHealthy(downHealth{errors.New("user=pgtest")}), 503, "the state database is unreachable, so agent-vault refuses requests until it is back: state database unreachable", "state_unavailable"},
		{"state error", fmt.Errorf("saving: %w", &stateError{errors.New("state sqlite: disk I/O error")}), 503, "state database error; the broker's log has the details", "state_unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, reason, code := errorResponse(tc.err)
			if status != tc.status || !strings.Contains(reason, tc.reason) || code != tc.code {
				t.Errorf("errorResponse = %d %q %q, want %d containing %q, code %q", status, reason, code, tc.status, tc.reason, tc.code)
			}
			if !slices.Contains(activity.Codes, code) {
				t.Errorf("code %q is not one of activity.Codes", code)
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
