package caddymodule

import (
	"slices"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// A session's answers (POST /api/v1/sessions, GET /api/v1/session) name
// every credential the broker knows, in the session's scope or not, so
// that av-launch can keep inherited variables of those names from the
// agent even though an agent token may not list credentials. Names
// only: no value ever appears.
func TestSessionAnswersNameEveryCredential(t *testing.T) {
	pl, _ := identityPipeline(t)
	const otherValue = "value-of-a-credential-outside-the-scope"
	pl.must(t, pl.admin(), "PUT", "/api/v1/credentials/OTHER_TOKEN", map[string]string{"value": otherValue}, 201, nil)
	agent := pl.createAgent(t, "stripe-only", []string{"stripe"}, "1h")
	// The agent may not list credentials: the names come with its session.
	wantAPIError(t, "agent lists credentials", pl.call(t, asToken(agent.Token), "GET", "/api/v1/credentials", nil), 403)

	want := []string{"GITHUB_TOKEN", "OTHER_TOKEN"}
	minted := pl.call(t, asToken(agent.Token), "POST", "/api/v1/sessions", apiwire.SessionRequest{TTL: "10m", Lease: true})
	var sess apiwire.Session
	pl.must(t, asToken(agent.Token), "POST", "/api/v1/sessions", apiwire.SessionRequest{TTL: "10m"}, 201, &sess)
	if !slices.Equal(sess.CredentialNames, want) {
		t.Errorf("POST /api/v1/sessions credential_names = %q, want %q", sess.CredentialNames, want)
	}
	if len(sess.Placeholders) != 0 {
		t.Errorf("a stripe-only session has placeholders %v", sess.Placeholders)
	}
	var own apiwire.Session
	own1 := pl.must(t, asToken(sess.Token), "GET", "/api/v1/session", nil, 200, &own)
	if !slices.Equal(own.CredentialNames, want) {
		t.Errorf("GET /api/v1/session credential_names = %q, want %q", own.CredentialNames, want)
	}
	for _, body := range []string{minted.body, own1.body} {
		if !strings.Contains(body, `"credential_names"`) {
			t.Errorf("answer without credential_names: %s", body)
		}
		if strings.Contains(body, otherValue) || strings.Contains(body, bearerSecret) {
			t.Errorf("a session answer holds a credential value: %s", body)
		}
	}
}
