package e2etest

// Service rules and the proxy's limits, through curl under av-launch:
// a request outside a service's methods or paths is refused with 403
// and never reaches the upstream; a rate limit answers 429 with
// Retry-After; a body over the cap is 413.

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestServiceRules(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	svc := bearerService(up.hostPort(), "GITHUB_TOKEN")
	svc["methods"] = []string{"GET", "HEAD", "POST"}
	svc["paths"] = []string{"/repos/*", "!/repos/*/admin/*"}
	svc["rate_limit"] = "5/m"
	svc["max_request_body"] = "1KiB"
	s.putService("github", svc)
	base := "https://" + up.hostPort()

	// One agent session: five requests in the minute. The first is
	// allowed; then a DELETE, a denied path and a path outside the
	// allow list are refused without using the rate (or the upstream).
	script := strings.Join([]string{
		`curl -sS -o /dev/null -w '%{http_code}\n' ` + base + `/repos/o/r`,
		`curl -sS -X DELETE -w '\n%{http_code}\n' ` + base + `/repos/o/r`,
		`curl -sS -w '\n%{http_code}\n' ` + base + `/repos/o/r/admin/keys`,
		`curl -sS -w '\n%{http_code}\n' ` + base + `/user`,
		`head -c 2048 /dev/zero | curl -sS -X POST --data-binary @- -w '\n%{http_code}\n' ` + base + `/repos/o/r`,
		`for i in 2 3 4 5; do curl -sS -o /dev/null -w '%{http_code}\n' ` + base + `/repos/o/r/$i; done`,
		`curl -sS -D - -o /dev/null ` + base + `/repos/o/r/6`,
	}, "; ")
	out, errOut, code := s.launch(nil, "sh", "-c", script)
	if code != 0 {
		t.Fatalf("the agent: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"agent-vault: service github does not allow method DELETE (its methods: [GET HEAD POST])\nrefusal: method_not_allowed\n\n403",
		"agent-vault: service github does not allow this path\nrefusal: path_not_allowed\n\n403",
		"agent-vault: the request body is larger than service github allows (1KiB)\nrefusal: body_too_large\n\n413",
		"200\n200\n200\n200\n",
	} {
		mustContain(t, "the agent's output", out, want)
	}
	// The sixth allowed request: 429 (curl speaks HTTP/2 in the tunnel,
	// so header names are lower case).
	lower := strings.ToLower(out)
	if !regexp.MustCompile(`(?m)^http/[0-9.]+ 429`).MatchString(lower) {
		t.Errorf("no 429 in:\n%s", out)
	}
	mustContain(t, "the 429's headers", lower, "x-agent-vault-refusal: rate_limited")
	if strings.Count(out, "path_not_allowed") != 2 {
		t.Errorf("both paths refused? %s", out)
	}
	_, after, _ := strings.Cut(lower, "retry-after: ")
	secs, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(after, "\n", 2)[0]))
	if err != nil || secs < 1 || secs > 12 {
		t.Errorf("Retry-After %q, want 1..12 s (one token each 12 s at 5/m)", after)
	}
	// The upstream saw the five allowed GETs and nothing else.
	if n := up.count(); n != 5 {
		t.Fatalf("the upstream got %d requests, want 5", n)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	for _, r := range up.reqs {
		if r.Method != "GET" || strings.Contains(r.Path, "admin") || r.Path == "/user" {
			t.Errorf("the upstream got %s %s", r.Method, r.Path)
		}
	}
}
