package e2etest

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/testenv"
)

// BenchmarkConfine measures what --confine costs, against the plain
// launcher in the same run: start-up (av-launch -- true, a session
// created and revoked each time) and request latency (a Python agent
// making sequential HTTPS requests through the proxy, each on a new
// connection, so each pays the forwarded connect).
//
//	go test -run '^$' -bench BenchmarkConfine ./caddymodule/e2etest/
func BenchmarkConfine(b *testing.B) {
	if err := exec.Command("unshare", "-U", "-n", "true").Run(); err != nil {
		testenv.Unavailable(b, "--confine needs unprivileged user namespaces: %v", err)
	}
	ca := newTestCA(b)
	up := newUpstream(b, ca, true)
	drainHits(b, up)
	s := startServer(b, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	env := []string{"HOME=" + b.TempDir(), "AGENT_VAULT_DATA_DIR=" + s.dataDir}
	const perRun = 50
	agent := `
import sys, time, urllib.request
url = sys.argv[1]
urllib.request.urlopen(url, timeout=30).read()  # warm: imports, first handshake
t = time.perf_counter_ns()
for _ in range(int(sys.argv[2])):
    urllib.request.urlopen(url, timeout=30).read()
print((time.perf_counter_ns() - t) // int(sys.argv[2]))
`
	// Plain and confined runs alternate within each iteration, so both
	// see the same machine (this one is noisy); each reports its mean.
	modes := [][]string{{"--confine=false"}, {"--confine"}}
	b.Run("start", func(b *testing.B) {
		var took [2]time.Duration
		n := 0
		for b.Loop() {
			for i, flags := range modes {
				t0 := time.Now()
				if out, errOut, code := s.launchRaw(b, env, nil, flags, "true"); code != 0 {
					b.Fatalf("%v: exit %d: %s %s", flags, code, out, errOut)
				}
				took[i] += time.Since(t0)
			}
			n++
		}
		b.ReportMetric(float64(took[0].Microseconds())/float64(n)/1e3, "plain-ms/start")
		b.ReportMetric(float64(took[1].Microseconds())/float64(n)/1e3, "confine-ms/start")
	})
	b.Run("request", func(b *testing.B) {
		var total [2]int64
		n := 0
		for b.Loop() {
			for i, flags := range modes {
				out, errOut, code := s.launchRaw(b, env, nil, flags, "python3", "-c", agent, "https://"+up.hostPort()+"/user", strconv.Itoa(perRun))
				ns, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
				if code != 0 || err != nil {
					b.Fatalf("%v: exit %d: %s %s", flags, code, out, errOut)
				}
				total[i] += ns
			}
			n++
		}
		b.ReportMetric(float64(total[0])/float64(n)/1e6, "plain-ms/request")
		b.ReportMetric(float64(total[1])/float64(n)/1e6, "confine-ms/request")
	})
}
