package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// TestAPIError: the one mapping of errors to what a caller is told.
// The database's own text (host, user, database) never reaches the
// caller; every kind of error the handlers see has its status.
func TestAPIError(t *testing.T) {
	db := errors.New("state postgres: get operator alice: failed to connect to `host=db.internal.example user=vault_admin database=agentvault`")
	for _, tc := range []struct {
		name   string
		err    error
		status int
		text   string // the whole text, or a fragment with "~" before it
		logged bool
	}{
		{"a state error", &stateError{db}, 503, stateUnavailableText, true},
		{"a wrapped state error", fmt.Errorf("recording the revocation: %w", &stateError{db}), 503, stateUnavailableText, true},
		{"fromState's mark", fromState(db), 503, stateUnavailableText, true},
		{"a handler's", fail(http.StatusNotFound, "no agent named x"), 404, "no agent named x", false},
		{"a handler's 503", fail(http.StatusServiceUnavailable, "agent x updated, but ..."), 503, "agent x updated, but ...", true},
		{"identity's 403", &identity.ForbiddenError{Reason: "role viewer may not manage agents: needs admin"}, 403, "role viewer may not manage agents: needs admin", false},
		{"identity's 401", identity.ErrNoToken, 401, identity.ErrNoToken.Error(), false},
		{"identity's 429", &identity.RateLimitError{Subject: identity.LimitName, RetryAfter: time.Minute}, 429, "too many failed logins for this name; retry in 60s", false},
		{"identity's 400", &identity.InvalidError{Reason: "unknown role"}, 400, "unknown role", false},
		{"identity's 500", identity.ErrNotIP, 500, identity.ErrNotIP.Error(), true},
		{"a conflict, from the state package", fromState(fmt.Errorf("state sqlite: insert agent x: %w", state.ErrConflict)), 409, "~another change to it came first", false},
		{"a store's conflict", fmt.Errorf("put: %w", storebackends.ErrConflict), 409, "~another change to it came first", false},
		{"an agent gone", fromState(fmt.Errorf("state sqlite: insert: %w", state.ErrAgentGone)), 403, "the agent was deleted", false},
		{"an unknown session", sessions.ErrUnknown, 404, "no such session", false},
		{"a session without a lease", sessions.ErrNotLeased, 409, "~has no lease", false},
		{"an ended session", sessions.ErrEnded, 410, "~has ended", false},
		{"bad store input", fmt.Errorf("%w: name too long", storebackends.ErrInvalidInput), 400, "invalid input: name too long", false},
		{"a missing credential", storebackends.ErrNotFound, 404, "credential not found", false},
		{"a shadowed credential", fmt.Errorf("%w: X comes from store vault", credentials.ErrShadowed), 409, "~comes from store vault", false},
		{"no writable store", credentials.ErrNoWritableStore, 409, credentials.ErrNoWritableStore.Error(), false},
		{"a deadline", fmt.Errorf("waiting: %w", context.DeadlineExceeded), 503, "~took too long", true},
		{"anything else", errors.New("user=vault_admin secret detail"), 500, internalErrorText, true},
		{"nil", nil, 500, internalErrorText, true},
	} {
		status, text, logged := apiError(tc.err)
		want := tc.text
		ok := text == want
		if frag, isFrag := strings.CutPrefix(want, "~"); isFrag {
			ok = strings.Contains(text, frag)
		}
		if status != tc.status || !ok || logged != tc.logged {
			t.Errorf("%s: %d %q logged=%v, want %d %q logged=%v", tc.name, status, text, logged, tc.status, tc.text, tc.logged)
		}
		if strings.Contains(text, "vault_admin") || strings.Contains(text, "db.internal") {
			t.Errorf("%s: the database's text reaches the caller: %q", tc.name, text)
		}
	}
}
