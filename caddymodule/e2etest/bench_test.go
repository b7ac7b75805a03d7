package e2etest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// BenchmarkProxy compares, against one loopback HTTPS upstream:
//
//   - direct: requests straight to the upstream;
//   - floor: through the bare Go MITM of floor_test.go (the cost of the
//     job itself);
//   - proxy: through agent-vault (the built binary) with bearer
//     injection;
//   - proxy-noact: through a second agent-vault, the same
//     Caddyfile.example plus disable_activity_log: the proxy without
//     the activity log (issue 11: the log must keep throughput within
//     3% of this).
//
// for keep-alive with 16 and with 4 concurrent clients, and for a new
// connection per request with 4 clients; then the passthrough case
// (bench_passthrough_test.go): "intercept": false against direct and
// an intercepted passthrough. Every client is the same Go
// code; only the transport's proxy and trust differ.
//
// Machines running this are noisy (the spread between runs is about
// ±0.1 on the ratios), so each case runs in rounds: in each round every
// mode runs for BENCH_ROUND (default 2s), in the order direct, floor,
// proxy, proxy-noact on even rounds and the reverse on odd ones, and
// what is reported is the median over rounds of each figure and of
// each per-round ratio (proxy/direct, proxy/floor, and the activity
// log's proxy/proxy-noact). Both servers run throughout; the "on" one's
// writer may finish its last batch during the next mode's run. -benchtime Nx sets the number of rounds (make bench
// passes BENCHN, default 5x).
//
// CPU per request is the utime+stime the floor or server process spent
// during its round (from /proc/<pid>/stat) divided by the requests
// served. cpu proxy/floor and cpu proxy/noact are the medians of the
// per-round quotients.
//
// At the end the "on" server's GET /api/v1/activity/stats must show
// entries written (its activity table was filled during the run; the
// written and dropped counts are printed), and the "off" server's
// must show none written and its table empty.
//
// With BENCH_CPUPROFILE=file, cases end with extra runs of
// BENCH_PROFILE_SECONDS (default 10) each while a process's CPU profile
// is taken (see profiledRuns): the new-connection case the server during
// proxy into file and the floor into file-floor.pprof; keepalive-c16 the
// server during proxy into file-keepalive.pprof and proxy-noact's into
// file-keepalive-noact.pprof, for the activity log's cost. Those runs
// are not part of the figures.

// benchRoundTime is how long each mode runs in each round.
func benchRoundTime(b *testing.B) time.Duration { return envDuration(b, "BENCH_ROUND", 2*time.Second) }

