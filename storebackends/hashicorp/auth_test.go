package hashicorp

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

const userToken = "hvs.USER-TOKEN-" + leakMarker

func TestCheckLoginToken(t *testing.T) {
	fv := newFakeVault(t, false)
	h := newHarness(t, fv, nil)
	if err := h.checkLogin(t); err != nil {
		t.Fatalf("CheckLogin: %v", err)
	}
	reqs := h.fv.takeRequests()
	if len(reqs) != 1 || reqs[0].key != "GET /v1/auth/token/lookup-self" || reqs[0].token != rootToken {
		t.Errorf("requests = %+v, want one lookup-self with the token", reqs)
	}
}

func TestCheckLoginRejectedToken(t *testing.T) {
	fv := newFakeVault(t, false)
	h := newHarness(t, fv, func(c *Config) { c.Token = "hvs.WRONG-" + leakMarker })
	err := h.checkLogin(t)
	if err == nil || err.Error() != "vault token rejected: permission denied (HTTP 403)" {
		t.Errorf("CheckLogin = %v", err)
	}
	wantErr(t, h.fetchErr(t), "vault token rejected")
}

func TestTokenRenewedWhenAThirdIsLeft(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.setToken(userToken, &fakeToken{ttl: 3600, creationTTL: 3600, renewable: true})
	h := newHarness(t, fv, func(c *Config) { c.Token = userToken })

	if err := h.checkLogin(t); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(2000 * time.Second) // 1600s of 3600s left: fine
	h.fetch(t)
	if got := fv.token(userToken).renewals; len(got) != 0 {
		t.Fatalf("renewed too early: %v", got)
	}
	h.clock.Advance(500 * time.Second) // 1100s left, under a third
	h.fetch(t)
	if got := fv.token(userToken).renewals; !slices.Equal(got, []int{3600}) {
		t.Fatalf("renewals = %v, want [3600]", got)
	}
	h.clock.Advance(1000 * time.Second) // 2600s left after the renewal
	h.fetch(t)
	if got := fv.token(userToken).renewals; len(got) != 1 {
		t.Errorf("renewals = %v, want just one", got)
	}
	if !slices.Contains(h.messages(zapcore.InfoLevel), "vault token renewed") {
		t.Errorf("no info log for the renewal: %q", h.messages(zapcore.InfoLevel))
	}
	if w := h.messages(zapcore.WarnLevel); len(w) != 0 {
		t.Errorf("unexpected warnings: %q", w)
	}
}

func TestPeriodicTokenRenewedByPeriod(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.setToken(userToken, &fakeToken{ttl: 100, creationTTL: 0, period: 600, renewable: true})
	h := newHarness(t, fv, func(c *Config) { c.Token = userToken })
	h.fetch(t)
	if got := fv.token(userToken).renewals; !slices.Equal(got, []int{600}) {
		t.Errorf("renewals = %v, want [600]", got)
	}
}

func TestTokenRenewalCappedByMaxTTL(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.setToken(userToken, &fakeToken{ttl: 1000, creationTTL: 3600, renewable: true, maxTTL: 1800})
	h := newHarness(t, fv, func(c *Config) { c.Token = userToken })

	h.fetch(t) // renews, gets 1800s of the 3600s asked for
	h.clock.Advance(time.Hour / 6)
	h.fetch(t) // does not renew again
	if got := fv.token(userToken).renewals; !slices.Equal(got, []int{3600}) {
		t.Errorf("renewals = %v, want [3600]", got)
	}
	warns := h.messages(zapcore.WarnLevel)
	want := []string{
		`vault token for store "prod" expires in 30m0s; it has reached its maximum TTL: replace it`,
		`vault token for store "prod" expires in 20m0s; it has reached its maximum TTL: replace it`,
	}
	if !slices.Equal(warns, want) {
		t.Errorf("warnings:\n got %q\nwant %q", warns, want)
	}
}

