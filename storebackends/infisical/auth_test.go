package infisical

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/agentvault/caddy-agent-vault/storebackends/infisical/infisicaltest"
)

const (
	login = infisicaltest.Login
	renew = infisicaltest.Renew
	list  = infisicaltest.List
)

func TestUniversalLoginThenList(t *testing.T) {
	h := newHarness(t, nil, nil)
	if err := h.checkLogin(t); err != nil {
		t.Fatal(err)
	}
	req := h.wantEndpoints(t, login)[0]
	if req.Authorization != "" || !strings.HasPrefix(req.ContentType, "application/json") ||
		req.Body["clientId"] != clientID || req.Body["clientSecret"] != clientSecret {
		t.Fatalf("login request: %+v", req)
	}

	b := h.fetch(t)
	if got := values(b); len(got) != 1 || got["GITHUB_TOKEN"] != "ghp_LEAKMARKER_1" {
		t.Fatalf("values = %v", got)
	}
	req = h.wantEndpoints(t, list)[0] // the token from CheckLogin is reused
	if req.Authorization != "Bearer ua.stub-access-token-1" {
		t.Errorf("list sent Authorization %q", req.Authorization)
	}
	q := req.Query
	for k, want := range map[string]string{
		"workspaceId": project, "environment": "prod", "secretPath": "/agents",
		"recursive": "false", "include_imports": "true", "expandSecretReferences": "true",
	} {
		if q.Get(k) != want {
			t.Errorf("query %s = %q, want %q", k, q.Get(k), want)
		}
	}
	if got := h.messages(zapcore.InfoLevel); len(got) != 1 || got[0] != "infisical universal auth login" {
		t.Errorf("info logs = %q", got)
	}
}

func TestFetchLogsInWithoutCheckLogin(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.fetch(t)
	h.wantEndpoints(t, login, list)
}

func TestBadClientSecret(t *testing.T) {
	h := newHarness(t, nil, func(c *Config) { c.ClientSecret = "cs-wrong-LEAKMARKER" })
	err := h.checkLogin(t)
	wantErr(t, err, "infisical universal auth login failed: Invalid credentials", "check client_id and client_secret", "(HTTP 401)")
	err = h.fetchErr(t)
	wantErr(t, err, "Invalid credentials; check client_id and client_secret (HTTP 401)")
	h.wantEndpoints(t, login, login) // no list without a token
}

// The token is renewed once less than a third of its lifetime is
// left, and kept otherwise.
func TestRenewal(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.stub.SetTTL(30*time.Minute, 24*time.Hour)
	h.fetch(t)
	h.wantEndpoints(t, login, list)

	h.clock.Advance(19 * time.Minute) // 11m left
	h.fetch(t)
	h.wantEndpoints(t, list)

	h.clock.Advance(2 * time.Minute) // 9m left
	h.fetch(t)
	reqs := h.wantEndpoints(t, renew, list)
	if reqs[0].Body["accessToken"] != "ua.stub-access-token-1" || reqs[0].Authorization != "" {
		t.Errorf("renew request: %+v", reqs[0])
	}
	if reqs[1].Authorization != "Bearer ua.stub-access-token-1" {
		t.Errorf("list after renewal sent %q", reqs[1].Authorization)
	}

	// The renewal granted a full 30m again.
	h.clock.Advance(19 * time.Minute)
	h.fetch(t)
	h.wantEndpoints(t, list)
	h.clock.Advance(2 * time.Minute)
	h.fetch(t)
	h.wantEndpoints(t, renew, list)
}

// Near the max TTL a renewal could not grant a full lifetime: the
// fetcher logs in again instead.
func TestLoginAgainNearMaxTTL(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.stub.SetTTL(30*time.Minute, 40*time.Minute)
	h.fetch(t)
	h.wantEndpoints(t, login, list)

	h.clock.Advance(21 * time.Minute) // 9m left, 19m to the max TTL
	h.fetch(t)
	reqs := h.wantEndpoints(t, login, list)
	if reqs[1].Authorization != "Bearer ua.stub-access-token-2" {
		t.Errorf("list after re-login sent %q", reqs[1].Authorization)
	}
	if !slices.Contains(h.messages(zapcore.InfoLevel), "infisical access token is near its max TTL; logging in again") {
		t.Errorf("info logs = %q", h.messages(zapcore.InfoLevel))
	}
}

