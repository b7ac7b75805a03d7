package e2etest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends/hashicorp/vaulttest"
)

// vaultCaddyfile is Caddyfile.example with a HashiCorp store added
// after the built-in one.
func vaultCaddyfile(t *testing.T, storeBlock string) string {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join(repoRoot, "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	marker := "\t\tstore builtin {"
	i := strings.Index(string(cfg), marker)
	if i < 0 {
		t.Fatal("Caddyfile.example has no builtin store block")
	}
	out := string(cfg[:i]) + storeBlock + "\n" + string(cfg[i:])
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func tokenStore(addr, extra string) string {
	return fmt.Sprintf(`		store hashicorp {
			name vault
			address %s
			auth token {
				token {env.VAULT_TEST_TOKEN}
			}
			mount secret
			path agents
			poll_interval 1s
			max_staleness 4s
			timeout 1s
%s
		}`, addr, extra)
}

type storeList struct {
	Stores []map[string]any `json:"stores"`
}

func (s *server) storeHealth(t *testing.T, name string) map[string]any {
	t.Helper()
	var l storeList
	s.mustAPI("GET", "/api/v1/stores", nil, 200, &l)
	for _, st := range l.Stores {
		if st["store"] == name {
			return st
		}
	}
	t.Fatalf("store %s not listed: %v", name, l)
	return nil
}

func (s *server) credential(t *testing.T, name string) map[string]any {
	t.Helper()
	var creds struct {
		Credentials []map[string]any `json:"credentials"`
	}
	s.mustAPI("GET", "/api/v1/credentials", nil, 200, &creds)
	for _, c := range creds.Credentials {
		if c["name"] == name {
			return c
		}
	}
	return nil
}

// eventually polls cond (an observation through the real API or
// proxy) until it holds or the deadline passes. The waits are for
// wall-clock events in another process (a poll interval, a staleness
// bound), not for goroutines of this one.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		<-time.After(50 * time.Millisecond)
	}
	return time.Since(start)
}

// The HashiCorp journeys against a real Vault dev server: configure,
// see what synced, use it, rotate, outage, deletion.
func TestVaultJourneys(t *testing.T) {
	v := vaulttest.Start(t)
	v.PutKV2(t, "secret", "agents/github", map[string]any{"GITHUB_TOKEN": "ghp_fromVault_v1"})
	token := v.CreateToken(t, []string{"root"}, "1h", true)

	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	cfg := vaultCaddyfile(t, tokenStore(v.Addr, ""))
	s := startServer(t, ca, serverOpts{config: cfg, extraEnv: []string{"VAULT_TEST_TOKEN=" + token}})

	// 2. See what synced.
	c := s.credential(t, "GITHUB_TOKEN")
	if c == nil || c["store"] != "vault" || c["version"] != "1" || !strings.Contains(fmt.Sprint(c["source"]), "agents/github") || c["synced_at"] == nil {
		t.Fatalf("synced credential: %v", c)
	}
	if h := s.storeHealth(t, "vault"); h["status"] != "ok" {
		t.Fatalf("store health: %v", h)
	}

	// 3. Use it.
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	out, _, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+up.hostPort()+"/user")
	if code != 0 || up.last(t).Header.Get("Authorization") != "Bearer ghp_fromVault_v1" {
		t.Fatalf("use: %d %s", code, out)
	}

	// 4. Rotate: the next poll brings version 2 to the API and the proxy.
	sess := s.newSession(t, nil, "10m")
	client := sess.agentClient(t)
	changesBefore := s.storeHealth(t, "vault")["changes"]
	written := time.Now()
	v.PutKV2(t, "secret", "agents/github", map[string]any{"GITHUB_TOKEN": "ghp_fromVault_v2"})
	took := eventually(t, 10*time.Second, "rotation reaches the upstream", func() bool {
		r, err := client.Get("https://" + up.hostPort() + "/user")
		if err != nil {
			return false
		}
		readBody(t, r)
		return up.last(t).Header.Get("Authorization") == "Bearer ghp_fromVault_v2"
	})
	t.Logf("rotation: Vault write to first request carrying the new value: %s (poll 1s)", took.Round(time.Millisecond))
	_ = written
	if c := s.credential(t, "GITHUB_TOKEN"); c["version"] != "2" {
		t.Fatalf("API shows version %v after rotation", c["version"])
	}
	// Unchanged data is not rewritten: polls without a change do not
	// count as changes.
	changesAfter := s.storeHealth(t, "vault")["changes"]
	syncs := s.storeHealth(t, "vault")["syncs"]
	eventually(t, 10*time.Second, "two more polls", func() bool {
		return s.storeHealth(t, "vault")["syncs"].(float64) >= syncs.(float64)+2
	})
	if got := s.storeHealth(t, "vault")["changes"]; got != changesAfter || changesAfter.(float64) != changesBefore.(float64)+1 {
		t.Fatalf("changes went %v -> %v -> %v; want exactly one change", changesBefore, changesAfter, got)
	}

	// 7. Soft-deleting a v2 secret is an error for that secret, never an
	// empty value; the sync that would empty the store is refused, so
	// the last good value keeps serving.
	v.PutKV2(t, "secret", "agents/other", map[string]any{"OTHER_TOKEN": "other-v1"})
	eventually(t, 10*time.Second, "second secret synced", func() bool { return s.credential(t, "OTHER_TOKEN") != nil })
	v.DeleteKV2(t, "secret", "agents/other")
	eventually(t, 10*time.Second, "deletion reported", func() bool {
		return strings.Contains(fmt.Sprint(s.storeHealth(t, "vault")["problems"]), "deleted")
	})
	if s.credential(t, "OTHER_TOKEN") != nil {
		t.Fatal("a soft-deleted secret is still listed")
	}

	// 5. Outage: Vault stops answering. The last snapshot serves until
	// max_staleness, the store reports degraded, then stale: 503.
	v.Pause(t)
	eventually(t, 10*time.Second, "store degraded", func() bool {
		return s.storeHealth(t, "vault")["status"] == "degraded"
	})
	r, err := client.Get("https://" + up.hostPort() + "/user")
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("within max_staleness: %v %v", r, err)
	}
	readBody(t, r)
	eventually(t, 15*time.Second, "store stale", func() bool {
		return s.storeHealth(t, "vault")["status"] == "stale"
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
	mustContain(t, "503 body", body, "vault")
	resp, _ := directClient.Get("http://" + s.apiAddr + "/healthz")
	if readBody(t, resp); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz while stale: %d", resp.StatusCode)
	}
	v.Resume(t)
	eventually(t, 20*time.Second, "recovery without restart", func() bool {
		return s.storeHealth(t, "vault")["status"] == "ok"
	})
	r, err = client.Get("https://" + up.hostPort() + "/user")
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("after recovery: %v %v", r, err)
	}
	readBody(t, r)
	mustNotContain(t, "server log", s.logs.String(), "ghp_fromVault_v")
}

