package e2etest

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends/hashicorp/vaulttest"
)

// TestVaultDemo is `make demo`: the five steps a person would watch,
// against a real Vault. It runs in every test run too; with -v each
// step prints what it shows. Any failed step fails loudly.
func TestVaultDemo(t *testing.T) {
	step := func(n int, format string, args ...any) {
		fmt.Fprintf(os.Stdout, "\n== step %d: %s\n", n, fmt.Sprintf(format, args...))
	}
	show := func(format string, args ...any) { fmt.Fprintf(os.Stdout, "   %s\n", fmt.Sprintf(format, args...)) }

	v := vaulttest.Start(t)
	version := v.PutKV2(t, "secret", "agents/github", map[string]any{"GITHUB_TOKEN": "ghp_demo_value_one"})
	step(1, "the secret in HashiCorp Vault (%s)", v.Addr)
	show("secret/agents/github  version %d  GITHUB_TOKEN=ghp_demo_value_one", version)

	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	token := v.CreateToken(t, []string{"root"}, "1h", true)
	s := startServer(t, ca, serverOpts{config: vaultCaddyfile(t, tokenStore(v.Addr, "")), extraEnv: []string{"VAULT_TEST_TOKEN=" + token}})
	step(2, "the same secret's name and version, synced into agent-vault (GET /api/v1/credentials)")
	c := s.credential(t, "GITHUB_TOKEN")
	if c == nil || c["version"] != fmt.Sprint(version) || c["store"] != "vault" {
		t.Fatalf("step 2 failed: the broker lists %v", c)
	}
	show("name=%v store=%v version=%v source=%v synced_at=%v (no value: the API never shows one)", c["name"], c["store"], c["version"], c["source"], c["synced_at"])

	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	step(3, "av-launch -- curl https://%s/user: the upstream receives the Vault value", up.hostPort())
	out, _, code := s.launch(nil, "sh", "-c", `echo "agent sees GITHUB_TOKEN=$GITHUB_TOKEN"; curl -sS --fail-with-body https://`+up.hostPort()+`/user`)
	got := up.last(t).Header.Get("Authorization")
	if code != 0 || got != "Bearer ghp_demo_value_one" {
		t.Fatalf("step 3 failed: exit %d, upstream got %q\n%s", code, got, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		show("%s", line)
	}
	show("upstream received Authorization: %s", got)

	step(4, "a rotation written in Vault")
	written := time.Now()
	version = v.PutKV2(t, "secret", "agents/github", map[string]any{"GITHUB_TOKEN": "ghp_demo_value_two"})
	show("secret/agents/github  version %d  GITHUB_TOKEN=ghp_demo_value_two", version)

	step(5, "the rotation seen by the broker and the upstream")
	sess := s.newSession(t, nil, "10m")
	client := sess.agentClient(t)
	took := eventually(t, 15*time.Second, "step 5: rotation reaches the upstream", func() bool {
		r, err := client.Get("https://" + up.hostPort() + "/user")
		if err != nil {
			return false
		}
		readBody(t, r)
		return up.last(t).Header.Get("Authorization") == "Bearer ghp_demo_value_two"
	})
	c = s.credential(t, "GITHUB_TOKEN")
	if c["version"] != fmt.Sprint(version) {
		t.Fatalf("step 5 failed: the broker lists version %v", c["version"])
	}
	show("broker: version=%v; upstream received Authorization: %s", c["version"], up.last(t).Header.Get("Authorization"))
	show("from the Vault write to the first request carrying the new value: %s (poll interval 1s)", took.Round(time.Millisecond))
	_ = written
}
