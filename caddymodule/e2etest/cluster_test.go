package e2etest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", to set up databases at an older schema
	_ "modernc.org/sqlite"             // database/sql driver "sqlite", likewise

	"github.com/agentvault/caddy-agent-vault/internal/pgtest"
	"github.com/agentvault/caddy-agent-vault/internal/testenv"
)

// The cluster (issue 9, "A cluster"): brokers pointed at one PostgreSQL
// with the same master password are one broker. Every test here runs
// real broker processes (bin/agent-vault), each with its own data dir
// and ports, against a real PostgreSQL server of the test's own
// (internal/pgtest), which holds their state and Caddy's storage (the
// CA). What the tests prove is what an operator behind a load balancer
// relies on: whichever broker an agent or an admin reaches, the answer
// is the same within a second, and losing a broker or the database
// never lets a request through that should have been refused.

// propagation is the product's promise: a change made through one
// broker's API is in effect on every other broker within this.
const propagation = time.Second

// clusterMaxStale is the state's max_stale in the database-outage test:
// short, so the test waits seconds rather than the default minute. It
// must exceed the state package's one-second ping interval.
const clusterMaxStale = 3 * time.Second

// databaseURLVar is the variable Caddyfile.example reads to put the
// state in PostgreSQL.
const databaseURLVar = "AGENT_VAULT_DATABASE_URL"

// clusterCaddyfile is the configuration the brokers of a cluster run:
// Caddyfile.example itself, where AGENT_VAULT_DATABASE_URL (set by the
// cluster) puts the state and Caddy's storage in PostgreSQL; with
// maxStale set, a copy that differs only in max_stale in the state
// block. Deriving the copy, rather than keeping one in testdata, means
// it can never drift from the shipped file; a missing line fails the
// test instead.
func clusterCaddyfile(t testing.TB, maxStale time.Duration) string {
	t.Helper()
	example := filepath.Join(repoRoot, "Caddyfile.example")
	if maxStale == 0 {
		return example
	}
	b, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	// The state line, with or without a block of its own.
	re := regexp.MustCompile(`(?m)^(\t\tstate\s[^\n]*?)[ \t]*(\{?)$`)
	m := re.FindStringSubmatch(cfg)
	if m == nil {
		t.Fatal("Caddyfile.example has no `state ...` line in its agent_vault block")
	}
	option := "\t\t\tmax_stale " + maxStale.String() + "\n"
	if m[2] == "{" {
		cfg = strings.Replace(cfg, m[0]+"\n", m[0]+"\n"+option, 1)
	} else {
		cfg = strings.Replace(cfg, m[0]+"\n", m[1]+" {\n"+option+"\t\t}\n", 1)
	}
	t.Logf("brokers run Caddyfile.example with max_stale %v", maxStale)
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cluster is one PostgreSQL server and the configuration of the
// brokers that share it.
type cluster struct {
	pg  *pgtest.Server
	ca  *testCA // signs the upstreams' certificates; the brokers trust it
	cfg string
}

func newCluster(t testing.TB, maxStale time.Duration) *cluster {
	t.Helper()
	pg := pgtest.Start(t)
	return &cluster{pg: pg, ca: newTestCA(t), cfg: clusterCaddyfile(t, maxStale)}
}

// launch starts one broker of the cluster without waiting for it.
func (c *cluster) launch(t testing.TB, o serverOpts) *server {
	t.Helper()
	o.config = c.cfg
	o.extraEnv = append(o.extraEnv, databaseURLVar+"="+c.pg.DSN())
	var s *server
	// Registered before launchServer's stop, so it runs after it, when
	// the process has written everything it will.
	t.Cleanup(func() {
		if s != nil && strings.Contains(s.logs.String(), c.pg.Password()) {
			t.Errorf("a broker's output holds the database password")
		}
	})
	s = launchServer(t, c.ca, o)
	return s
}

// start starts n brokers at once, as a deployment does (so they also
// race to create the one CA and the built-in store's header), and waits
// until each serves. It checks that each keeps its state in PostgreSQL
// and not in a file of its data dir.
func (c *cluster) start(t testing.TB, n int) []*server {
	t.Helper()
	brokers := make([]*server, n)
	for i := range brokers {
		brokers[i] = c.launch(t, serverOpts{})
	}
	for i, s := range brokers {
		if err := s.waitReady(); err != nil {
			t.Fatalf("broker %d did not start: %v\n%s", i, err, s.logs.String())
		}
	}
	for i, s := range brokers {
		for _, local := range []string{"state.db", filepath.Join("caddy", "pki")} {
			if _, err := os.Stat(filepath.Join(s.dataDir, local)); err == nil {
				t.Fatalf("broker %d keeps %s in its data dir: not on the shared database", i, local)
			}
		}
	}
	return brokers
}

// drainHits empties u's hit channel for as long as t runs: the cluster
// tests poll through the proxies, and an unread channel would block
// the upstream once full. Requests stay countable through u.count and
// u.last.
func drainHits(t testing.TB, u *upstream) {
	ctx := t.Context()
	go func() {
		for {
			select {
			case <-u.hit:
			case <-ctx.Done():
				return
			}
		}
	}()
}

// viaProxy is the HTTP client of a Go agent holding token, sent through
// the proxy at proxyAddr (any broker's, not only the one that minted
// the session) and trusting the CA in caPEM. keepAlive false opens a
// new tunnel, with a new TLS handshake, for every request.
func viaProxy(t testing.TB, proxyAddr, token, caPEM string, keepAlive bool) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatal("CA PEM does not parse")
	}
	proxy := &url.URL{Scheme: "http", Host: proxyAddr, User: url.UserPassword("av", token)}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             http.ProxyURL(proxy),
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			DisableKeepAlives: !keepAlive,
			ForceAttemptHTTP2: true,
		},
		Timeout: 10 * time.Second,
	}
}

