package e2etest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Load and soak runs (make load), as benchmarks so that `make test`
// never runs them. Both use the built server, a DNS-named loopback
// upstream (see benchns_test.go) and bearer injection.
//
// BenchmarkLoadAgents: LOAD_AGENTS (default 1000) agents, each with its
// own session and keep-alive client, send requests back to back through
// the proxy for LOADTIME (default 60s). It reports requests, errors
// (which fail it) and latency. With LOAD_CPUPROFILE=file, the server's
// CPU profile over the middle half of the run is written to file.
//
// BenchmarkLoadIdleTunnels: LOAD_TUNNELS (default 10000) intercepted
// tunnels (CONNECT, TLS handshake, one request each, LOAD_OPENERS at a
// time) are held idle for LOAD_HOLD (default 5s), with the proxy's
// idle_timeout raised to LOAD_IDLE_TIMEOUT (default 15m) so that none
// is closed by design while the others open: it reports the
// server's RSS and descriptors and goroutines per idle tunnel, then
// closes them and fails unless the server's descriptors and goroutines
// come back to their baseline within LOAD_DRAIN (default 60s).

// loadEnv is a server with the bench service on a named upstream.
type loadEnv struct {
	up       *upstream
	srv      *server
	hostPort string // the service's host:port
	roots    *x509.CertPool
}

// setupLoad starts a server with Caddyfile.example, or with the proxy's
// idle_timeout set to idleTimeout if that is not empty.
func setupLoad(b *testing.B, idleTimeout string) *loadEnv {
	ca := newTestCA(b)
	up := newUpstreamNamed(b, ca, true, benchName)
	o := serverOpts{logCap: 1 << 20}
	if idleTimeout != "" {
		o.config = proxyOptionCaddyfile(b, "idle_timeout "+idleTimeout)
	}
	s := startServer(b, ca, o)
	_, port, _ := strings.Cut(up.hostPort(), ":")
	hostPort := benchHost + ":" + port
	s.putCredential("BENCH_TOKEN", benchSecret)
	s.putService("bench", map[string]any{"host": hostPort, "auth": map[string]any{"type": "bearer", "token": "BENCH_TOKEN"}})
	return &loadEnv{up: up, srv: s, hostPort: hostPort}
}

