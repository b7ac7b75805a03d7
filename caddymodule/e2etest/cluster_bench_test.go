package e2etest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/internal/pgtest"
)

// The state database's measurements (make bench-state), as benchmarks
// so that `make test` never runs them; the figures are reported with
// b.ReportMetric and in one log line each, which go to bench.out.
//
// BenchmarkClusterRevocation: BENCH_REVOCATIONS (default 100) sessions
// minted on broker A and known to broker B are revoked on A one at a
// time; for each, a poller hammering B's proxy with CONNECTs carrying
// the session's token notes when B first answers 407. Reported: the
// p50, p99 and max of (B's first 407) - (A's DELETE sent), and the p50
// of A's DELETE round trip for comparison.
//
// BenchmarkStartup/{sqlite,postgres}: a database holding
// BENCH_STARTUP_SERVICES services and BENCH_STARTUP_SESSIONS live
// sessions (default 10 000 each; written through package state, as
// valid service documents and session rows), then
// BENCH_STARTUP_ROUNDS (default 3) starts of the built broker on it:
// from the process start to Caddy's "serving initial configuration" and
// to the first proxied request answered 200 with the credential
// injected. Reported: the median of each over the rounds.

// pollUntil polls cond until it holds or d passes, reporting which; for
// the set-up of benchmarks, where a failure is fatal anyway.
func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-time.After(5 * time.Millisecond)
	}
	return true
}

// quantile is the q-quantile (0..1) of sorted durations, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)) + 0.5)
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func BenchmarkClusterRevocation(b *testing.B) {
	n := envInt(b, "BENCH_REVOCATIONS", 100)
	c := newCluster(b, 0)
	up := newUpstream(b, c.ca, true)
	brokers := c.start(b, 2)
	a, bb := brokers[0], brokers[1]
	a.putCredential("BENCH_TOKEN", benchSecret)
	a.putService("bench", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "BENCH_TOKEN"}})
	target := up.hostPort()
	var lat, api []time.Duration
	for b.Loop() {
		sessions := make([]session, n)
		for i := range sessions {
			sessions[i] = a.newSession(b, nil, "1h")
		}
		for _, s := range sessions {
			if !pollUntil(30*time.Second, func() bool {
				status, _, err := connectStatus(bb.proxyAddr, target, s.Token)
				return err == nil && status == http.StatusOK
			}) {
				b.Fatalf("B never accepted session %s minted on A", s.ID)
			}
		}
		for _, s := range sessions {
			refused := make(chan time.Time, 1)
			quit := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-quit:
						return
					default:
					}
					status, _, err := connectStatus(bb.proxyAddr, target, s.Token)
					if err == nil && status == http.StatusProxyAuthRequired {
						refused <- time.Now()
						return
					}
				}
			}()
			sent := time.Now()
			a.mustAPI("DELETE", "/api/v1/sessions/"+s.ID, nil, http.StatusNoContent, nil)
			api = append(api, time.Since(sent))
			select {
			case at := <-refused:
				lat = append(lat, at.Sub(sent))
			case <-time.After(30 * time.Second):
				close(quit)
				wg.Wait()
				b.Fatalf("B still accepts session %s 30s after A revoked it", s.ID)
			}
			close(quit)
			wg.Wait()
		}
	}
	slices.Sort(lat)
	slices.Sort(api)
	b.ReportMetric(ms(quantile(lat, 0.5)), "p50-ms")
	b.ReportMetric(ms(quantile(lat, 0.99)), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(ms(quantile(api, 0.5)), "api-p50-ms")
	b.Logf("revocation on A until B refuses (407), over %d revocations: p50 %.1f ms, p99 %.1f ms, max %.1f ms (A's DELETE round trip p50 %.1f ms)",
		len(lat), ms(quantile(lat, 0.5)), ms(quantile(lat, 0.99)), ms(lat[len(lat)-1]), ms(quantile(api, 0.5)))
}

func BenchmarkStartup(b *testing.B) {
	for _, backend := range []string{state.BackendSQLite, state.BackendPostgres} {
		b.Run(backend, func(b *testing.B) { benchStartup(b, backend) })
	}
}