// fetch GETs target through c and returns the status and body; a
// refused CONNECT is an error (Go's transport does not return its
// answer).
func fetch(c *http.Client, target string) (int, string, error) {
	resp, err := c.Get(target)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// connectStatus sends one CONNECT for target to the proxy at proxyAddr
// with token as its credentials and returns the status and, for a
// refusal, the body. The connection is closed either way: a 200 opens a
// tunnel this does not use. It is safe from any goroutine.
func connectStatus(proxyAddr, target, token string) (int, string, error) {
	conn, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second)) // a bound on a broken run, not a wait
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", target, target, basicAuth(token))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", nil
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// askRefused sends GET / to target through s's proxy as an agent with
// token would (trusting s's CA, with the given header lines "Name:
// value"), for a host the proxy refuses inside the tunnel: the status,
// the refusal header and the body the agent reads.
func askRefused(t *testing.T, s *server, target, token string, header ...string) (int, string, string) {
	t.Helper()
	pem := getCA(t, s)
	req, err := http.NewRequest("GET", "https://"+target+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(k, strings.TrimSpace(v))
	}
	resp, err := viaProxy(t, s.proxyAddr, token, pem, false).Do(req)
	if err != nil {
		t.Fatalf("GET https://%s/ through the proxy: %v", target, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Agent-Vault-Refusal"), string(b)
}

// healthz returns the broker's /healthz status and body.
func (s *server) healthz() (int, string, error) {
	resp, err := directClient.Get("http://" + s.apiAddr + "/healthz")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// within polls cond, an observation of another process through its API
// or proxy, until it holds. It fails t unless that happened within d of
// start, the moment the change was made, and returns how long it took.
// The poll interval is short because the bound is tight.
func within(t testing.TB, start time.Time, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		<-time.After(5 * time.Millisecond)
	}
	took := time.Since(start)
	if took > d {
		t.Fatalf("%s: took %v, more than %v", what, took.Round(time.Millisecond), d)
	}
	t.Logf("%s: %v", what, took.Round(time.Millisecond))
	return took
}

// injected reports whether a request through c reached up and carried
// the given secret as its bearer token.
func injected(c *http.Client, up *upstream, secret string) bool {
	before := up.count()
	status, _, err := fetch(c, up.URL+"/user")
	if err != nil || status != http.StatusOK || up.count() == before {
		return false
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.reqs[len(up.reqs)-1].Header.Get("Authorization") == "Bearer "+secret
}

// curlVia runs curl for target through the proxy at proxyAddr with
// token, trusting only the CA in caFile.
func curlVia(t testing.TB, proxyAddr, token, caFile, target string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		testenv.Unavailable(t, "curl: %v", err)
	}
	cmd := exec.Command("curl", "-sS", "--fail-with-body", "--max-time", "20",
		"--proxy", "http://"+proxyAddr, "--proxy-user", "av:"+token, "--cacert", caFile, target)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestClusterJourney: two brokers on one database are one broker. A
// session minted through A's API works through B's proxy; a service
// created on B and a credential put on A are used through the other
// broker within a second, and so are their deletions; a revocation on A
// makes B refuse (407) within a second and ends B's open tunnels of
// that session; both serve the same CA, byte for byte, and a client
// trusting that one file works through both proxies.
func TestClusterJourney(t *testing.T) {
	c := newCluster(t, 0)
	up := newUpstream(t, c.ca, true)
	drainHits(t, up)
	brokers := c.start(t, 2)
	a, b := brokers[0], brokers[1]

	// One CA, no key copied by hand.
	caPEM := getCA(t, a)
	if got := getCA(t, b); got != caPEM {
		t.Fatalf("the brokers serve different CAs:\nA:\n%s\nB:\n%s", caPEM, got)
	}
	caFile := filepath.Join(t.TempDir(), "cluster-ca.pem")
	if err := os.WriteFile(caFile, []byte(caPEM), 0o600); err != nil {
		t.Fatal(err)
	}

	// A credential put on A; a service created on B, used through A's
	// proxy by a session minted on B: A needs both of B's changes and
	// its own credential.
	a.putCredential("GITHUB_TOKEN", githubSecret)
	svc := map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}}
	// The clock stops when the other broker accepts the CONNECT (it
	// knows the session, and a service covers the host); the request
	// right after must then be injected. The first TLS handshakes and
	// leaf certificate are the client's cost, not propagation.
	start := time.Now()
	b.putService("github", svc)
	onB := b.newSession(t, []string{"github"}, "1h")
	within(t, start, propagation, "a service and a session created on B, accepted by A's proxy", func() bool {
		status, _, err := connectStatus(a.proxyAddr, up.hostPort(), onB.Token)
		return err == nil && status == http.StatusOK
	})
	bOnA := viaProxy(t, a.proxyAddr, onB.Token, onB.CAPEM, false)
	if !injected(bOnA, up, githubSecret) {
		t.Fatalf("B's service and session, through A's proxy: not injected\n%s", a.logs.String())
	}

	// A session minted through A's API, used through B's proxy, with
	// the credential put on A.
	start = time.Now()
	onA := a.newSession(t, []string{"github"}, "1h")
	within(t, start, propagation, "a session minted on A, accepted by B's proxy", func() bool {
		status, _, err := connectStatus(b.proxyAddr, up.hostPort(), onA.Token)
		return err == nil && status == http.StatusOK
	})
	aOnB := viaProxy(t, b.proxyAddr, onA.Token, onA.CAPEM, true)
	if !injected(aOnB, up, githubSecret) {
		t.Fatalf("A's session, through B's proxy: not injected\n%s", b.logs.String())
	}

	// One CA file is all a client needs, whichever broker it reaches.
	for name, s := range map[string]*server{"A": a, "B": b} {
		before := up.count()
		out, err := curlVia(t, s.proxyAddr, onA.Token, caFile, up.URL+"/user")
		if err != nil {
			t.Fatalf("curl trusting the one CA file, through %s's proxy: %v\n%s", name, err, out)
		}
		mustContain(t, "curl through "+name, out, `"login":"octocat"`)
		if up.count() == before || up.last(t).Header.Get("Authorization") != "Bearer "+githubSecret {
			t.Fatalf("curl through %s: the upstream did not get the credential", name)
		}
	}

	// A credential put on A again (rotated) is what B injects next.
	const rotated = "ghp_rotatedSecretValue9876543210zyxwvuABC"
	start = time.Now()
	a.putCredential("GITHUB_TOKEN", rotated)
	within(t, start, propagation, "a credential put on A, used through B's proxy", func() bool {
		return injected(aOnB, up, rotated)
	})

	// Revoked on A: B refuses the token, and its tunnel of that session
	// (aOnB's kept-alive connection) is closed.
	start = time.Now()
	a.mustAPI("DELETE", "/api/v1/sessions/"+onA.ID, nil, http.StatusNoContent, nil)
	within(t, start, propagation, "a session revoked on A, refused (407) by B's proxy", func() bool {
		status, _, err := connectStatus(b.proxyAddr, up.hostPort(), onA.Token)
		return err == nil && status == http.StatusProxyAuthRequired
	})
	if status, body, err := connectStatus(a.proxyAddr, up.hostPort(), onA.Token); err != nil || status != http.StatusProxyAuthRequired {
		t.Fatalf("A accepts the session it revoked: %d %q %v", status, body, err)
	}
	before := up.count()
	if status, _, err := fetch(aOnB, up.URL+"/user"); err == nil && status == http.StatusOK {
		t.Fatal("B's open tunnel of the revoked session still forwards requests")
	}
	if up.count() != before {
		t.Fatal("a request of the revoked session reached the upstream through B")
	}

	// A credential deleted on A: B stops injecting it (the request is
	// refused, never forwarded without it or with the old value).
	bOnB := viaProxy(t, b.proxyAddr, onB.Token, onB.CAPEM, false)
	if !injected(bOnB, up, rotated) {
		t.Fatal("B's own session does not work through B")
	}
	start = time.Now()
	a.mustAPI("DELETE", "/api/v1/credentials/GITHUB_TOKEN", nil, http.StatusNoContent, nil)
	within(t, start, propagation, "a credential deleted on A, no longer injected by B", func() bool {
		n := up.count()
		status, _, err := fetch(bOnB, up.URL+"/user")
		return err == nil && status != http.StatusOK && up.count() == n
	})

	// A service deleted on B: A refuses its host.
	start = time.Now()
	b.mustAPI("DELETE", "/api/v1/services/github", nil, http.StatusNoContent, nil)
	within(t, start, propagation, "a service deleted on B, refused (403) by A's proxy", func() bool {
		status, _, _ := askRefused(t, a, up.hostPort(), onB.Token)
		return status == http.StatusForbidden
	})
}

// TestClusterKillUnderLoad: while agents send requests through both
// brokers, A is killed with SIGKILL (no shutdown of any kind). Every
// request sent to B succeeds, before, during and after the kill, on
// kept-alive tunnels and on new ones; B's /healthz stays ok; and B
// still writes (a new session, a new service) with A's connections and
// anything A held left dangling.
func TestClusterKillUnderLoad(t *testing.T) {
	c := newCluster(t, 0)
	up := newUpstream(t, c.ca, true)
	drainHits(t, up)
	brokers := c.start(t, 2)
	a, b := brokers[0], brokers[1]
	a.putCredential("GITHUB_TOKEN", githubSecret)
	a.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	// The agents' session is A's: what A minted must outlive A.
	sess := a.newSession(t, nil, "1h")
	viaB := viaProxy(t, b.proxyAddr, sess.Token, sess.CAPEM, false)
	eventually(t, 10*time.Second, "A's session and service, used through B", func() bool { return injected(viaB, up, githubSecret) })

	type tally struct {
		ok, failed atomic.Int64
		mu         sync.Mutex
		firstErr   string
	}
	fail := func(tl *tally, msg string) {
		tl.failed.Add(1)
		tl.mu.Lock()
		if tl.firstErr == "" {
			tl.firstErr = msg
		}
		tl.mu.Unlock()
	}
	var onA, onB, health tally
	var killed atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	target := up.URL + "/bench/load"
	worker := func(cl *http.Client, tl *tally, quitOnError bool) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			status, _, err := fetch(cl, target)
			switch {
			case err == nil && status == http.StatusOK:
				tl.ok.Add(1)
			case quitOnError && killed.Load():
				// A is gone: its agents' requests fail, as they
				// must; one is counted, the agent stops hammering.
				fail(tl, fmt.Sprintf("after the kill: %d %v", status, err))
				return
			case err != nil:
				fail(tl, err.Error())
			default:
				fail(tl, "status "+strconv.Itoa(status))
			}
		}
	}
	for i := range 6 {
		wg.Add(1)
		// Half kept alive, half a new tunnel (and TLS handshake) per request.
		go worker(viaProxy(t, b.proxyAddr, sess.Token, sess.CAPEM, i%2 == 0), &onB, false)
	}
	for range 2 {
		wg.Add(1)
		go worker(viaProxy(t, a.proxyAddr, sess.Token, sess.CAPEM, true), &onA, true)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond): // a probe's period, not a wait for anything
			}
			status, body, err := b.healthz()
			if err != nil || status != http.StatusOK {
				fail(&health, fmt.Sprintf("%d %q %v", status, body, err))
			} else {
				health.ok.Add(1)
			}
		}
	}()
	stopLoad := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopLoad()

	// Under load first: both brokers serving, then the kill.
	eventually(t, time.Minute, "load through both brokers", func() bool {
		return onB.ok.Load() >= 200 && onA.ok.Load() >= 50
	})
	killed.Store(true)
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("A did not die of SIGKILL")
	}
	okAtKill := onB.ok.Load()
	// Carry on for a while after the kill, whatever B would need to
	// notice (connections, locks) has had its chance to go wrong.
	eventually(t, time.Minute, "load through B after the kill", func() bool {
		return time.Since(killedAt) > 3*time.Second && onB.ok.Load()-okAtKill >= 300
	})
	stopLoad()

	t.Logf("through B: %d requests, %d after the kill, %d failed; through A: %d before the kill, %d failed after it; B /healthz: %d probes, %d not ok",
		onB.ok.Load()+onB.failed.Load(), onB.ok.Load()-okAtKill, onB.failed.Load(), onA.ok.Load(), onA.failed.Load(),
		health.ok.Load()+health.failed.Load(), health.failed.Load())
	if n := onB.failed.Load(); n != 0 {
		t.Errorf("%d requests through B failed; the first: %s\n%s", n, onB.firstErr, b.logs.String())
	}
	if n := health.failed.Load(); n != 0 {
		t.Errorf("B's /healthz was not ok %d times; the first: %s", n, health.firstErr)
	}
	if onB.ok.Load() == okAtKill {
		t.Error("no request through B after the kill")
	}

	// B carries on alone: it writes (a session, a service) and serves.
	after := b.newSession(t, nil, "1h")
	b.putService("after-kill", map[string]any{"host": "after-kill.example", "auth": map[string]any{"type": "passthrough"}})
	if !injected(viaProxy(t, b.proxyAddr, after.Token, after.CAPEM, false), up, githubSecret) {
		t.Fatalf("a session minted on B after the kill does not work through B\n%s", b.logs.String())
	}
}