func TestNonRenewableTokenWarnsEveryFetch(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.setToken(userToken, &fakeToken{ttl: 3 * 3600, creationTTL: 3 * 3600})
	h := newHarness(t, fv, func(c *Config) { c.Token = userToken })

	h.fetch(t)
	h.clock.Advance(time.Hour)
	h.fetch(t)
	h.clock.Advance(3 * time.Hour)
	h.fetch(t)
	want := []string{
		`vault token for store "prod" expires in 3h0m0s; it is not renewable: replace it`,
		`vault token for store "prod" expires in 2h0m0s; it is not renewable: replace it`,
		`vault token for store "prod" has expired; it is not renewable: replace it`,
	}
	if got := h.messages(zapcore.WarnLevel); !slices.Equal(got, want) {
		t.Errorf("warnings:\n got %q\nwant %q", got, want)
	}
	if got := fv.token(userToken).renewals; len(got) != 0 {
		t.Errorf("tried to renew a non-renewable token: %v", got)
	}
}

func TestNonRenewableTokenWarnsFromADayOrAThirdBefore(t *testing.T) {
	tests := []struct {
		name        string
		ttl         time.Duration
		quietUntil  time.Duration // elapsed time with no warning yet
		warnsBefore time.Duration // warning once this is left
	}{
		{"short token: 24h window", 72 * time.Hour, 47 * time.Hour, 24 * time.Hour},
		{"long token: a third", 90 * 24 * time.Hour, 59 * 24 * time.Hour, 30 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fv := newFakeVault(t, false)
			secs := int(tt.ttl / time.Second)
			fv.setToken(userToken, &fakeToken{ttl: secs, creationTTL: secs})
			h := newHarness(t, fv, func(c *Config) { c.Token = userToken })
			h.fetch(t)
			h.clock.Advance(tt.quietUntil)
			h.fetch(t)
			if w := h.messages(zapcore.WarnLevel); len(w) != 0 {
				t.Fatalf("warned too early: %q", w)
			}
			h.clock.Advance(tt.ttl - tt.quietUntil - tt.warnsBefore + time.Minute)
			h.fetch(t)
			if w := h.messages(zapcore.WarnLevel); len(w) != 1 || !strings.Contains(w[0], "not renewable: replace it") {
				t.Errorf("warnings = %q, want one", w)
			}
		})
	}
}

func TestNonExpiringTokenNeedsNothing(t *testing.T) {
	fv := newFakeVault(t, false)
	h := newHarness(t, fv, nil) // rootToken: ttl 0, not renewable
	h.fetch(t)
	h.clock.Advance(10000 * time.Hour)
	h.fetch(t)
	if w := h.messages(zapcore.WarnLevel); len(w) != 0 {
		t.Errorf("warnings = %q", w)
	}
	for _, r := range fv.takeRequests() {
		if strings.Contains(r.key, "renew") {
			t.Errorf("unexpected %s", r.key)
		}
	}
}

func TestTokenRenewalForbidden(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.setToken(userToken, &fakeToken{ttl: 100, creationTTL: 3600, renewable: true})
	fv.inject("PUT /v1/auth/token/renew-self", fakeReply{status: 403, body: `{"errors":["permission denied"]}`})
	h := newHarness(t, fv, func(c *Config) { c.Token = userToken })
	err := h.fetchErr(t)
	if err.Error() != "renewing the vault token: permission denied (HTTP 403)" {
		t.Errorf("error = %q", err)
	}
}

func TestTokenRevokedWhileInUse(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.put("secret/app", `{"TOKEN":"t-`+leakMarker+`"}`, 1)
	h := newHarness(t, fv, nil)
	h.fetch(t)
	fv.revoke(rootToken)
	err := h.fetchErr(t)
	if err.Error() != "vault token rejected: permission denied (HTTP 403)" {
		t.Errorf("error = %q", err)
	}
}