func envDuration(b testing.TB, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

func envInt(b testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// benchSecret is the credential the proxy injects and the floor sets.
const benchSecret = "bench-secret-value-0123456789"

// benchMode is one way of reaching the upstream.
type benchMode struct {
	name  string
	proxy *url.URL       // nil: direct
	roots *x509.CertPool // what the client trusts for the upstream's name
	pid   int            // process whose CPU is counted; 0 for none
}

type benchEnv struct {
	ca     *testCA // signs the upstreams' certificates; the servers trust it
	up     *upstream
	srv    *server // the proxy, activity log on
	noact  *server // the proxy-noact, activity log off
	target string  // the upstream URL requests go to
	modes  []benchMode
}

// The modes' indexes in benchEnv.modes and in each round's results.
const (
	modeDirect = iota
	modeFloor
	modeProxy
	modeNoact
)

// benchServer starts an agent-vault from config ("": the repository's
// Caddyfile.example) with the bench service and a session, and returns
// it and the mode reaching the upstream through it.
func benchServer(b *testing.B, ca *testCA, config, name, hostPort string) (*server, benchMode, session) {
	s := startServer(b, ca, serverOpts{config: config, logCap: 1 << 20, extraEnv: strings.Fields(os.Getenv("BENCH_SERVER_ENV"))})
	s.putCredential("BENCH_TOKEN", benchSecret)
	s.putService("bench", map[string]any{"host": hostPort, "auth": map[string]any{"type": "bearer", "token": "BENCH_TOKEN"}})
	sess := s.newSession(b, nil, "1h")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(sess.CAPEM))
	proxyURL, _ := url.Parse(sess.ProxyURL)
	proxyURL.User = url.UserPassword("av", sess.Token)
	return s, benchMode{name: name, proxy: proxyURL, roots: roots, pid: s.pid()}, sess
}

// noActivityConfig writes a copy of Caddyfile.example with
// disable_activity_log in its agent_vault block into dir.
func noActivityConfig(b *testing.B, dir string) string {
	data, err := os.ReadFile(filepath.Join(repoRoot, "Caddyfile.example"))
	if err != nil {
		b.Fatal(err)
	}
	const block = "\n\tagent_vault {\n"
	if strings.Count(string(data), block) != 1 {
		b.Fatalf("Caddyfile.example: want exactly one %q", block)
	}
	path := filepath.Join(dir, "Caddyfile.noactivity")
	cfg := strings.Replace(string(data), block, block+"\t\tdisable_activity_log\n", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

func setupBench(b *testing.B) *benchEnv {
	ca := newTestCA(b)
	up := newUpstreamNamed(b, ca, true, benchName)
	_, port, _ := strings.Cut(up.hostPort(), ":")
	hostPort := benchHost + ":" + port
	s, proxy, sess := benchServer(b, ca, "", "proxy", hostPort)
	noact, proxyNoact, _ := benchServer(b, ca, noActivityConfig(b, b.TempDir()), "proxy-noact", hostPort)
	fl := startFloor(b, ca, "Bearer "+benchSecret, benchName)

	direct := x509.NewCertPool()
	direct.AddCert(ca.cert)
	// The floor ignores Proxy-Authorization; the client sends the same
	// bytes to both.
	floorURL := &url.URL{Scheme: "http", Host: fl.addr, User: url.UserPassword("av", sess.Token)}
	return &benchEnv{
		ca:     ca,
		up:     up,
		srv:    s,
		noact:  noact,
		target: "https://" + hostPort + "/bench/user",
		modes: []benchMode{
			modeDirect: {name: "direct", roots: direct},
			modeFloor:  {name: "floor", proxy: floorURL, roots: fl.roots, pid: fl.pid},
			modeProxy:  proxy,
			modeNoact:  proxyNoact,
		},
	}
}

// checkActivity prints the activity Recorders' counts of both servers
// and fails unless the "on" one wrote entries and the "off" one wrote
// none and stores none.
func checkActivity(b *testing.B, e *benchEnv) {
	var on, off apiwire.ActivityStats
	e.srv.mustAPI("GET", "/api/v1/activity/stats", nil, http.StatusOK, &on)
	e.noact.mustAPI("GET", "/api/v1/activity/stats", nil, http.StatusOK, &off)
	fmt.Printf("bench: activity log of proxy: written %d, dropped %d, failed %d, queued %d; of proxy-noact: written %d, dropped %d\n",
		on.Written, on.Dropped, on.Failed, on.Queued, off.Written, off.Dropped)
	if on.Written == 0 {
		b.Errorf("proxy: no activity entry written during the bench: %+v", on)
	}
	var list apiwire.ActivityList
	e.noact.mustAPI("GET", "/api/v1/activity?limit=1", nil, http.StatusOK, &list)
	if off.Written != 0 || off.Dropped != 0 || len(list.Entries) != 0 {
		b.Errorf("proxy-noact recorded activity with disable_activity_log: %+v, %d listed", off, len(list.Entries))
	}
}

// benchClient is the one client all modes use.
func benchClient(m benchMode, keepAlive bool, workers int) *http.Client {
	tr := &http.Transport{
		DisableKeepAlives:   !keepAlive,
		MaxIdleConns:        workers,
		MaxIdleConnsPerHost: workers,
		TLSClientConfig:     &tls.Config{RootCAs: m.roots},
	}
	if m.proxy != nil {
		tr.Proxy = http.ProxyURL(m.proxy)
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// roundResult is one mode's run in one round.
type roundResult struct {
	n       int
	elapsed time.Duration
	p50     time.Duration
	p99     time.Duration
	cpu     time.Duration // of the mode's process; 0 if none
}

func (r roundResult) rps() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r roundResult) cpuPerReq() time.Duration {
	if r.n == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.n)
}

// drive sends GETs of target from workers concurrent clients sharing c
// for d and measures them.
func drive(c *http.Client, target string, workers int, d time.Duration, pid int) (roundResult, error) {
	return driveWith(c, func() (*http.Request, error) { return http.NewRequest(http.MethodGet, target, nil) }, workers, d, pid)
}

// driveWith is drive for the requests newReq makes.
func driveWith(c *http.Client, newReq func() (*http.Request, error), workers int, d time.Duration, pid int) (roundResult, error) {
	var cpu0 time.Duration
	if pid != 0 {
		var err error
		if cpu0, err = procCPU(pid); err != nil {
			return roundResult{}, err
		}
	}
	lat := make([][]time.Duration, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, 8192)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				req, err := newReq()
				if err != nil {
					errs[w] = err
					break
				}
				resp, err := c.Do(req)
				if err != nil {
					errs[w] = err
					break
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				if err != nil {
					errs[w] = err
					break
				}
				l = append(l, time.Since(t0))
			}
			lat[w] = l
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	res := roundResult{elapsed: elapsed}
	if pid != 0 {
		cpu1, err := procCPU(pid)
		if err != nil {
			return res, err
		}
		res.cpu = cpu1 - cpu0
	}
	for _, err := range errs {
		if err != nil {
			return res, err
		}
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	res.n = len(all)
	if res.n > 0 {
		res.p50 = all[res.n/2]
		res.p99 = all[res.n*99/100]
	}
	return res, nil
}

// benchCase is one client shape.
type benchCase struct {
	name      string
	keepAlive bool
	workers   int
}

var benchCases = []benchCase{
	{"keepalive-c16", true, 16},
	{"keepalive-c4", true, 4},
	{"newconn-c4", false, 4},
}

// BenchmarkProxy starts one upstream, one server and one floor and runs
// every case against them.
func BenchmarkProxy(b *testing.B) {
	e := setupBench(b)
	fmt.Printf("bench: %s; %s per mode per round\n", benchHostNote, benchRoundTime(b))
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) { runCase(b, e, bc) })
	}
	b.Run("passthrough", func(b *testing.B) { runPassthrough(b, e) }) // bench_passthrough_test.go
	checkActivity(b, e)
}

func runCase(b *testing.B, e *benchEnv, bc benchCase) {
	d := benchRoundTime(b)
	clients := make([]*http.Client, len(e.modes))
	for i, m := range e.modes {
		clients[i] = benchClient(m, bc.keepAlive, bc.workers)
		defer clients[i].CloseIdleConnections()
		// Warm up: pools, minted leaf, resolver, the runtime's heap.
		if _, err := drive(clients[i], e.target, bc.workers, d/4, 0); err != nil {
			b.Fatalf("%s warm-up: %v", m.name, err)
		}
	}
	var rounds [][]roundResult // [round][mode]
	for b.Loop() {
		res := make([]roundResult, len(e.modes))
		order := []int{modeDirect, modeFloor, modeProxy, modeNoact}
		if len(rounds)%2 == 1 {
			slices.Reverse(order)
		}
		for _, i := range order {
			r, err := drive(clients[i], e.target, bc.workers, d, e.modes[i].pid)
			if err != nil {
				b.Fatalf("%s: %v", e.modes[i].name, err)
			}
			res[i] = r
		}
		rounds = append(rounds, res)
	}
	b.StopTimer()
	sum := summarise(rounds)
	fmt.Print(sum.table(bc, len(rounds), d))
	b.ReportMetric(sum.rps[modeDirect].med, "direct-req/s")
	b.ReportMetric(sum.rps[modeFloor].med, "floor-req/s")
	b.ReportMetric(sum.rps[modeProxy].med, "proxy-req/s")
	b.ReportMetric(sum.rps[modeNoact].med, "proxy-noact-req/s")
	b.ReportMetric(sum.ratioDirect.med, "proxy/direct")
	b.ReportMetric(sum.ratioFloor.med, "proxy/floor")
	b.ReportMetric(sum.cpuRatio.med, "cpu-proxy/floor")
	b.ReportMetric(sum.ratioNoact.med, "proxy/noact")
	b.ReportMetric(sum.cpuRatioNoact.med, "cpu-proxy/noact")

	if file := os.Getenv("BENCH_CPUPROFILE"); file != "" {
		secs := envInt(b, "BENCH_PROFILE_SECONDS", 10)
		if runs := profiledRuns(e, bc, file); len(runs) > 0 {
			profileModes(b, e, clients, bc, time.Duration(secs)*time.Second, runs)
		}
	}
}

// profiledRun is one extra run of a mode while its process's CPU
// profile is written to file.
type profiledRun struct {
	mode  int
	file  string
	fetch func(d time.Duration, file string) error
}

// profiledRuns are the profiles of case bc: for the new-connection case
// the proxy (file) and the floor (file-floor.pprof); for keepalive-c16
// the proxy (file-keepalive.pprof) and proxy-noact
// (file-keepalive-noact.pprof), whose difference is the activity log's
// cost: `go tool pprof -top -diff_base file-keepalive-noact.pprof
// file-keepalive.pprof` (both runs serve about the same requests).
func profiledRuns(e *benchEnv, bc benchCase, file string) []profiledRun {
	base := strings.TrimSuffix(file, ".pprof")
	server := func(s *server) func(time.Duration, string) error {
		return func(d time.Duration, file string) error { return serverCPUProfile(s.adminSocket(), d, file) }
	}
	switch {
	case !bc.keepAlive:
		return []profiledRun{{modeProxy, file, server(e.srv)}, {modeFloor, base + "-floor.pprof", e.floorCPUProfile}}
	case bc.workers == 16:
		return []profiledRun{{modeProxy, base + "-keepalive.pprof", server(e.srv)},
			{modeNoact, base + "-keepalive-noact.pprof", server(e.noact)}}
	}
	return nil
}

// floorCPUProfile writes the floor's CPU profile over d to file (the
// floor serves net/http/pprof on its proxy port).
func (e *benchEnv) floorCPUProfile(d time.Duration, file string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", e.modes[modeFloor].proxy.Host, int(d.Seconds()))
	c := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: d + time.Minute}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("floor profile: %d %s", resp.StatusCode, data)
	}
	return os.WriteFile(file, data, 0o644)
}