// TestClusterDatabaseOutage: PostgreSQL stops. B serves from its
// snapshot (kept-alive tunnels and new ones) until max_stale, then fails
// closed: its proxy answers 503 with a reason that names the state
// database (and closes the tunnels open then), and /healthz is degraded
// (503). PostgreSQL starts again and
// B recovers by itself: 200s, /healthz ok, and a revocation on A
// refused by B within a second, as before the outage.
func TestClusterDatabaseOutage(t *testing.T) {
	c := newCluster(t, clusterMaxStale)
	up := newUpstream(t, c.ca, true)
	drainHits(t, up)
	brokers := c.start(t, 2)
	a, b := brokers[0], brokers[1]
	a.putCredential("GITHUB_TOKEN", githubSecret)
	a.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	sess := a.newSession(t, nil, "1h")
	kept := viaProxy(t, b.proxyAddr, sess.Token, sess.CAPEM, true)
	fresh := viaProxy(t, b.proxyAddr, sess.Token, sess.CAPEM, false)
	eventually(t, 10*time.Second, "A's session, used through B", func() bool { return injected(kept, up, githubSecret) })
	target := up.URL + "/bench/outage"

	c.pg.Stop(t)
	stopped := time.Now()
	// The last answer B had may be up to a ping interval (1s) older than
	// the stop, so B must serve for at least max_stale less that.
	serveFor := clusterMaxStale - time.Second - 500*time.Millisecond
	var served int
	for time.Since(stopped) < serveFor {
		for name, cl := range map[string]*http.Client{"kept-alive": kept, "new": fresh} {
			status, body, err := fetch(cl, target)
			if since := time.Since(stopped); (err != nil || status != http.StatusOK) && since < serveFor {
				t.Fatalf("%v after the database stopped (max_stale %v), a request on a %s tunnel through B failed: %d %q %v",
					since.Round(time.Millisecond), clusterMaxStale, name, status, body, err)
			}
		}
		if status, body, err := b.healthz(); (err != nil || status != http.StatusOK) && time.Since(stopped) < serveFor {
			t.Fatalf("B's /healthz within max_stale of the outage: %d %q %v", status, body, err)
		}
		served++
		<-time.After(50 * time.Millisecond) // the pace of an agent, not a wait for anything
	}
	t.Logf("B served %d rounds of requests in the first %v of the outage", served, serveFor)

	// Past max_stale: fail closed, saying why.
	var reason string
	// The kept-alive tunnel either answers 503 or, once B has closed
	// its open connections (within a second of turning unhealthy), is
	// gone, and the agent's new CONNECT gets the 503.
	within(t, stopped, clusterMaxStale+2*time.Second, "B refusing requests once the database is gone past max_stale", func() bool {
		status, body, err := fetch(kept, target)
		if err != nil {
			status, body, err = connectStatus(b.proxyAddr, up.hostPort(), sess.Token)
		}
		reason = body
		return err == nil && status == http.StatusServiceUnavailable
	})
	mustContain(t, "B's 503 in a tunnel", reason, "state database")
	status, body, err := connectStatus(b.proxyAddr, up.hostPort(), sess.Token)
	if err != nil || status != http.StatusServiceUnavailable {
		t.Fatalf("a new CONNECT to B during the outage: %d %q %v", status, body, err)
	}
	mustContain(t, "B's 503 to a CONNECT", body, "state database")
	status, body, err = b.healthz()
	if err != nil || status != http.StatusServiceUnavailable {
		t.Fatalf("B's /healthz during the outage: %d %q %v", status, body, err)
	}
	var h struct{ Status, Reason string }
	if err := json.Unmarshal([]byte(body), &h); err != nil || h.Status != "degraded" || !strings.Contains(h.Reason, "state postgres") {
		t.Fatalf("B's /healthz during the outage: %q (%v), want degraded with a reason naming the state backend", body, err)
	}

	// The database stays down until B's change listener retries only
	// every few seconds, as after any outage longer than a moment: B
	// must not call itself healthy again before it hears changes again.
	eventually(t, 30*time.Second, "B's state listener backing off to retries seconds apart", func() bool {
		return listenerBackoff(b) >= 2*time.Second
	})

	// Back: B recovers by itself, without a restart.
	c.pg.Start(t)
	restarted := time.Now()
	eventually(t, 30*time.Second, "B serving again once the database is back", func() bool {
		status, _, err := fetch(fresh, target)
		hs, _, herr := b.healthz()
		return err == nil && status == http.StatusOK && herr == nil && hs == http.StatusOK
	})
	t.Logf("B served again %v after the database came back", time.Since(restarted).Round(time.Millisecond))
	if !injected(kept, up, githubSecret) {
		t.Fatal("B's kept-alive client does not work after the recovery")
	}
	// And B hears the cluster again: a revocation on A is refused by B
	// within the promised second once B says it is healthy.
	start := time.Now()
	a.mustAPI("DELETE", "/api/v1/sessions/"+sess.ID, nil, http.StatusNoContent, nil)
	within(t, start, propagation, "after the outage, a session revoked on A refused (407) by B", func() bool {
		status, _, err := connectStatus(b.proxyAddr, up.hostPort(), sess.Token)
		return err == nil && status == http.StatusProxyAuthRequired
	})
}

