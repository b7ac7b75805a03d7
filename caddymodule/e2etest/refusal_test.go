package e2etest

// Readable refusals: a host no service covers is refused inside the
// tunnel, so the agent's own client shows why (curl, git, python3),
// and the host is never resolved or contacted.

import (
	"strings"
	"testing"
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
