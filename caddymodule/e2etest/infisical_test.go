package e2etest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends/infisical/infisicaltest"
)

// The Infisical stub runs in this test process on 127.0.0.1 (plain
// http is allowed for loopback); the server binary talks to it as it
// would to Infisical.
const (
	infisicalProject      = "proj-e2e-6f1c"
	infisicalClientID     = "e2e-client-id"
	infisicalClientSecret = "e2e-client-secret-5e3b9a"
)

// infisicalStore is a store block reading prod:/agents of the stub,
// with the client secret from INFISICAL_TEST_CLIENT_SECRET.
func infisicalStore(siteURL string) string {
	return fmt.Sprintf(`		store infisical {
			site_url %s
			auth universal {
				client_id %s
				client_secret {env.INFISICAL_TEST_CLIENT_SECRET}
			}
			project_id %s
			environment prod
			secret_path /agents
			poll_interval 1s
			max_staleness 4s
			timeout 1s
		}`, siteURL, infisicalClientID, infisicalProject)
}

// Start-up fails clearly, naming the store, with a bad client secret
// or an unreachable Infisical, and never prints the secret.
func TestInfisicalStartupFailures(t *testing.T) {
	stub := infisicaltest.New(t, infisicalProject, infisicalClientID, infisicalClientSecret)
	stub.Put("prod", "/agents", infisicaltest.Secret{Key: "GITHUB_TOKEN", Value: "ghp_fromInfisical_v1", Version: 1})
	ca := newTestCA(t)
	const wrongSecret = "wrong-client-secret-0000"
	cases := map[string]struct {
		site, secret, want string
	}{
		"bad client secret": {stub.URL, wrongSecret, "Invalid credentials; check client_id and client_secret (HTTP 401)"},
		"unreachable":       {"http://127.0.0.1:1", infisicalClientSecret, "connection refused"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s := launchServer(t, ca, serverOpts{
				config:   vaultCaddyfile(t, infisicalStore(c.site)),
				extraEnv: []string{"INFISICAL_TEST_CLIENT_SECRET=" + c.secret},
			})
			select {
			case <-s.exited:
			case <-time.After(60 * time.Second):
				t.Fatal("server started")
			}
			logs := s.logs.String()
			mustContain(t, "start-up error", logs, `store \"infisical\": login failed`)
			mustContain(t, "start-up error", logs, c.want)
			mustNotContain(t, "start-up error", logs, c.secret)
		})
	}
}