// profileModes runs each of runs for a little longer than d while its
// process's CPU profile is taken, for comparison (`go tool pprof -top
// -cum file`). These runs are not part of the figures.
func profileModes(b *testing.B, e *benchEnv, clients []*http.Client, bc benchCase, d time.Duration, runs []profiledRun) {
	for _, pr := range runs {
		m := e.modes[pr.mode]
		errc := make(chan error, 1)
		go func() { errc <- pr.fetch(d, pr.file) }()
		// Run a little longer than the profile on both sides.
		r, err := drive(clients[pr.mode], e.target, bc.workers, d+time.Second, m.pid)
		if err != nil {
			b.Fatalf("profiled %s run: %v", m.name, err)
		}
		if err := <-errc; err != nil {
			b.Fatalf("%s CPU profile: %v", m.name, err)
		}
		fmt.Printf("bench: CPU profile of the %s process during %s %s (%d req, %.0f req/s, %.0f µs CPU/req while profiled): %s\n",
			map[bool]string{true: "floor", false: "server"}[pr.mode == modeFloor], m.name, bc.name, r.n, r.rps(),
			float64(r.cpuPerReq().Nanoseconds())/1000, pr.file)
	}
}

// stat is the median and range of one figure over rounds.
type stat struct{ med, lo, hi float64 }