func TestRenewFailureLogsInAgain(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.stub.SetTTL(30*time.Minute, 24*time.Hour)
	h.fetch(t)
	h.wantEndpoints(t, login, list)

	h.stub.Override(renew, infisicaltest.Reply{Status: 500, Body: `{"statusCode":500,"message":"Something went wrong","error":"InternalServerError"}`})
	h.clock.Advance(21 * time.Minute)
	h.fetch(t)
	h.wantEndpoints(t, renew, login, list)
	if !slices.Contains(h.messages(zapcore.InfoLevel), "renewing the infisical access token failed; logging in again") {
		t.Errorf("info logs = %q", h.messages(zapcore.InfoLevel))
	}
}

// A token that expired between polls (the stub refuses to renew it)
// is replaced by a new login.
func TestExpiredBetweenPolls(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.stub.SetTTL(30*time.Minute, 24*time.Hour)
	h.fetch(t)
	h.stub.Requests()
	h.clock.Advance(31 * time.Minute)
	h.fetch(t)
	h.wantEndpoints(t, renew, login, list)
}

// A 401 to the list (token revoked or expired early) triggers one new
// login and one retry.
func TestUnauthorizedListLogsInAgainOnce(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.fetch(t)
	h.stub.Requests()

	h.stub.RevokeTokens()
	b := h.fetch(t)
	if values(b)["GITHUB_TOKEN"] != "ghp_LEAKMARKER_1" {
		t.Fatalf("values after re-login = %v", values(b))
	}
	reqs := h.wantEndpoints(t, list, login, list)
	if reqs[2].Authorization != "Bearer ua.stub-access-token-2" {
		t.Errorf("retry sent %q", reqs[2].Authorization)
	}

	// A 401 that persists is reported after one retry, not looped on.
	h.stub.Override(list, infisicaltest.Reply{Status: 401, Body: `{"statusCode":401,"message":"Token missing, invalid or expired","error":"UnauthorizedError"}`})
	err := h.fetchErr(t)
	wantErr(t, err, "listing secrets in prod:/agents: Token missing, invalid or expired (HTTP 401)")
	h.wantEndpoints(t, list, login, list)
}

func TestStaticToken(t *testing.T) {
	h := newHarness(t, nil, func(c *Config) { useToken(c); c.Recursive = true })
	h.stub.AddStaticToken(staticToken)
	if err := h.checkLogin(t); err != nil {
		t.Fatal(err)
	}
	req := h.wantEndpoints(t, list)[0]
	if req.Authorization != "Bearer "+staticToken || req.Query.Get("recursive") != "false" || req.Query.Get("include_imports") != "false" {
		t.Errorf("check request: %+v", req)
	}
	h.clock.Advance(1000 * time.Hour) // a static token is never renewed
	h.fetch(t)
	req = h.wantEndpoints(t, list)[0]
	if req.Authorization != "Bearer "+staticToken || req.Query.Get("recursive") != "true" || req.Query.Get("include_imports") != "true" {
		t.Errorf("fetch request: %+v", req)
	}
}

func TestBadStaticToken(t *testing.T) {
	h := newHarness(t, nil, useToken) // the stub does not know staticToken
	wantErr(t, h.checkLogin(t), "infisical token rejected while listing secrets in prod:/agents", "(HTTP 401)")
	wantErr(t, h.fetchErr(t), "infisical token rejected")
	h.wantEndpoints(t, list, list) // no login attempt, no retry
}

func TestClosed(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.f.Close()
	wantErr(t, h.checkLogin(t), "closed")
	wantErr(t, h.fetchErr(t), "closed")
	h.wantEndpoints(t)
}

func TestMalformedTokenAnswers(t *testing.T) {
	for name, body := range map[string]string{
		"no token":         `{"expiresIn":3600,"accessTokenMaxTTL":0,"tokenType":"Bearer"}`,
		"token with space": `{"accessToken":"a b","expiresIn":3600,"tokenType":"Bearer"}`,
		"other type":       `{"accessToken":"abc","expiresIn":3600,"tokenType":"MAC"}`,
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, nil, nil)
			h.stub.Override(login, infisicaltest.Reply{Status: 200, Body: body})
			wantErr(t, h.checkLogin(t), "infisical universal auth login failed: Infisical returned")
		})
	}
}

func TestSeconds(t *testing.T) {
	for in, want := range map[float64]time.Duration{
		-5: 0, 0: 0, 0.5: 0, 1: time.Second, 7200: 2 * time.Hour, 1e300: time.Duration(maxSeconds) * time.Second,
	} {
		if got := seconds(in); got != want {
			t.Errorf("seconds(%v) = %v, want %v", in, got, want)
		}
	}
}