// populateState writes nServices services (one of them "bench", for
// hostPort, the rest on names of their own) and nSessions live sessions
// into the database, as a broker would have stored them, and returns
// the token of a session scoped to "bench".
func populateState(b *testing.B, cfg state.Config, hostPort string, nServices, nSessions int) string {
	ctx := context.Background()
	db, err := state.Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	bearer := services.Auth{Type: services.AuthBearer, Token: "BENCH_TOKEN"}
	name := func(i int) string {
		if i == 0 {
			return "bench"
		}
		return fmt.Sprintf("svc-%05d", i)
	}
	// PostgreSQL takes concurrent writers; SQLite has one writer at a
	// time, so more would only wait for its lock.
	workers := 8
	if cfg.Backend == state.BackendSQLite {
		workers = 1
	}
	parallel := func(n int, fn func(i int) error) {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					if err := fn(i); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	started := time.Now()
	parallel(nServices, func(i int) error {
		svc := services.Service{Name: name(i), Host: fmt.Sprintf("svc-%05d.bench.test", i), Auth: bearer}
		if i == 0 {
			svc.Host = hostPort
		}
		if err := svc.Validate(); err != nil {
			return err
		}
		doc, err := json.Marshal(svc)
		if err != nil {
			return err
		}
		return db.PutService(ctx, svc.Name, doc)
	})
	now := time.Now().UTC()
	tokens := make([]string, nSessions)
	parallel(nSessions, func(i int) error {
		secret := make([]byte, 32)
		id := make([]byte, 12)
		rand.Read(secret)
		rand.Read(id)
		tokens[i] = "avs_" + base64.RawURLEncoding.EncodeToString(secret)
		ph, err := services.NewPlaceholder()
		if err != nil {
			return err
		}
		return db.InsertSession(ctx, state.SessionRow{
			ID:           "ses_" + hex.EncodeToString(id),
			TokenHash:    sha256.Sum256([]byte(tokens[i])),
			Services:     []string{name(i % nServices)},
			Placeholders: map[string]string{"BENCH_TOKEN": ph},
			CreatedAt:    now,
			ExpiresAt:    now.Add(24 * time.Hour),
		})
	})
	b.Logf("%s: wrote %d services and %d sessions in %v", cfg.Backend, nServices, nSessions, time.Since(started).Round(time.Millisecond))
	return tokens[0]
}

func benchStartup(b *testing.B, backend string) {
	nServices := envInt(b, "BENCH_STARTUP_SERVICES", 10000)
	nSessions := envInt(b, "BENCH_STARTUP_SESSIONS", 10000)
	rounds := envInt(b, "BENCH_STARTUP_ROUNDS", 3)
	ca := newTestCA(b)
	up := newUpstreamNamed(b, ca, true, benchName)
	_, port, _ := strings.Cut(up.hostPort(), ":")
	hostPort := benchHost + ":" + port
	dataDir := filepath.Join(b.TempDir(), "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		b.Fatal(err)
	}
	o := serverOpts{dataDir: dataDir, logCap: 1 << 20}
	cfg := state.Config{Backend: backend}
	switch backend {
	case state.BackendSQLite:
		cfg.DSN = filepath.Join(dataDir, "state.db") // Caddyfile.example's default
	case state.BackendPostgres:
		// A cluster member's configuration: Caddy's storage in the
		// database too.
		cfg.DSN = pgtest.Shared(b).NewDatabase(b)
		o.config = clusterCaddyfile(b, 0)
		o.extraEnv = []string{databaseURLVar + "=" + cfg.DSN}
	}
	token := populateState(b, cfg, hostPort, nServices, nSessions)

	// A first start creates the CA and the built-in store, and takes the
	// credential the bench service injects; it is not measured.
	s := startServer(b, ca, o)
	s.putCredential("BENCH_TOKEN", benchSecret)
	var list struct {
		Services []json.RawMessage `json:"services"`
	}
	s.mustAPI("GET", "/api/v1/services", nil, http.StatusOK, &list)
	if len(list.Services) != nServices {
		b.Fatalf("the broker serves %d services, want %d", len(list.Services), nServices)
	}
	resp, err := directClient.Get("http://" + s.apiAddr + "/api/v1/ca.pem")
	if err != nil {
		b.Fatal(err)
	}
	caPEM, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s.stop()

	target := "https://" + hostPort + "/bench/startup"
	var ready, firstOK []time.Duration
	for b.Loop() {
		for range rounds {
			t0 := time.Now()
			s := launchServer(b, ca, o)
			if err := s.waitReady(); err != nil {
				b.Fatalf("start: %v\n%s", err, s.logs.String())
			}
			ready = append(ready, time.Since(t0))
			cl := viaProxy(b, s.proxyAddr, token, string(caPEM), false)
			if !pollUntil(time.Minute, func() bool {
				status, _, err := fetch(cl, target)
				return err == nil && status == http.StatusOK
			}) {
				b.Fatalf("no proxied request succeeded\n%s", s.logs.String())
			}
			firstOK = append(firstOK, time.Since(t0))
			s.stop()
		}
	}
	med := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2]
	}
	b.ReportMetric(ms(med(ready)), "ready-ms")
	b.ReportMetric(ms(med(firstOK)), "first-ok-ms")
	b.Logf("%s start-up with %d services and %d live sessions, median of %d: serving initial configuration %.0f ms, first proxied request OK %.0f ms (each: %v / %v); %s",
		backend, nServices, nSessions, len(ready), ms(med(ready)), ms(med(firstOK)), roundAll(ready), roundAll(firstOK), benchHostNote)
}

// roundAll rounds each duration to the millisecond, for the log line.
func roundAll(d []time.Duration) []time.Duration {
	out := make([]time.Duration, len(d))
	for i, v := range d {
		out[i] = v.Round(time.Millisecond)
	}
	return out
}