// listenerBackoff is the longest wait before a retry that s's state
// database listener (the app's, not the storage module's) has logged:
// how long a notification sent once the database is back could go
// unheard.
func listenerBackoff(s *server) time.Duration {
	var longest time.Duration
	for _, l := range s.logs.lines("LISTEN connection failed") {
		var entry struct {
			Logger  string  `json:"logger"`
			Backoff float64 `json:"backoff"` // seconds, as zap writes durations
		}
		if json.Unmarshal([]byte(l), &entry) == nil && entry.Logger == "agent_vault.state" {
			longest = max(longest, time.Duration(entry.Backoff*float64(time.Second)))
		}
	}
	return longest
}

// stateMigration is one file of caddymodule/state/migrations.
type stateMigration struct {
	version int
	name    string
	sql     string
}

// stateMigrations reads the state database's migration files from the
// source tree: the test covers every one there is, so a migration added
// later is tested from the version before it without editing the test.
func stateMigrations(t testing.TB) []stateMigration {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "caddymodule", "state", "migrations", "*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no migration files: %v", err)
	}
	name := regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+)\.sql$`)
	var out []stateMigration
	for _, f := range files {
		m := name.FindStringSubmatch(filepath.Base(f))
		if m == nil {
			t.Fatalf("migration file %s: not NNNN_name.sql", f)
		}
		v, _ := strconv.Atoi(m[1])
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, stateMigration{version: v, name: m[2], sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			t.Fatalf("migration %04d_%s: want number %04d", m.version, m.name, i+1)
		}
	}
	return out
}

// seededAt is the applied_at the test writes for the versions it
// applies itself: a broker that re-applied one would overwrite it.
const seededAt = "applied by TestStateMigrations"

// schemaAt brings an empty database to version k (0: untouched) the way
// a broker of that version left it: the first k migrations and their
// rows in agent_vault_schema. From version 1 on it also stores a service,
// in the 0001 columns, that the broker must still serve afterwards.
// newer, if set, adds a row for a version this binary does not know.
func schemaAt(t *testing.T, driver, dsn string, migs []stateMigration, k int, service []byte, newer bool) {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if k == 0 {
		return
	}
	ph := func(i int) string { return "$" + strconv.Itoa(i) }
	if driver == "sqlite" {
		ph = func(int) string { return "?" }
	}
	run := func(query string, args ...any) {
		t.Helper()
		if _, err := db.Exec(query, args...); err != nil {
			t.Fatalf("%.60s: %v", query, err)
		}
	}
	run(`CREATE TABLE agent_vault_schema (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`)
	record := "INSERT INTO agent_vault_schema (version, name, applied_at) VALUES (" + ph(1) + ", " + ph(2) + ", " + ph(3) + ")"
	for _, m := range migs[:k] {
		run(m.sql)
		run(record, m.version, m.name, seededAt)
	}
	run("INSERT INTO services (name, doc, updated_at) VALUES ("+ph(1)+", "+ph(2)+", "+ph(3)+")", "seeded", string(service), time.Now().UnixNano())
	if newer {
		run(record, len(migs)+1, "from_the_future", seededAt)
	}
}

// appliedVersions reads agent_vault_schema: version -> applied_at.
func appliedVersions(t *testing.T, driver, dsn string) map[int]string {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT version, applied_at FROM agent_vault_schema")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int]string{}
	for rows.Next() {
		var v int
		var at string
		if err := rows.Scan(&v, &at); err != nil {
			t.Fatal(err)
		}
		out[v] = at
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestStateMigrations starts a broker on a database left at every
// schema version there has been — empty, after each migration, and at
// the newest (nothing to do) — on SQLite and on PostgreSQL. The broker
// brings it to the newest version without re-applying what was there,
// keeps the data it held, and works end to end. A database at a version
// newer than the binary stops start-up with a message naming the state
// backend and both versions.
func TestStateMigrations(t *testing.T) {
	migs := stateMigrations(t)
	latest := len(migs)
	pg := pgtest.Shared(t)
	for _, backend := range []string{"sqlite", "postgres"} {
		// database returns the driver, the DSN and the broker's extra
		// environment for a fresh database of this backend.
		database := func(t *testing.T, dataDir string) (driver, dsn string, env []string) {
			if backend == "sqlite" {
				// Where Caddyfile.example's state sqlite keeps it.
				if err := os.MkdirAll(dataDir, 0o700); err != nil {
					t.Fatal(err)
				}
				return "sqlite", filepath.Join(dataDir, "state.db"), nil
			}
			dsn = pg.NewDatabase(t)
			return "pgx", dsn, []string{databaseURLVar + "=" + dsn}
		}
		for k := 0; k <= latest; k++ {
			t.Run(fmt.Sprintf("%s/from_%04d", backend, k), func(t *testing.T) {
				ca := newTestCA(t)
				up := newUpstream(t, ca, true)
				drainHits(t, up)
				dataDir := filepath.Join(t.TempDir(), "data")
				driver, dsn, env := database(t, dataDir)
				doc, _ := json.Marshal(map[string]any{"name": "seeded", "host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
				schemaAt(t, driver, dsn, migs, k, doc, false)

				s := startServer(t, ca, serverOpts{dataDir: dataDir, extraEnv: env})
				applied := appliedVersions(t, driver, dsn)
				if len(applied) != latest {
					t.Fatalf("agent_vault_schema after start: %v, want versions 1..%d", applied, latest)
				}
				for v := 1; v <= latest; v++ {
					at, ok := applied[v]
					switch {
					case !ok:
						t.Fatalf("version %d not applied: %v", v, applied)
					case v <= k && at != seededAt:
						t.Fatalf("version %d, there before the start, was applied again (%q)", v, at)
					case v > k:
						if _, err := time.Parse(time.RFC3339Nano, at); err != nil {
							t.Fatalf("version %d applied_at %q: %v", v, at, err)
						}
					}
				}
				if k == 0 {
					s.putService("seeded", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
				}
				var list struct {
					Services []struct{ Name, Host string } `json:"services"`
				}
				s.mustAPI("GET", "/api/v1/services", nil, http.StatusOK, &list)
				if len(list.Services) != 1 || list.Services[0].Name != "seeded" || list.Services[0].Host != up.hostPort() {
					t.Fatalf("services after the migration: %+v", list)
				}
				s.putCredential("GITHUB_TOKEN", githubSecret)
				sess := s.newSession(t, nil, "10m")
				if !injected(viaProxy(t, s.proxyAddr, sess.Token, sess.CAPEM, false), up, githubSecret) {
					t.Fatalf("the migrated broker does not inject\n%s", s.logs.String())
				}
				if backend == "postgres" {
					mustNotContain(t, "server log", s.logs.String(), pg.Password())
				}
			})
		}
		t.Run(backend+"/newer_than_binary", func(t *testing.T) {
			ca := newTestCA(t)
			dataDir := filepath.Join(t.TempDir(), "data")
			driver, dsn, env := database(t, dataDir)
			schemaAt(t, driver, dsn, migs, latest, []byte(`{"name":"seeded","host":"seeded.example","auth":{"type":"passthrough"}}`), true)
			s := launchServer(t, ca, serverOpts{dataDir: dataDir, extraEnv: env})
			if code := s.waitExit(); code == 0 {
				t.Fatalf("started on a database newer than the binary\n%s", s.logs.String())
			}
			want := fmt.Sprintf("state %s: the database schema is version %d, newer than this binary's %d: upgrade agent-vault", backend, latest+1, latest)
			mustContain(t, "start-up error", s.logs.String(), want)
			if applied := appliedVersions(t, driver, dsn); len(applied) != latest+1 {
				t.Fatalf("the newer database was changed: %v", applied)
			}
		})
	}
}

// TestAdaptClusterExample: with AGENT_VAULT_DATABASE_URL set,
// Caddyfile.example puts the state and Caddy's storage (the CA) in
// PostgreSQL, and the adapted JSON names the URL only as a runtime
// placeholder: its password is not in the config Caddy keeps and serves
// on its admin endpoint.
func TestAdaptClusterExample(t *testing.T) {
	const password = "pw-only-in-the-url"
	cmd := exec.Command(bin("agent-vault"), "adapt", "--config", filepath.Join(repoRoot, "Caddyfile.example"))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent",
		"AGENT_VAULT_DATA_DIR=" + t.TempDir(),
		databaseURLVar + "=postgres://av:" + password + "@db.example:5432/agentvault",
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	var cfg struct {
		Storage map[string]string `json:"storage"`
		Apps    struct {
			AgentVault struct {
				State map[string]string `json:"state"`
			} `json:"agent_vault"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("adapted JSON: %v\n%s", err, out)
	}
	const dsn = "{env." + databaseURLVar + "}"
	if cfg.Storage["module"] != "agent_vault_state" || cfg.Storage["dsn"] != dsn {
		t.Fatalf("storage: %v, want agent_vault_state with dsn %s", cfg.Storage, dsn)
	}
	if st := cfg.Apps.AgentVault.State; st["backend"] != "postgres" || st["dsn"] != dsn {
		t.Fatalf("state: %v, want postgres with dsn %s", st, dsn)
	}
	mustNotContain(t, "adapted JSON", string(out), password)
}