// proxyOptionCaddyfile is Caddyfile.example with one more option in the
// agent_vault_proxy block.
func proxyOptionCaddyfile(b *testing.B, option string) string {
	cfg, err := os.ReadFile(filepath.Join(repoRoot, "Caddyfile.example"))
	if err != nil {
		b.Fatal(err)
	}
	const marker = "\t\tunmatched deny\n"
	if !strings.Contains(string(cfg), marker) {
		b.Fatal("Caddyfile.example has no `unmatched deny` line in its proxy block")
	}
	out := strings.Replace(string(cfg), marker, marker+"\t\t"+option+"\n", 1)
	path := filepath.Join(b.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

func (e *loadEnv) agentMode(b *testing.B, sess session) benchMode {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(sess.CAPEM)) {
		b.Fatal("session CA does not parse")
	}
	u, err := url.Parse(sess.ProxyURL)
	if err != nil {
		b.Fatal(err)
	}
	u.User = url.UserPassword("av", sess.Token)
	return benchMode{name: "proxy", proxy: u, roots: roots, pid: e.srv.pid()}
}

func BenchmarkLoadAgents(b *testing.B) {
	agents := envInt(b, "LOAD_AGENTS", 1000)
	d := envDuration(b, "LOADTIME", 60*time.Second)
	lim, err := raiseNofile(uint64(4*agents + 4096))
	if err != nil || lim < uint64(2*agents+1024) {
		b.Fatalf("RLIMIT_NOFILE is %d (%v); %d agents need more", lim, err, agents)
	}
	e := setupLoad(b, "")
	clients := make([]*http.Client, agents)
	for i := range clients {
		clients[i] = benchClient(e.agentMode(b, e.srv.newSession(b, nil, "2h")), true, 1)
	}
	target := "https://" + e.hostPort + "/bench/load"
	fmt.Printf("load: %s\n", benchHostNote)
	for b.Loop() {
		pid := e.srv.pid()
		cpu0, _ := procCPU(pid)
		opened0 := e.up.opened.Load()
		lat := make([][]time.Duration, agents)
		var errCount atomic.Int64
		var firstErrs sync.Map // message -> count of one kind, for the report
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(d)
		profErr := make(chan error, 1)
		if file := os.Getenv("LOAD_CPUPROFILE"); file != "" {
			// The middle half of the run: past the start-up burst.
			go func() {
				time.Sleep(d / 4)
				profErr <- serverCPUProfile(e.srv.adminSocket(), d/2, file)
			}()
		} else {
			profErr <- nil
		}
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l := make([]time.Duration, 0, 256)
				for time.Now().Before(deadline) {
					t0 := time.Now()
					resp, err := c.Get(target)
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err == nil && resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
					if err != nil {
						errCount.Add(1)
						firstErrs.LoadOrStore(err.Error(), true)
						time.Sleep(10 * time.Millisecond) // no hot loop on a broken path
						continue
					}
					l = append(l, time.Since(t0))
				}
				lat[i] = l
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		cpu1, _ := procCPU(pid)
		if err := <-profErr; err != nil {
			b.Errorf("CPU profile: %v", err)
		} else if file := os.Getenv("LOAD_CPUPROFILE"); file != "" {
			fmt.Printf("load: CPU profile of the server over the middle %s of the run: %s\n", d/2, file)
		}
		rss, _ := procRSSKiB(pid)
		fds, _ := procFDs(pid)
		all := slices.Concat(lat...)
		slices.Sort(all)
		n := len(all)
		if n == 0 {
			b.Fatalf("no request succeeded (%d errors)", errCount.Load())
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		fmt.Printf("\n== load: %d concurrent agents (distinct sessions, keep-alive, back to back) through the proxy for %s\n", agents, elapsed.Round(time.Millisecond))
		fmt.Printf("   requests %d (%.0f req/s), errors %d\n", n, float64(n)/elapsed.Seconds(), errCount.Load())
		fmt.Printf("   latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", ms(all[n/2]), ms(all[n*90/100]), ms(all[n*99/100]), ms(all[n-1]))
		opened := e.up.opened.Load() - opened0
		fmt.Printf("   server CPU %.0f µs/req; at the end VmRSS %.1f MiB, %d fds\n",
			float64((cpu1-cpu0).Microseconds())/float64(n), float64(rss)/1024, fds)
		fmt.Printf("   upstream connections the proxy opened during the run: %d (%.2f per request); open at the end: %d\n",
			opened, float64(opened)/float64(n), e.up.conns.Load())
		b.ReportMetric(float64(n), "requests")
		b.ReportMetric(float64(errCount.Load()), "errors")
		b.ReportMetric(float64(n)/elapsed.Seconds(), "req/s")
		b.ReportMetric(ms(all[n/2]), "p50-ms")
		b.ReportMetric(ms(all[n*99/100]), "p99-ms")
		b.ReportMetric(float64(opened)/float64(n), "upstream-dials/req")
		if errCount.Load() > 0 {
			var kinds []string
			firstErrs.Range(func(k, _ any) bool { kinds = append(kinds, k.(string)); return len(kinds) < 10 })
			b.Errorf("%d requests failed; kinds of error: %s", errCount.Load(), strings.Join(kinds, " | "))
		}
	}
	for _, c := range clients {
		c.CloseIdleConnections()
	}
}

// openTunnel opens one intercepted tunnel to hostPort through the proxy
// at proxyAddr, sends one request in it and returns it open and idle.
func openTunnel(proxyAddr, hostPort, proxyAuth string, roots *x509.CertPool) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", proxyAddr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", hostPort, hostPort, proxyAuth); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(c, 512)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("CONNECT: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("CONNECT: status %d", resp.StatusCode)
	}
	if br.Buffered() > 0 {
		return nil, errors.New("CONNECT: bytes after the 200")
	}
	host, _, _ := net.SplitHostPort(hostPort)
	tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: host, NextProtos: []string{"http/1.1"}})
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	if _, err := fmt.Fprintf(tc, "GET /bench/idle HTTP/1.1\r\nHost: %s\r\n\r\n", hostPort); err != nil {
		return nil, err
	}
	resp, err = http.ReadResponse(bufio.NewReaderSize(tc, 1024), nil)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("request: status %d", resp.StatusCode)
	}
	c.SetDeadline(time.Time{})
	ok = true
	return tc, nil
}

