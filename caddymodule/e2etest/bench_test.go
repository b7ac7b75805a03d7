package e2etest

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The benchmarks compare requests through the proxy (with credential
// injection) against requests straight to the same loopback HTTPS
// upstream, with keep-alive and with a new connection per request.
// `make bench` runs them and prints the throughput ratios.
//
// Each reports req/s and p50/p99 latency in milliseconds. A fixed
// number of workers share b.N requests.

const benchWorkers = 4

type benchEnv struct {
	up      *upstream
	session session
	caPool  *x509.CertPool // upstream's CA, for direct requests
}

func setupBench(b *testing.B) *benchEnv {
	ca := newTestCA(b)
	up := newUpstream(b, ca, true)
	s := startServer(b, ca, serverOpts{extraEnv: strings.Fields(os.Getenv("BENCH_SERVER_ENV"))})
	s.putCredential("BENCH_TOKEN", "bench-secret-value-0123456789")
	s.putService("bench", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "BENCH_TOKEN"}})
	sess := s.newSession(b, nil, "1h")
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &benchEnv{up: up, session: sess, caPool: pool}
}

func (e *benchEnv) client(viaProxy, keepAlive bool) *http.Client {
	tr := &http.Transport{
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: benchWorkers,
		TLSClientConfig:     &tls.Config{RootCAs: e.caPool},
	}
	if viaProxy {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM([]byte(e.session.CAPEM))
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		u, _ := url.Parse(e.session.ProxyURL)
		u.User = url.UserPassword("av", e.session.Token)
		tr.Proxy = http.ProxyURL(u)
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func runBench(b *testing.B, e *benchEnv, viaProxy, keepAlive bool) {
	c := e.client(viaProxy, keepAlive)
	target := e.up.URL + "/user"
	// Drain the upstream's hit channel so it never blocks.
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-e.up.hit:
			case <-stop:
				return
			}
		}
	}()
	defer close(stop)

	lat := make([][]time.Duration, benchWorkers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < benchWorkers; w++ {
		n := b.N / benchWorkers
		if w < b.N%benchWorkers {
			n++
		}
		wg.Add(1)
		go func(w, n int) {
			defer wg.Done()
			for i := 0; i < n; i++ {
				t0 := time.Now()
				resp, err := c.Get(target)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}(w, n)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	c.CloseIdleConnections()
}

// BenchmarkProxy starts one server and upstream and runs the four
// cases against them.
func BenchmarkProxy(b *testing.B) {
	e := setupBench(b)
	b.Run("direct-keepalive", func(b *testing.B) { runBench(b, e, false, true) })
	b.Run("proxy-keepalive", func(b *testing.B) { runBench(b, e, true, true) })
	b.Run("direct-newconn", func(b *testing.B) { runBench(b, e, false, false) })
	b.Run("proxy-newconn", func(b *testing.B) { runBench(b, e, true, false) })
}
