package e2etest

// Readable refusals: a host no service covers is refused inside the
// tunnel, so the agent's own client shows why (curl, git, python3),
// and the host is never resolved or contacted.

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

func TestReadableRefusals(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	other := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", bearerService(up.hostPort(), "GITHUB_TOKEN"))
	const reason = "agent-vault: no service in this session's scope covers "

	// curl: without -f the body is its output and it exits 0; with
	// --fail-with-body it exits 22 and still prints it. The name is
	// resolvable nowhere: the proxy never looks it up.
	out, errOut, code := s.launch(nil, "curl", "-sS", "https://uncovered.example/v1/things")
	if code != 0 {
		t.Fatalf("curl without -f: exit %d %s", code, errOut)
	}
	for _, want := range []string{reason + "uncovered.example:443", "\nrefusal: uncovered_host\n", "\nhost: uncovered.example\n",
		"\nthis session's services: github\n", "ask an operator to add a service for uncovered.example"} {
		mustContain(t, "curl's output", out, want)
	}
	out, errOut, code = s.launch(nil, "curl", "-sS", "--fail-with-body", "-D", "/dev/stderr", "https://"+other.hostPort()+"/x")
	if code != 22 {
		t.Fatalf("curl --fail-with-body: exit %d, want 22\n%s\n%s", code, out, errOut)
	}
	mustContain(t, "curl's output", out, reason+other.hostPort())
	mustContain(t, "curl's headers", strings.ToLower(errOut), "x-agent-vault-refusal: uncovered_host")
	if other.count() != 0 {
		t.Fatal("the uncovered host was contacted")
	}

	// git shows a text/plain error body as "remote:" lines.
	_, errOut, code = s.launch(nil, "git", "ls-remote", "https://uncovered.example/org/repo.git")
	if code == 0 {
		t.Fatal("git ls-remote to an uncovered host succeeded")
	}
	mustContain(t, "git's error", errOut, "remote: "+reason+"uncovered.example")

	// python3 asking for JSON gets the same facts as JSON.
	script := `
import json, urllib.request, urllib.error
req = urllib.request.Request("https://uncovered.example/api", headers={"Accept": "application/json"})
try:
    urllib.request.urlopen(req)
except urllib.error.HTTPError as e:
    body = json.load(e)
    print(e.code, e.headers["X-Agent-Vault-Refusal"], e.headers["Content-Type"])
    print(body["error"]["code"], body["error"]["host"], ",".join(body["error"]["scope"]))
    print(body["error"]["reason"])
`
	out, errOut, code = s.launch(nil, "python3", "-c", script)
	if code != 0 {
		t.Fatalf("python3: exit %d\n%s\n%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || lines[0] != "403 uncovered_host application/json" || lines[1] != "uncovered_host uncovered.example github" ||
		!strings.HasPrefix(lines[2], "no service in this session's scope covers uncovered.example:443") {
		t.Fatalf("python3 printed:\n%s", out)
	}

	// A refusal inside a covered host's tunnel carries the header and a
	// body too (here a placeholder of no session of this broker).
	out, _, _ = s.launch(nil, "curl", "-sS", "-D", "-", "-H", "Authorization: Bearer agvph_"+strings.Repeat("0", 32), "https://"+up.hostPort()+"/user")
	mustContain(t, "placeholder refusal", strings.ToLower(out), "x-agent-vault-refusal: ")
	mustContain(t, "placeholder refusal", out, "agent-vault: ")
}

// Discovered hosts: what agents tried that nothing covers, with counts
// and the auth scheme they used, never its value, from the API and the
// CLI; the value is nowhere in the data dir either.
func TestDiscoveredHostsJourney(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", bearerService(up.hostPort(), "GITHUB_TOKEN"))
	const key = "sk_live_discovered_value_42"
	script := `for i in 1 2 3; do curl -sS -o /dev/null -H "Authorization: Bearer ` + key + `" https://api.stripe.example/v1/charges; done; ` +
		`curl -sS -o /dev/null -H "X-Api-Key: ` + key + `" https://api.stripe.example/v1/x; curl -sS -o /dev/null https://other.example:8443/`
	if out, errOut, code := s.launch(nil, "sh", "-c", script); code != 0 {
		t.Fatalf("the agent: exit %d\n%s\n%s", code, out, errOut)
	}
	var list apiwire.DiscoveredList
	var raw string
	within(t, time.Now(), 10*time.Second, "both hosts discovered", func() bool {
		raw = s.call(s.admin(), "GET", "/api/v1/discovered", nil).body
		json.Unmarshal([]byte(raw), &list)
		return len(list.Hosts) == 2 && list.Hosts[0].Count+list.Hosts[1].Count == 5
	})
	mustNotContain(t, "GET /api/v1/discovered", raw, key)
	for _, h := range list.Hosts {
		switch h.Host {
		case "api.stripe.example":
			if h.Port != 443 || h.Count != 4 || !slices.Equal(h.Schemes, []string{"Bearer", "header X-Api-Key"}) || len(h.Sessions) != 1 {
				t.Errorf("api.stripe.example: %+v", h)
			}
		case "other.example":
			if h.Port != 8443 || h.Count != 1 {
				t.Errorf("other.example: %+v", h)
			}
		default:
			t.Errorf("unexpected host %+v", h)
		}
	}

	env := []string{"AGENT_VAULT_ADDR=http://" + s.apiAddr, "AGENT_VAULT_TOKEN=" + s.adminToken()}
	table := runCLI(t, env, "", "discovered")
	if table.code != 0 {
		t.Fatalf("agent-vault discovered: %s", table)
	}
	for _, want := range []string{"HOST", "api.stripe.example:443", "Bearer, header X-Api-Key", "other.example:8443"} {
		mustContain(t, "agent-vault discovered", table.stdout, want)
	}
	mustNotContain(t, "agent-vault discovered", table.stdout+table.stderr, key)

	// The value is in no file of the data dir (the state database and
	// its WAL included).
	assertNotOnDisk(t, s.dataDir, key)
}