// The Infisical journey: configure, see what synced (without values),
// use it, rotate, outage past max_staleness, recovery without restart.
// Tokens live 3s (at most 6s), so the store renews and logs in again
// along the way.
func TestInfisicalJourney(t *testing.T) {
	stub := infisicaltest.New(t, infisicalProject, infisicalClientID, infisicalClientSecret)
	stub.SetTTL(3*time.Second, 6*time.Second)
	stub.Put("prod", "/agents", infisicaltest.Secret{Key: "GITHUB_TOKEN", Value: "ghp_fromInfisical_v1", Version: 1})

	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{
		config:   vaultCaddyfile(t, infisicalStore(stub.URL)),
		extraEnv: []string{"INFISICAL_TEST_CLIENT_SECRET=" + infisicalClientSecret},
	})

	// What synced: name, store, version, source; never the value.
	c := s.credential(t, "GITHUB_TOKEN")
	if c == nil || c["store"] != "infisical" || c["version"] != "1" || c["source"] != "prod:/agents/GITHUB_TOKEN" || c["synced_at"] == nil {
		t.Fatalf("synced credential: %v", c)
	}
	if h := s.storeHealth(t, "infisical"); h["status"] != "ok" || h["credentials"] != float64(1) {
		t.Fatalf("store health: %v", h)
	}
	for _, path := range []string{"/api/v1/credentials", "/api/v1/stores"} {
		var raw json.RawMessage
		s.mustAPI("GET", path, nil, http.StatusOK, &raw)
		mustNotContain(t, path, string(raw), "ghp_fromInfisical")
	}

	// Use it: av-launch -- curl gets the Infisical value injected.
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	out, _, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+up.hostPort()+"/user")
	if code != 0 || up.last(t).Header.Get("Authorization") != "Bearer ghp_fromInfisical_v1" {
		t.Fatalf("use: %d %s", code, out)
	}

	// Rotate: the next poll brings version 2 to the proxy and the API.
	sess := s.newSession(t, nil, "10m")
	client := sess.agentClient(t)
	stub.Put("prod", "/agents", infisicaltest.Secret{Key: "GITHUB_TOKEN", Value: "ghp_fromInfisical_v2", Version: 2})
	took := eventually(t, 10*time.Second, "rotation reaches the upstream", func() bool {
		r, err := client.Get("https://" + up.hostPort() + "/user")
		if err != nil {
			return false
		}
		readBody(t, r)
		return up.last(t).Header.Get("Authorization") == "Bearer ghp_fromInfisical_v2"
	})
	t.Logf("rotation: stub write to first request carrying the new value: %s (poll 1s)", took.Round(time.Millisecond))
	if c := s.credential(t, "GITHUB_TOKEN"); c["version"] != "2" {
		t.Fatalf("API shows version %v after rotation", c["version"])
	}

	// Outage: Infisical answers 503. The last snapshot serves until
	// max_staleness (degraded), then requests get 503 (stale).
	stub.Override(infisicaltest.List, infisicaltest.Reply{Status: http.StatusServiceUnavailable,
		Body: `{"statusCode":503,"message":"Service unavailable","error":"ServiceUnavailable"}`})
	eventually(t, 10*time.Second, "store degraded", func() bool {
		return s.storeHealth(t, "infisical")["status"] == "degraded"
	})
	r, err := client.Get("https://" + up.hostPort() + "/user")
	if err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("within max_staleness: %v %v", r, err)
	}
	readBody(t, r)
	mustContain(t, "last_error", fmt.Sprint(s.storeHealth(t, "infisical")["last_error"]), "Service unavailable (HTTP 503)")
	eventually(t, 15*time.Second, "store stale", func() bool {
		return s.storeHealth(t, "infisical")["status"] == "stale"
	})
	hits := up.count()
	r, err = client.Get("https://" + up.hostPort() + "/user")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, r)
	if r.StatusCode != http.StatusServiceUnavailable || up.count() != hits {
		t.Fatalf("past max_staleness: %d %q (upstream hits %d -> %d)", r.StatusCode, body, hits, up.count())
	}
	mustContain(t, "503 body", body, "infisical")
	resp, err := directClient.Get("http://" + s.apiAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	if readBody(t, resp); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz while stale: %d", resp.StatusCode)
	}

	// Recovery without a restart.
	stub.Clear(infisicaltest.List)
	eventually(t, 20*time.Second, "recovery without restart", func() bool {
		return s.storeHealth(t, "infisical")["status"] == "ok"
	})
	r, err = client.Get("https://" + up.hostPort() + "/user")
	if err != nil || r.StatusCode != http.StatusOK || up.last(t).Header.Get("Authorization") != "Bearer ghp_fromInfisical_v2" {
		t.Fatalf("after recovery: %v %v", r, err)
	}
	readBody(t, r)

	// Along the way the 3s tokens were renewed or replaced.
	counts := map[string]int{}
	for _, e := range stub.Endpoints() {
		counts[e]++
	}
	t.Logf("requests to the stub: %v", counts)
	if counts[infisicaltest.Login] < 2 || counts[infisicaltest.Login]+counts[infisicaltest.Renew] < 3 {
		t.Fatalf("token lifecycle not exercised: %v", counts)
	}
	logs := s.logs.String()
	for _, secret := range []string{"ghp_fromInfisical_v", infisicalClientSecret, "stub-access-token"} {
		mustNotContain(t, "server log", logs, secret)
	}
	if strings.Contains(logs, "panic") {
		t.Fatal("server log mentions a panic")
	}
}