// serverCounts are what "back to baseline" compares.
type serverCounts struct{ fds, goroutines int }

func (e *loadEnv) counts() (serverCounts, error) {
	g, err := serverGoroutines(e.srv.adminSocket())
	if err != nil {
		return serverCounts{}, err
	}
	fds, err := procFDs(e.srv.pid())
	return serverCounts{fds: fds, goroutines: g}, err
}

// settle polls the server's counts until two readings in a row agree,
// or fails at the deadline.
func (e *loadEnv) settle(b *testing.B, within time.Duration) serverCounts {
	deadline := time.Now().Add(within)
	prev, err := e.counts()
	for {
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		cur, err2 := e.counts()
		if err2 == nil && cur == prev {
			return cur
		}
		if time.Now().After(deadline) {
			b.Fatalf("server counts did not settle within %s: %+v then %+v", within, prev, cur)
		}
		prev, err = cur, err2
	}
}

// settledMemory measures the server's memory the same way before and
// after: it forces a GC, waits 2s and reads VmRSS, again and again until
// VmRSS stopped shrinking (under 256 KiB less than the previous
// reading). The runtime returns freed pages to the OS in the background,
// woken at the start of a GC cycle: start-up's argon2 buffer (tens of
// MiB) only goes back after the second forced collection. It gives up
// after within and says so.
func (e *loadEnv) settledMemory(b *testing.B, within time.Duration) (rssKiB int64, m goMem, settled bool) {
	pid := e.srv.pid()
	deadline := time.Now().Add(within)
	prev := int64(-1)
	for i := 0; ; i++ {
		var err error
		if m, err = serverGoMem(e.srv.adminSocket()); err != nil {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		cur, err := procRSSKiB(pid)
		if err != nil {
			b.Fatal(err)
		}
		if i >= 1 && prev-cur < 256 {
			return cur, m, true
		}
		if time.Now().After(deadline) {
			return cur, m, false
		}
		prev = cur
	}
}

// quiesce closes what the test holds that is not a tunnel: the
// management API's keep-alive connections and the proxy's pooled
// upstream connections (closed from the upstream's side).
func (e *loadEnv) quiesce() {
	directClient.CloseIdleConnections()
	e.up.CloseClientConnections()
}

func BenchmarkLoadIdleTunnels(b *testing.B) {
	n := envInt(b, "LOAD_TUNNELS", 10000)
	openers := envInt(b, "LOAD_OPENERS", 64)
	hold := envDuration(b, "LOAD_HOLD", 5*time.Second)
	drain := envDuration(b, "LOAD_DRAIN", 60*time.Second)
	// Long enough that the first tunnels outlive opening the rest on a
	// busy machine (the default, 2m, would close them by design).
	idle := envDuration(b, "LOAD_IDLE_TIMEOUT", 15*time.Minute)
	lim, err := raiseNofile(uint64(2*n + 4096))
	if err != nil || lim < uint64(n+1024) {
		// The test holds n client ends (plus the upstream's few); the
		// server n tunnels plus its pool.
		b.Fatalf("RLIMIT_NOFILE is %d (%v); %d tunnels need more", lim, err, n)
	}
	e := setupLoad(b, idle.String())
	sess := e.srv.newSession(b, nil, "2h")
	mode := e.agentMode(b, sess)
	auth := basicAuth(sess.Token)
	pid := e.srv.pid()
	nofile, _ := procNofile(pid)
	fmt.Printf("load: %s\n", benchHostNote)

	for b.Loop() {
		// Warm up the path (leaf minted, pools, code paths), then drop
		// everything but the server itself before the baseline.
		warm, err := openTunnel(e.srv.proxyAddr, e.hostPort, auth, mode.roots)
		if err != nil {
			b.Fatalf("warm-up tunnel: %v", err)
		}
		warm.Close()
		e.quiesce()
		rss0, mem0, ok0 := e.settledMemory(b, 60*time.Second)
		base := e.settle(b, 30*time.Second)

		conns := make([]net.Conn, n)
		var next atomic.Int64
		var firstErr error
		var errOnce sync.Once
		var wg sync.WaitGroup
		start := time.Now()
		for range openers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					c, err := openTunnel(e.srv.proxyAddr, e.hostPort, auth, mode.roots)
					if err != nil {
						errOnce.Do(func() { firstErr = fmt.Errorf("tunnel %d: %w", i, err) })
						next.Store(int64(n)) // stop the others
						return
					}
					conns[i] = c
				}
			}()
		}
		wg.Wait()
		openTime := time.Since(start)
		closeAll := func() {
			for _, c := range conns {
				if c != nil {
					c.Close()
				}
			}
		}
		if firstErr != nil {
			closeAll()
			b.Fatalf("opening tunnels: %v", firstErr)
		}
		time.Sleep(hold) // the point of the exercise: tunnels sitting idle
		held, err := e.counts()
		if err != nil {
			closeAll()
			b.Fatal(err)
		}
		rss1, mem1, ok1 := e.settledMemory(b, 60*time.Second)
		pooled := e.up.conns.Load()
		// Every tunnel must still be open: one descriptor each, over the
		// baseline (pooled upstream connections add a few more).
		for _, c := range []serverCounts{held, must(e.counts())(b)} {
			if c.fds-base.fds < n {
				closeAll()
				b.Fatalf("only %d server descriptors over the baseline with %d tunnels open: some closed while idle", c.fds-base.fds, n)
			}
		}

		closeAll()
		closed := time.Now()
		e.quiesce()
		var after serverCounts
		for {
			after, err = e.counts()
			if err == nil && after.fds <= base.fds && after.goroutines <= base.goroutines {
				break
			}
			if time.Since(closed) > drain {
				b.Fatalf("server did not come back to baseline within %s after closing %d tunnels: fds %d (baseline %d), goroutines %d (baseline %d), err %v",
					drain, n, after.fds, base.fds, after.goroutines, base.goroutines, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		backIn := time.Since(closed)

		kib := func(v int64) float64 { return float64(v) / 1024 }
		perTunnelRSS := float64(rss1-rss0) / float64(n)
		perTunnelHeap := kib(mem1.heapInuse-mem0.heapInuse) / float64(n)
		perTunnelStack := kib(mem1.stackInuse-mem0.stackInuse) / float64(n)
		note := ""
		if !ok0 || !ok1 {
			note = " (VmRSS was still shrinking when read)"
		}
		fmt.Printf("\n== idle tunnels: %d intercepted tunnels (CONNECT + TLS + 1 request each, %d at a time), held idle %s; proxy idle_timeout %s; RLIMIT_NOFILE server %s, test %d\n", n, openers, hold, idle, nofile, lim)
		fmt.Printf("   opened in %s (%.0f tunnels/s)\n", openTime.Round(time.Millisecond), float64(n)/openTime.Seconds())
		fmt.Printf("   server VmRSS (after a forced GC, once steady) before %.1f MiB, with the tunnels idle %.1f MiB: %.1f KiB per idle tunnel%s\n", kib(rss0), kib(rss1), perTunnelRSS, note)
		fmt.Printf("   of which Go heap in use %.1f -> %.1f MiB (%.1f KiB per tunnel), goroutine stacks %.1f -> %.1f MiB (%.1f KiB per tunnel)\n",
			kib(mem0.heapInuse)/1024, kib(mem1.heapInuse)/1024, perTunnelHeap, kib(mem0.stackInuse)/1024, kib(mem1.stackInuse)/1024, perTunnelStack)
		fmt.Printf("   server fds %d -> %d (%+.2f per tunnel), goroutines %d -> %d (%+.2f per tunnel); upstream connections the proxy holds: %d\n",
			base.fds, held.fds, float64(held.fds-base.fds)/float64(n), base.goroutines, held.goroutines, float64(held.goroutines-base.goroutines)/float64(n), pooled)
		fmt.Printf("   after closing them: fds %d (baseline %d), goroutines %d (baseline %d): back to baseline in %s\n",
			after.fds, base.fds, after.goroutines, base.goroutines, backIn.Round(time.Millisecond))
		b.ReportMetric(perTunnelRSS, "RSS-KiB/tunnel")
		b.ReportMetric(perTunnelHeap, "heap-KiB/tunnel")
		b.ReportMetric(perTunnelStack, "stack-KiB/tunnel")
		b.ReportMetric(float64(held.goroutines-base.goroutines)/float64(n), "goroutines/tunnel")
		b.ReportMetric(backIn.Seconds(), "drain-s")
	}
}

// must turns (v, err) into a function that fails b on err.
func must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}