func statOf(v []float64) stat {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return stat{med: med, lo: s[0], hi: s[n-1]}
}

type summary struct {
	rps, p50, p99, cpu                []stat // per mode; p50/p99 in ms, cpu in µs per request
	ratioDirect, ratioFloor, cpuRatio stat
	// The activity log's cost: proxy over proxy-noact.
	ratioNoact, cpuRatioNoact stat
}

func summarise(rounds [][]roundResult) summary {
	var s summary
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for i := range rounds[0] {
		var rps, p50, p99, cpu []float64
		for _, r := range rounds {
			rps = append(rps, r[i].rps())
			p50 = append(p50, ms(r[i].p50))
			p99 = append(p99, ms(r[i].p99))
			cpu = append(cpu, float64(r[i].cpuPerReq().Nanoseconds())/1000)
		}
		s.rps = append(s.rps, statOf(rps))
		s.p50 = append(s.p50, statOf(p50))
		s.p99 = append(s.p99, statOf(p99))
		s.cpu = append(s.cpu, statOf(cpu))
	}
	var rd, rf, rc, rn, rnc []float64
	for _, r := range rounds {
		p := r[modeProxy]
		rd = append(rd, p.rps()/r[modeDirect].rps())
		rf = append(rf, p.rps()/r[modeFloor].rps())
		rn = append(rn, p.rps()/r[modeNoact].rps())
		if fc := r[modeFloor].cpuPerReq(); fc > 0 {
			rc = append(rc, float64(p.cpuPerReq())/float64(fc))
		}
		if nc := r[modeNoact].cpuPerReq(); nc > 0 {
			rnc = append(rnc, float64(p.cpuPerReq())/float64(nc))
		}
	}
	s.ratioDirect, s.ratioFloor, s.ratioNoact = statOf(rd), statOf(rf), statOf(rn)
	if len(rc) > 0 {
		s.cpuRatio = statOf(rc)
	}
	if len(rnc) > 0 {
		s.cpuRatioNoact = statOf(rnc)
	}
	return s
}

