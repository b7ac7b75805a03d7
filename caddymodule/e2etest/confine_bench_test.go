package e2etest

import (
	"strconv"
	"strings"
	"testing"
)

// BenchmarkConfine measures what --confine costs, against the plain
// launcher in the same run: start-up (av-launch -- true, a session
// created and revoked each time) and request latency (a Python agent
// making sequential HTTPS requests through the proxy, each on a new
// connection, so each pays the forwarded connect).
//
//	go test -run '^$' -bench BenchmarkConfine ./caddymodule/e2etest/
func BenchmarkConfine(b *testing.B) {
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
	for _, mode := range []string{"plain", "confine"} {
		flags := []string{"--confine=" + strconv.FormatBool(mode == "confine")}
		b.Run("start/"+mode, func(b *testing.B) {
			for b.Loop() {
				if out, errOut, code := s.launchRaw(b, env, nil, flags, "true"); code != 0 {
					b.Fatalf("exit %d: %s %s", code, out, errOut)
				}
			}
		})
		b.Run("request/"+mode, func(b *testing.B) {
			var total int64
			runs := 0
			for b.Loop() {
				out, errOut, code := s.launchRaw(b, env, nil, flags, "python3", "-c", agent, "https://"+up.hostPort()+"/user", strconv.Itoa(perRun))
				ns, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
				if code != 0 || err != nil {
					b.Fatalf("exit %d: %s %s", code, out, errOut)
				}
				total += ns
				runs++
			}
			b.ReportMetric(float64(total)/float64(runs)/1e6, "ms/request")
		})
	}
}