// Start-up validates the login: a bad token, a bad secret_id or an
// unreachable Vault stops start-up with a message naming the store.
func TestVaultStartupFailures(t *testing.T) {
	v := vaulttest.Start(t)
	ca := newTestCA(t)
	v.EnableAppRole(t, "approle")
	roleID, _ := v.CreateAppRole(t, "approle", "agents", []string{"default"}, "1h")

	cases := map[string]struct {
		block string
		env   []string
	}{
		"bad token":   {tokenStore(v.Addr, ""), []string{"VAULT_TEST_TOKEN=not-a-real-token"}},
		"unreachable": {tokenStore("http://127.0.0.1:1", ""), []string{"VAULT_TEST_TOKEN=x"}},
		"bad secret_id": {fmt.Sprintf(`		store hashicorp {
			name vault
			address %s
			auth approle {
				role_id %s
				secret_id 00000000-0000-0000-0000-000000000000
			}
		}`, v.Addr, roleID), nil},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s := launchServer(t, ca, serverOpts{config: vaultCaddyfile(t, c.block), extraEnv: c.env})
			select {
			case <-s.exited:
			case <-time.After(60 * time.Second):
				t.Fatal("server started")
			}
			mustContain(t, "start-up error", s.logs.String(), `store \"vault\"`)
			mustNotContain(t, "start-up error", s.logs.String(), "00000000-0000-0000-0000-000000000000")
		})
	}
}

// AppRole with a short token TTL and a KV v1 mount: the store logs in
// again when its token expires and keeps syncing.
func TestVaultAppRoleKV1(t *testing.T) {
	v := vaulttest.Start(t)
	v.EnableKVv1(t, "kv1")
	v.PutKV1(t, "kv1", "agents/api", map[string]any{"API_KEY": "kv1-value-1"})
	v.EnableAppRole(t, "approle")
	v.WritePolicy(t, "read-kv1", `path "kv1/*" { capabilities = ["read", "list"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }`)
	roleID, secretID := v.CreateAppRole(t, "approle", "agents", []string{"read-kv1"}, "3s")

	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	block := fmt.Sprintf(`		store hashicorp {
			name vault
			address %s
			auth approle {
				role_id %s
				secret_id {env.VAULT_TEST_SECRET_ID}
			}
			mount kv1
			path agents
			kv_version auto
			poll_interval 1s
			max_staleness 10s
		}`, v.Addr, roleID)
	s := startServer(t, ca, serverOpts{config: vaultCaddyfile(t, block), extraEnv: []string{"VAULT_TEST_SECRET_ID=" + secretID}})
	if c := s.credential(t, "API_KEY"); c == nil || c["store"] != "vault" {
		t.Fatalf("kv1 credential: %v", c)
	}
	s.putService("api", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "api-key", "key": "API_KEY"}})

	// Rotate after the first token expired (TTL 3s): seeing the new value
	// proves the store logged in again.
	eventually(t, 20*time.Second, "token outlived", func() bool {
		return s.storeHealth(t, "vault")["syncs"].(float64) >= 5
	})
	v.PutKV1(t, "kv1", "agents/api", map[string]any{"API_KEY": "kv1-value-2"})
	eventually(t, 15*time.Second, "kv1 rotation by content", func() bool {
		c := s.credential(t, "API_KEY")
		return c != nil && strings.HasPrefix(fmt.Sprint(c["version"]), "hmac:") && s.storeHealth(t, "vault")["changes"].(float64) >= 2
	})
	out, _, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+up.hostPort()+"/")
	if code != 0 || up.last(t).Header.Get("X-API-Key") != "kv1-value-2" {
		t.Fatalf("kv1 value upstream: %d %s %q", code, out, up.last(t).Header.Get("X-API-Key"))
	}
	if h := s.storeHealth(t, "vault"); h["status"] != "ok" {
		t.Fatalf("health after re-logins: %v", h)
	}
}