func TestAppRoleLogin(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.put("secret/app", `{"TOKEN":"t-`+leakMarker+`"}`, 1)
	h := newHarness(t, fv, func(c *Config) { useAppRole(c); c.AuthMount = "/agents-approle/" })

	if err := h.checkLogin(t); err != nil {
		t.Fatalf("CheckLogin: %v", err)
	}
	h.fetch(t)
	reqs := fv.takeRequests()
	if reqs[0].key != "PUT /v1/auth/agents-approle/login" {
		t.Errorf("first request = %s, want the login", reqs[0].key)
	}
	for _, r := range reqs[1:] {
		if r.token != "hvs.APPROLE-1-"+leakMarker {
			t.Errorf("%s used token %q, want the AppRole token", r.key, r.token)
		}
	}
	if fv.loginCount() != 1 {
		t.Errorf("logins = %d, want 1", fv.loginCount())
	}
	if !slices.Contains(h.messages(zapcore.InfoLevel), "vault approle login") {
		t.Errorf("no info log for the login")
	}
}

func TestAppRoleLogsInAgainBeforeExpiry(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.loginTTL = 60
	h := newHarness(t, fv, useAppRole)

	h.fetch(t)
	h.clock.Advance(30 * time.Second)
	h.fetch(t)
	if n := fv.loginCount(); n != 1 {
		t.Fatalf("logins = %d after half the TTL, want 1", n)
	}
	h.clock.Advance(15 * time.Second) // 15s of 60s left
	fv.takeRequests()
	h.fetch(t)
	if n := fv.loginCount(); n != 2 {
		t.Fatalf("logins = %d, want 2", n)
	}
	for _, r := range fv.takeRequests()[1:] {
		if r.token != "hvs.APPROLE-2-"+leakMarker {
			t.Errorf("%s used %q, want the new token", r.key, r.token)
		}
	}
}

func TestAppRoleForbiddenReadLogsInAgainOnce(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.put("secret/app", `{"TOKEN":"t-`+leakMarker+`"}`, 1)
	h := newHarness(t, fv, useAppRole)
	h.fetch(t)

	// The token is revoked behind the fetcher's back: one re-login fixes it.
	fv.revoke("hvs.APPROLE-1-" + leakMarker)
	if got := names(h.fetch(t)); !slices.Equal(got, []string{"TOKEN"}) {
		t.Errorf("names = %q", got)
	}
	if n := fv.loginCount(); n != 2 {
		t.Errorf("logins = %d, want 2", n)
	}

	// A policy that denies the path: one re-login, one retry, then the error.
	denied := fakeReply{status: 403, body: `{"errors":["1 error occurred:\n\t* permission denied\n\n"]}`}
	fv.inject("GET /v1/secret/data/app", denied, denied, denied)
	fv.takeRequests()
	wantErr(t, h.fetchErr(t), "reading secret/data/app: permission denied (HTTP 403)")
	if n := fv.loginCount(); n != 3 {
		t.Errorf("logins = %d, want 3", n)
	}
	reads := 0
	for _, r := range fv.takeRequests() {
		if r.key == "GET /v1/secret/data/app" {
			reads++
		}
	}
	if reads != 2 {
		t.Errorf("read the secret %d times, want 2", reads)
	}
}

func TestAppRoleBadCredentials(t *testing.T) {
	fv := newFakeVault(t, false)
	h := newHarness(t, fv, func(c *Config) { useAppRole(c); c.SecretID = "SECRET-ID-wrong-" + leakMarker })
	err := h.checkLogin(t)
	if err == nil || err.Error() != "approle login failed: invalid role or secret ID (HTTP 400)" {
		t.Errorf("CheckLogin = %v", err)
	}
	wantErr(t, h.fetchErr(t), "approle login failed")
}

func TestAppRoleLoginWithoutToken(t *testing.T) {
	fv := newFakeVault(t, false)
	fv.inject("PUT /v1/auth/approle/login", fakeReply{status: 200, body: `{"auth":null,"warnings":["something odd"]}`})
	h := newHarness(t, fv, useAppRole)
	wantErr(t, h.checkLogin(t), "approle login failed: Vault returned no token")
}
