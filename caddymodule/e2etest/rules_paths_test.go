package e2etest

import (
	"strings"
	"testing"
)

// A deny rule holds against a path spelled another way the upstream
// reads the same (an escaped letter, another case, a doubled slash):
// curl gets 403 path_not_allowed each time and the upstream nothing.
func TestServiceRulesRespelledPaths(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	svc := bearerService(up.hostPort(), "GITHUB_TOKEN")
	svc["paths"] = []string{"/repos/*", "!/repos/*/admin/*"}
	s.putService("github", svc)
	base := "https://" + up.hostPort()
	paths := []string{"/repos/o/r/%61dmin/keys", "/repos/o/r/ADMIN/keys", "/repos/o/r//admin/keys", "/repos/o/r/adm%69n/keys"}
	var script []string
	for _, p := range paths {
		script = append(script, `curl -sS --path-as-is -o /dev/null -w '%{http_code}\n' `+base+p)
	}
	out, errOut, code := s.launch(nil, "sh", "-c", strings.Join(script, "; "))
	if code != 0 {
		t.Fatalf("the agent: exit %d\n%s\n%s", code, out, errOut)
	}
	if want := strings.Repeat("403\n", len(paths)); out != want {
		t.Errorf("curl printed %q, want %q", out, want)
	}
	if n := up.count(); n != 0 {
		t.Fatalf("the upstream got %d requests for denied paths", n)
	}
}