// Journey 6: a renewable token outlives its TTL because the store
// renews it; a non-renewable token nearing expiry is reported loudly.
// Journey 7, second half: a sync that would remove every credential is
// refused and reported; the last good value keeps serving.
func TestVaultTokenLifetimesAndEmptySync(t *testing.T) {
	v := vaulttest.Start(t)
	v.PutKV2(t, "secret", "agents/github", map[string]any{"GITHUB_TOKEN": "ghp_lifetime"})
	renewable := v.CreateToken(t, []string{"root"}, "4s", true)

	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{config: vaultCaddyfile(t, tokenStore(v.Addr, "")), extraEnv: []string{"VAULT_TEST_TOKEN=" + renewable}})
	eventually(t, 20*time.Second, "syncing past the token's 4s TTL", func() bool {
		return s.storeHealth(t, "vault")["syncs"].(float64) >= 8
	})
	if h := s.storeHealth(t, "vault"); h["status"] != "ok" || h["last_error"] != nil {
		t.Fatalf("renewable token not kept alive: %v", h)
	}

	// A sync that finds nothing at all (the secret's metadata is gone,
	// as after a wrong path or policy) is refused and reported.
	if _, err := v.Client.Logical().Delete("secret/metadata/agents/github"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "empty sync refused and reported", func() bool {
		return strings.Contains(fmt.Sprint(s.storeHealth(t, "vault")["last_error"]), "would remove all")
	})
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	out, _, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+up.hostPort()+"/user")
	if code != 0 || up.last(t).Header.Get("Authorization") != "Bearer ghp_lifetime" {
		t.Fatalf("last good value not served after a refused empty sync: %d %s", code, out)
	}
	s.stop()

	// A non-renewable token close to expiry: warned about on every poll.
	fixed := v.CreateToken(t, []string{"root"}, "1h", false)
	v.PutKV2(t, "secret", "agents/github", map[string]any{"GITHUB_TOKEN": "ghp_lifetime"})
	s2 := startServer(t, ca, serverOpts{config: vaultCaddyfile(t, tokenStore(v.Addr, "")), extraEnv: []string{"VAULT_TEST_TOKEN=" + fixed}})
	select {
	case <-s2.logs.waitFor("not renewable"):
	case <-time.After(10 * time.Second):
		t.Fatalf("no warning about a non-renewable token:\n%s", s2.logs.String())
	}
	mustNotContain(t, "server log", s2.logs.String(), fixed)
}

// A name a Vault store has listed is never served from another store:
// when the secret is deleted in Vault (say, after a leak), requests get
// 503 instead of an older copy from the built-in store; and writing the
// name to the built-in store is refused (409).
func TestVaultNoFallbackToLowerStore(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	plain := startServer(t, ca, serverOpts{})
	plain.putCredential("GITHUB_TOKEN", "old-builtin-copy")
	dataDir := plain.dataDir
	plain.stop()

	v := vaulttest.Start(t)
	v.PutKV2(t, "secret", "agents/github", map[string]any{"GITHUB_TOKEN": "from-vault"})
	v.PutKV2(t, "secret", "agents/keep", map[string]any{"KEEP_TOKEN": "keep"})
	token := v.CreateToken(t, []string{"root"}, "1h", true)
	s := startServer(t, ca, serverOpts{dataDir: dataDir, config: vaultCaddyfile(t, tokenStore(v.Addr, "")), extraEnv: []string{"VAULT_TEST_TOKEN=" + token}})
	if c := s.credential(t, "GITHUB_TOKEN"); c == nil || c["store"] != "vault" {
		t.Fatalf("GITHUB_TOKEN: %v", c)
	}
	var out map[string]any
	if code := s.api("PUT", "/api/v1/credentials/GITHUB_TOKEN", map[string]string{"value": "x"}, &out); code != http.StatusConflict {
		t.Fatalf("shadowed write: %d %v", code, out)
	}
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	v.DestroyKV2(t, "secret", "agents/github", []int{1})
	eventually(t, 10*time.Second, "deletion applied", func() bool { return s.credential(t, "GITHUB_TOKEN") == nil })
	sess := s.newSession(t, nil, "10m")
	hits := up.count()
	r, err := sess.agentClient(t).Get("https://" + up.hostPort() + "/user")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, r); r.StatusCode != http.StatusServiceUnavailable || up.count() != hits {
		t.Fatalf("after deletion in Vault: %d %q, upstream hits %d -> %d", r.StatusCode, body, hits, up.count())
	}
}