func (s summary) table(bc benchCase, rounds int, d time.Duration) string {
	var w strings.Builder
	conn := "keep-alive"
	if !bc.keepAlive {
		conn = "new connection per request"
	}
	fmt.Fprintf(&w, "\n== %s: %s, %d concurrent clients; median of %d rounds of %s per mode [min-max]\n", bc.name, conn, bc.workers, rounds, d)
	fmt.Fprintf(&w, "   %-11s %24s %22s %22s %26s\n", "", "req/s", "p50 ms", "p99 ms", "server CPU µs/req")
	for i, name := range []string{"direct", "floor", "proxy", "proxy-noact"} {
		cpu := fmt.Sprintf("%26s", "-")
		if i != modeDirect {
			cpu = fmt.Sprintf("%8.0f [%6.0f-%6.0f]", s.cpu[i].med, s.cpu[i].lo, s.cpu[i].hi)
			cpu = fmt.Sprintf("%26s", cpu)
		}
		fmt.Fprintf(&w, "   %-11s %7.0f [%6.0f-%6.0f]  %6.2f [%5.2f-%5.2f]  %6.2f [%5.2f-%5.2f] %s\n", name,
			s.rps[i].med, s.rps[i].lo, s.rps[i].hi, s.p50[i].med, s.p50[i].lo, s.p50[i].hi,
			s.p99[i].med, s.p99[i].lo, s.p99[i].hi, cpu)
	}
	fmt.Fprintf(&w, "   throughput proxy/direct %.2f [%.2f-%.2f]   proxy/floor %.2f [%.2f-%.2f]   CPU per request proxy/floor %.2f [%.2f-%.2f]\n",
		s.ratioDirect.med, s.ratioDirect.lo, s.ratioDirect.hi, s.ratioFloor.med, s.ratioFloor.lo, s.ratioFloor.hi,
		s.cpuRatio.med, s.cpuRatio.lo, s.cpuRatio.hi)
	fmt.Fprintf(&w, "   activity log on/off: proxy/proxy-noact throughput %.3f [%.3f-%.3f], CPU per request %.3f [%.3f-%.3f]\n",
		s.ratioNoact.med, s.ratioNoact.lo, s.ratioNoact.hi, s.cpuRatioNoact.med, s.cpuRatioNoact.lo, s.cpuRatioNoact.hi)
	return w.String()
}
