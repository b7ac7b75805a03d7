package e2etest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// strictAPI calls the management API and decodes its answer into out,
// refusing any field the apiwire type does not define: the server must
// answer in exactly the shapes clients are given.
func (s *server) strictAPI(method, path string, body any, want int, out any) json.RawMessage {
	s.t.Helper()
	var raw json.RawMessage
	if got := s.api(method, path, body, &raw); got != want {
		s.t.Fatalf("%s %s = %d %s, want %d", method, path, got, raw, want)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		s.t.Fatalf("%s %s: answer %s does not decode as %T: %v", method, path, raw, out, err)
	}
	return raw
}

// Every answer of the real server decodes strictly into its apiwire type,
// and av-launch tells "all services" from an empty --services.
func TestAPIWireShapes(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})

	resp, err := directClient.Get("http://" + s.apiAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health apiwire.Health
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	err = dec.Decode(&health)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || health != (apiwire.Health{Status: apiwire.HealthOK}) {
		t.Fatalf("healthz = %d %+v, %v", resp.StatusCode, health, err)
	}

	var cred apiwire.Credential
	secret := githubSecret
	s.strictAPI("PUT", "/api/v1/credentials/GITHUB_TOKEN", apiwire.CredentialPutRequest{Value: &secret}, http.StatusCreated, &cred)
	if cred.Name != "GITHUB_TOKEN" || cred.Store != "builtin" || cred.UpdatedAt.IsZero() {
		t.Fatalf("PUT credential = %+v", cred)
	}
	var creds apiwire.CredentialList
	s.strictAPI("GET", "/api/v1/credentials", nil, http.StatusOK, &creds)
	if len(creds.Credentials) != 1 || creds.Credentials[0].Name != "GITHUB_TOKEN" {
		t.Fatalf("credentials = %+v", creds)
	}

	var apiErr apiwire.Error
	s.strictAPI("PUT", "/api/v1/services/github", map[string]any{"host": up.hostPort()}, http.StatusBadRequest, &apiErr)
	if apiErr.Error == "" {
		t.Fatal("PUT service without auth: empty error")
	}
	// A service whose credential is held: no warnings key at all.
	var put apiwire.ServicePutResponse
	github := map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}}
	raw := s.strictAPI("PUT", "/api/v1/services/github", github, http.StatusOK, &put)
	if put.Name != "github" || put.Auth.Token != "GITHUB_TOKEN" || strings.Contains(string(raw), "warnings") {
		t.Fatalf("PUT service = %s", raw)
	}
	// One whose credential no store holds: stored, with a warning.
	other := map[string]any{"host": "api.example.com", "auth": map[string]any{"type": "api-key", "key": "MISSING_KEY"}}
	put = apiwire.ServicePutResponse{}
	s.strictAPI("PUT", "/api/v1/services/other", other, http.StatusOK, &put)
	if put.Name != "other" || len(put.Warnings) != 1 || !strings.Contains(put.Warnings[0], "MISSING_KEY") {
		t.Fatalf("PUT service with a missing credential = %+v", put)
	}
	var svcs apiwire.ServiceList
	s.strictAPI("GET", "/api/v1/services", nil, http.StatusOK, &svcs)
	if len(svcs.Services) != 2 {
		t.Fatalf("services = %+v", svcs)
	}

	var stores apiwire.StoreList
	s.strictAPI("GET", "/api/v1/stores", nil, http.StatusOK, &stores)
	if len(stores.Stores) != 1 {
		t.Fatalf("stores = %+v", stores)
	}
	if b := stores.Stores[0]; b.Store != "builtin" || b.Status != "ok" || b.Credentials != 1 || b.Writable == nil || !*b.Writable || b.SyncStatus != nil {
		t.Fatalf("built-in store = %+v", b)
	}

	var sess apiwire.Session
	s.strictAPI("POST", "/api/v1/sessions", apiwire.SessionRequest{TTL: "10m"}, http.StatusCreated, &sess)
	if !slices.Equal(sess.Services, []string{"github", "other"}) || sess.Placeholders["GITHUB_TOKEN"] == "" || sess.ExpiresAt.IsZero() {
		t.Fatalf("session for all services = %+v", sess)
	}
	s.strictAPI("POST", "/api/v1/sessions", apiwire.SessionRequest{Services: []string{}, TTL: "10m"}, http.StatusBadRequest, &apiErr)
	mustContain(t, "empty services error", apiErr.Error, `"services" is empty`)
	var list apiwire.SessionList
	s.strictAPI("GET", "/api/v1/sessions", nil, http.StatusOK, &list)
	if len(list.Sessions) != 1 || list.Sessions[0].ID != sess.ID || list.Sessions[0].Status != apiwire.SessionActive {
		t.Fatalf("sessions = %+v", list)
	}

	// av-launch: an empty --services fails before any session is made;
	// none at all gets every service.
	_, errOut, code := s.launch([]string{"--services", " , "}, "sh", "-c", "exit 0")
	if code != 2 || !strings.Contains(errOut, "names no service") {
		t.Fatalf("av-launch --services ' , ': exit %d, stderr %q", code, errOut)
	}
	out, errOut, code := s.launch(nil, "sh", "-c", `printf %s "$GITHUB_TOKEN"`)
	if code != 0 || !regexp.MustCompile(`^agvph_[0-9a-f]{32}$`).MatchString(out) || out == sess.Placeholders["GITHUB_TOKEN"] {
		t.Fatalf("av-launch without --services: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	s.strictAPI("GET", "/api/v1/sessions", nil, http.StatusOK, &list)
	if len(list.Sessions) != 2 || list.Sessions[1].ID != sess.ID || list.Sessions[0].Status != apiwire.SessionRevoked ||
		!slices.Equal(list.Sessions[0].Services, []string{"github", "other"}) {
		t.Fatalf("sessions after av-launch = %+v, want the first plus av-launch's, revoked, for all services", list)
	}
}
