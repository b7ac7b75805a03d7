package caddymodule

// An in-process agent_vault proxy for the TestPipeline tests. Only
// newPipeline knows how the Proxy and its App are put together; the rest
// of this file and the tests speak in product terms (services, stores,
// sessions, agents, upstreams), so a refactor of the proxy's internals
// rewrites newPipeline and nothing else.

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/catalog"
	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/discovered"
	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/leafcerts"
	"github.com/agentvault/caddy-agent-vault/caddymodule/metrics"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/internal/syncbuf"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// pipelineConfig is what an operator configures, in product terms.
type pipelineConfig struct {
	services []services.Service
	// stores are the credential stores in priority order: memStore
	// values and *syncedStore for stores fed by a sync engine.
	stores []storebackends.Store
	// unmatched is the proxy's unmatched mode: "" (deny), "deny" or "tunnel".
	unmatched string
	// publicOnly refuses upstreams on private addresses, loopback
	// included, as a deployment without allow_private_networks does.
	// Otherwise 127.0.0.0/8 and ::1 are allowed so the test upstreams
	// are reachable.
	publicOnly bool
	// wildcard makes the proxy listen on every address (":0", as a
	// Caddyfile site without bind does) instead of 127.0.0.1; agents
	// still reach it at 127.0.0.1.
	wildcard bool
	// postgresDSN, if set, keeps services and sessions in that
	// PostgreSQL database (with max_stale 2s) instead of SQLite.
	postgresDSN string
	// disableActivityLog leaves the activity Recorder out of the
	// proxy's observers, as the App option disable_activity_log does.
	disableActivityLog bool
	// maxResponseBody and maxConcurrent are the proxy's
	// max_response_body and max_concurrent_per_session ("", 0: defaults).
	maxResponseBody string
	maxConcurrent   int
}

// pipeline is a running proxy plus what a test needs around it.
type pipeline struct {
	addr       string            // the proxy's listener
	agentRoots *x509.CertPool    // what agents trust: the proxy's root and the upstreams' root
	leafIssuer *x509.Certificate // signs the proxy's intercepting leaves
	logs       *syncbuf.Buffer   // the proxy's log

	// Set by newPipeline: the only ways into the proxy's internals.
	openSession     func(scope []string, ttl string) (agentSession, error)
	revokeSession   func(id string) bool
	setSessionClock func(offset time.Duration) // shifts the session registry's clock only
	setStateDown    func(err error)            // the state database's health: nil is healthy
	healthz         func() (int, string)       // the API's GET /healthz
	cleanupProxy    func()                     // Proxy.Cleanup, as Caddy calls it on a reload

	// The management API, served on its own listener.
	apiURL     string
	adminToken string
	// metricsToken reads GET /metrics and nothing else.
	metricsToken string
	// sweep runs one session sweep as the app's sweeper does (ending
	// expired sessions and lapsed leases, auditing the latter) and
	// drains the audit retry queue.
	sweep func() sessions.SweepResult
	// db is the state database, for tests that look at what is stored.
	db *state.DB
	// ids is what the API reads of it; tests may wrap it (setIDs).
	setIDs func(func(identityStore) identityStore)
	// apiWithAdminToken is the same management API configured with
	// another admin token (a config reload that changed it).
	apiWithAdminToken func(token string) http.Handler
	// failSessions makes the session registry's store fail its full
	// reads (Reload) and its revocations with err (nil: works again).
	failSessions func(reload, revoke error)
	// observed holds every entry the proxy told its observer of;
	// activity writes them to db as the app's Recorder does.
	observed *observedEntries
	activity *activity.Recorder
	// discovered is the discovered hosts' Tracker; tests Flush it.
	discovered *discovered.Tracker
	// written fires after each batch the activity Recorder stored.
	written *signal
}

// signal is a broadcast: wait's channel is closed at the next fire.
// Take it before checking the condition it announces.
type signal struct {
	mu sync.Mutex
	c  chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		s.c = make(chan struct{})
	}
	return s.c
}

func (s *signal) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		close(s.c)
		s.c = nil
	}
}

// signalWriter fires after each batch it stored.
type signalWriter struct {
	activity.Writer
	s *signal
}

func (w signalWriter) InsertActivity(ctx context.Context, es []activity.Entry) error {
	defer w.s.fire()
	return w.Writer.InsertActivity(ctx, es)
}

// observedEntries is a proxy observer that keeps what it is told.
type observedEntries struct {
	mu      sync.Mutex
	entries []activity.Entry
	added   signal
}

func (o *observedEntries) Observe(e *activity.Entry) {
	o.mu.Lock()
	o.entries = append(o.entries, *e)
	o.mu.Unlock()
	o.added.fire()
}

// all returns a copy of the entries so far.
func (o *observedEntries) all() []activity.Entry {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.entries)
}

// switchableSessions is the registry's store, whose full reads and
// revocations a test can make fail.
type switchableSessions struct {
	sessions.Store
	mu             sync.Mutex
	reload, revoke error
}

func (s *switchableSessions) All(ctx context.Context, expiredAfter time.Time) ([]sessions.Record, error) {
	s.mu.Lock()
	err := s.reload
	s.mu.Unlock()
	if err != nil {
		return nil, &stateError{err}
	}
	return s.Store.All(ctx, expiredAfter)
}

func (s *switchableSessions) Revoke(ctx context.Context, id string, at time.Time) (bool, error) {
	s.mu.Lock()
	err := s.revoke
	s.mu.Unlock()
	if err != nil {
		return false, &stateError{err}
	}
	return s.Store.Revoke(ctx, id, at)
}

// newPipeline starts a proxy configured by cfg behind a plain-HTTP
// listener on 127.0.0.1, as an agent reaches it. Everything stops when
// the test ends.
func newPipeline(t testing.TB, cfg pipelineConfig) *pipeline {
	t.Helper()
	pl := &pipeline{logs: &syncbuf.Buffer{}}
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(pl.logs), zap.DebugLevel))

	// Registered first so it runs last, once the proxy has stopped. The
	// log is JSON and a URL holds secrets escaped: look for those forms too.
	var secrets []string
	for _, st := range cfg.stores {
		for v := range maps.Values(st.Values()) {
			if len(v) < 8 {
				continue // too likely to occur by chance
			}
			var js strings.Builder
			enc := json.NewEncoder(&js)
			enc.SetEscapeHTML(false)
			enc.Encode(v)
			secrets = append(secrets, v, url.QueryEscape(v), url.PathEscape(v), strings.Trim(strings.TrimSpace(js.String()), `"`))
		}
	}
	t.Cleanup(func() {
		logs := pl.logs.String()
		for _, s := range secrets {
			if strings.Contains(logs, s) {
				t.Errorf("the proxy's log holds the secret %q:\n%s", s, logs)
			}
		}
	})

	// The app as Provision leaves it, without a data directory or the
	// pki app: a throwaway root and intermediate issue the leaves.
	allow := []string{"127.0.0.0/8", "::1/128"}
	if cfg.publicOnly {
		allow = nil
	}
	policy, err := egress.ParsePolicy(allow)
	if err != nil {
		t.Fatal(err)
	}
	proxyRoot := newRootCA(t, "pipeline agent_vault root")
	issuer := proxyRoot.intermediate(t)
	minter, err := leafcerts.New(func() ([]*x509.Certificate, crypto.Signer) {
		return []*x509.Certificate{issuer.cert}, issuer.key
	}, leafcerts.Options{Lifetime: leafcerts.DefaultLifetime})
	if err != nil {
		t.Fatal(err)
	}
	// Services and sessions live in a real SQLite state database, as
	// with the default configuration.
	db := openTestStateDB(t, logger)
	if cfg.postgresDSN != "" {
		db = openTestPostgresDB(t, logger, cfg.postgresDSN)
	}
	// The health clients see, as sharedState builds it.
	switched := &switchableHealth{db: db}
	maxStale := state.DefaultMaxStale
	if cfg.postgresDSN != "" {
		maxStale = stalePostgres
	}
	health := &dbHealth{db: switched, backend: db.Backend(), maxStale: maxStale, now: time.Now}
	var clockOffset atomic.Int64
	switchedSessions := &switchableSessions{Store: sessionStore{db}}
	registry := sessions.NewRegistry(switchedSessions)
	registry.Now = func() time.Time { return time.Now().Add(time.Duration(clockOffset.Load())) }
	cat, err := catalog.Open(context.Background(), catalogStore{db})
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range cfg.services {
		if err := cat.Put(context.Background(), svc); err != nil {
			t.Fatal(err)
		}
	}
	var stores []credentials.Store
	for i, st := range cfg.stores { // named as App.openStores names them
		name := "store" + strconv.Itoa(i)
		if n, ok := st.(storebackends.Named); ok && n.StoreName() != "" {
			name = n.StoreName()
		}
		stores = append(stores, credentials.Store{Name: name, Store: st})
	}
	creds, err := credentials.New(stores)
	if err != nil {
		t.Fatal(err)
	}
	pl.adminToken = "ava_" + strings.Repeat("0123456789abcdef", 4)
	pl.metricsToken = "metrics-" + strings.Repeat("fedcba9876543210", 2)
	// The metrics, as sharedState makes them; their sources are set
	// below, once the proxy is, as App.Start does.
	mtr := metrics.New(metrics.Sources{})
	recorder := &audit.Recorder{Store: auditStore{db}, Logger: logger.Named("audit"), Now: registry.Now}
	api := &API{logger: logger.Named("api"), deps: apiDeps{
		adminToken: pl.adminToken,
		creds:      creds, catalog: cat, sessions: registry,
		rootPEM:    func() []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: proxyRoot.cert.Raw}) },
		proxyURL:   "http://127.0.0.1:1",
		defaultTTL: defaultSessionTTL, maxTTL: defaultMaxSessionTTL, state: health,
		leaseTimeout: defaultSessionLeaseTimeout, loginTTL: defaultOperatorLoginTTL,
		ids: identityDB{db}, audit: recorder, logins: &identity.LoginLimiter{Now: registry.Now},
		now: registry.Now, activity: activityDB{db}, discovered: discoveredDB{db}, streamPoll: 20 * time.Millisecond,
		metrics: mtr, metricsToken: pl.metricsToken,
	}}
	pl.observed = &observedEntries{}
	pl.written = new(signal)
	pl.discovered = discovered.NewTracker(discoveredDB{db}, 0)
	pl.activity = activity.NewRecorder(signalWriter{activityDB{db}, pl.written}, activity.Options{BatchWait: 5 * time.Millisecond, Instance: "test-broker", Logger: logger.Named("activity")})
	api.deps.activityStats = pl.activity.Stats
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := pl.activity.Close(ctx); err != nil {
			t.Errorf("activity Recorder: %v", err)
		}
	})
	api.routes()
	registry.OnLeaseLapsed = func(ctx context.Context, s *sessions.Session) { recordLapsedLease(ctx, recorder, logger, s) }
	pl.db = db
	pl.setIDs = func(wrap func(identityStore) identityStore) { api.deps.ids = wrap(identityDB{db}) }
	pl.apiWithAdminToken = func(token string) http.Handler {
		other := &API{logger: api.logger, deps: api.deps}
		other.deps.adminToken = token
		other.routes()
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { other.ServeHTTP(w, r, nil) })
	}
	pl.failSessions = func(reload, revoke error) {
		switchedSessions.mu.Lock()
		switchedSessions.reload, switchedSessions.revoke = reload, revoke
		switchedSessions.mu.Unlock()
	}
	apiSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { api.ServeHTTP(w, r, nil) }))
	t.Cleanup(apiSrv.Close)
	pl.apiURL = apiSrv.URL
	pl.sweep = func() sessions.SweepResult {
		res, err := registry.Sweep(context.Background())
		if err != nil {
			t.Errorf("sweep: %v", err)
		}
		if err := recorder.Retry(context.Background()); err != nil {
			t.Errorf("audit retry: %v", err)
		}
		return res
	}

	// The handler as Provision builds it, around these parts. Two
	// deliberate differences: the upstream transport trusts the test
	// upstreams' root instead of the system roots, and names resolve
	// from /etc/hosts only, so no DNS query leaves the machine.
	p := &Proxy{Unmatched: UnmatchedPolicy(cfg.unmatched), MaxResponseBody: cfg.maxResponseBody, MaxConcurrentPerSession: cfg.maxConcurrent}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	// The broker's own listeners, as App.Start installs them: the
	// proxy's listener below.
	self := new(egress.Listeners)
	p.start(logger, proxyDeps{sessions: registry, services: cat, creds: creds, leaves: minter, egress: policy, self: self, state: health,
		// pl.observed last: once it holds an entry, the others have it.
		observe: append(proxyObservers(cfg.disableActivityLog, pl.activity, mtr, pl.discovered), pl.observed)})
	t.Cleanup(func() { p.Cleanup() })
	p.transport.TLSClientConfig.RootCAs = upstreamRoot(t).pool()
	p.dialer.Resolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS in tests")
	}}
	requireAllSet(t, p)
	mtr.SetSources(metrics.Sources{
		Stores:         func() []metrics.StoreState { return storeStates(creds, time.Now()) },
		SessionsActive: func() int { return activeSessions(registry, time.Now()) },
		TunnelsOpen:    p.tunnels.count,
		AuditDropped:   func() uint64 { return recorder.Stats().Dropped },
		Activity:       func() metrics.ActivityCounts { return activityCounts(pl.activity.Stats()) },
	})

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.ServeHTTP(w, r, nil)
	}))
	selfHost := "127.0.0.1"
	if cfg.wildcard {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener.Close()
		srv.Listener, selfHost = ln, "" // as ownListeners lists ":port"
	}
	srv.Start()
	t.Cleanup(srv.Close)
	proxyPort := uint16(srv.Listener.Addr().(*net.TCPAddr).Port)
	pl.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(proxyPort)))
	self.Set([]egress.Listener{{Host: selfHost, FirstPort: proxyPort, LastPort: proxyPort}})

	pl.agentRoots = x509.NewCertPool()
	pl.agentRoots.AddCert(proxyRoot.cert)
	pl.agentRoots.AddCert(upstreamRoot(t).cert)
	pl.leafIssuer = issuer.cert
	pl.openSession = func(scope []string, ttl string) (agentSession, error) {
		spec, err := api.sessionSpec(&caller{Principal: identity.AdminTokenPrincipal()}, apiwire.SessionRequest{Services: scope, TTL: ttl})
		if err != nil {
			return agentSession{}, err
		}
		s, token, err := registry.Create(context.Background(), spec)
		if err != nil {
			return agentSession{}, err
		}
		return agentSession{id: s.ID, token: token, placeholders: s.Placeholders()}, nil
	}
	pl.revokeSession = func(id string) bool {
		found, err := registry.Revoke(context.Background(), id)
		if err != nil {
			t.Errorf("revoking %s: %v", id, err)
		}
		return found
	}
	pl.setSessionClock = func(d time.Duration) { clockOffset.Store(int64(d)) }
	pl.cleanupProxy = func() { p.Cleanup() }
	pl.setStateDown = func(err error) { switched.down.Store(&err) }
	pl.healthz = func() (int, string) {
		rec := httptest.NewRecorder()
		api.health(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		return rec.Code, rec.Body.String()
	}
	// The app's sweeper checks health every second; here more often.
	guard := &healthGuard{health: health, conns: registry, log: logger}
	stopGuard := make(chan struct{})
	guardDone := make(chan struct{})
	go func() {
		defer close(guardDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopGuard:
				return
			case <-tick.C:
				guard.check()
			}
		}
	}()
	t.Cleanup(func() { close(stopGuard); <-guardDone })
	return pl
}

// switchableHealth is the state database's health, or a failure the
// test sets.
type switchableHealth struct {
	db   *state.DB
	down atomic.Pointer[error]
}

func (h *switchableHealth) Healthy() error {
	if err := h.down.Load(); err != nil && *err != nil {
		return *err
	}
	return h.db.Healthy()
}

// openTestStateDB opens a SQLite state database in a temporary
// directory, closed when the test ends.
func openTestStateDB(t testing.TB, logger *zap.Logger) *state.DB {
	t.Helper()
	db, err := state.Open(context.Background(), state.Config{Backend: StateSQLite, DSN: filepath.Join(t.TempDir(), "state.db"), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// stalePostgres is the max_stale of openTestPostgresDB: short, so a
// test sees the database go unhealthy soon after it stops.
const stalePostgres = 2 * time.Second

// openTestPostgresDB opens the PostgreSQL state database at dsn, closed
// when the test ends.
func openTestPostgresDB(t testing.TB, logger *zap.Logger, dsn string) *state.DB {
	t.Helper()
	db, err := state.Open(context.Background(), state.Config{Backend: StatePostgres, DSN: dsn, Logger: logger, MaxStale: stalePostgres})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// requireAllSet fails when a pointer-like field of the Proxy is unset:
// if Provision starts setting up something new, newPipeline must too.
func requireAllSet(t testing.TB, p *Proxy) {
	t.Helper()
	v := reflect.ValueOf(p).Elem()
	for i := 0; i < v.NumField(); i++ {
		switch f := v.Field(i); f.Kind() {
		case reflect.Pointer, reflect.Func, reflect.Map, reflect.Chan, reflect.Interface:
			if f.IsNil() {
				t.Fatalf("newPipeline left Proxy.%s unset: mirror what Provision does", v.Type().Field(i).Name)
			}
		}
	}
}

// memStore is a credential store without a sync engine: always fresh.
type memStore struct {
	name   string
	values map[string]string
}

func (s memStore) StoreName() string { return s.name }

func (s memStore) List() []storebackends.Meta {
	var out []storebackends.Meta
	for _, name := range slices.Sorted(maps.Keys(s.values)) {
		out = append(out, storebackends.Meta{Name: name, Store: s.name, Version: "1"})
	}
	return out
}

func (s memStore) Values() map[string]string { return maps.Clone(s.values) }

// syncedStore is a store fed by a sync engine; the test decides whether
// it is past its max_staleness.
type syncedStore struct {
	memStore
	mu    sync.Mutex
	stale error
}

func newSyncedStore(name string, values map[string]string) *syncedStore {
	return &syncedStore{memStore: memStore{name: name, values: values}}
}

// setStale makes Fresh return err (nil: fresh again).
func (s *syncedStore) setStale(err error) {
	s.mu.Lock()
	s.stale = err
	s.mu.Unlock()
}

func (s *syncedStore) Fresh(time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stale
}

func (s *syncedStore) Start()             {}
func (s *syncedStore) Stop()              {}
func (s *syncedStore) SetOnChange(func()) {}
func (s *syncedStore) Health(time.Time) storebackends.StoreStatus {
	return storebackends.StoreStatus{Store: s.name}
}
func (s *syncedStore) LastSync() time.Time { return time.Time{} }

// agentSession is what av-launch hands an agent.
type agentSession struct {
	id           string
	token        string
	placeholders map[string]string // credential -> placeholder
}

// ph returns the session's placeholder for a credential.
func (s agentSession) ph(t testing.TB, cred string) string {
	t.Helper()
	ph, ok := s.placeholders[cred]
	if !ok {
		t.Fatalf("session has no placeholder for %s (it has %v)", cred, s.placeholders)
	}
	return ph
}

// session opens a ten-minute session for the named services (none: all).
func (pl *pipeline) session(t testing.TB, scope ...string) agentSession {
	t.Helper()
	return pl.sessionFor(t, "10m", scope...)
}

// sessionFor opens a session lasting ttl (a Caddy duration).
func (pl *pipeline) sessionFor(t testing.TB, ttl string, scope ...string) agentSession {
	t.Helper()
	s, err := pl.openSession(scope, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// revoke ends a session as DELETE /api/v1/sessions/{id} does.
func (pl *pipeline) revoke(t testing.TB, s agentSession) {
	t.Helper()
	if !pl.revokeSession(s.id) {
		t.Fatalf("no session %s to revoke", s.id)
	}
}

// agent returns an HTTP client configured the way av-launch configures
// an agent: the proxy with the session token as its password, and the
// proxy's CA trusted (the upstreams' root too, so a relayed tunnel is
// verifiable). h2 offers HTTP/2 inside tunnels.
func (pl *pipeline) agent(t testing.TB, s agentSession, h2 bool) *http.Client {
	proxyURL := &url.URL{Scheme: "http", Host: pl.addr, User: url.UserPassword("av", s.token)}
	tr := &http.Transport{
		Proxy:             http.ProxyURL(proxyURL),
		TLSClientConfig:   &tls.Config{RootCAs: pl.agentRoots},
		ForceAttemptHTTP2: h2,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second, // a bound on a broken test, not a wait
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// basicAuth is the Proxy-Authorization an agent sends for a token.
func basicAuth(token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("av:"+token))
}

// raw sends request text to the proxy on a new connection and reads the
// answer. The connection stays open: after a 200 to a CONNECT it is the
// tunnel.
func (pl *pipeline) raw(t testing.TB, method, text string) (answer, net.Conn) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", pl.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a bound on a broken test, not a wait
	if _, err := io.WriteString(conn, text); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s to the proxy: %v", method, err)
	}
	if method == http.MethodConnect && resp.StatusCode == http.StatusOK {
		if br.Buffered() > 0 {
			t.Fatal("CONNECT: bytes after the 200")
		}
		return answer{status: resp.StatusCode, header: resp.Header}, conn
	}
	return readAnswer(t, resp), conn
}

// connect sends a raw CONNECT for target with the given
// Proxy-Authorization ("" sends none).
func (pl *pipeline) connect(t testing.TB, target, proxyAuth string) (answer, net.Conn) {
	t.Helper()
	text := fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if proxyAuth != "" {
		text += "Proxy-Authorization: " + proxyAuth + "\r\n"
	}
	return pl.raw(t, http.MethodConnect, text+"\r\n")
}

// askInTunnel CONNECTs to target with proxyAuth, expects the tunnel to
// open, and sends GET / inside it (trusting the proxy's CA): what an
// agent sees of a host the proxy refuses in the tunnel.
func (pl *pipeline) askInTunnel(t testing.TB, target, proxyAuth string, headers ...string) answer {
	t.Helper()
	a, conn := pl.connect(t, target, proxyAuth)
	if a.status != http.StatusOK {
		t.Fatalf("CONNECT %s: %d %s", target, a.status, a.body)
	}
	host, _, _ := net.SplitHostPort(target)
	tc := &tunnelClient{t: t, conn: tls.Client(conn, &tls.Config{ServerName: host, RootCAs: pl.agentRoots}), host: target}
	tc.br = bufio.NewReader(tc.conn)
	got, err := tc.send("GET", "/", target, headers...)
	if err != nil {
		t.Fatalf("GET / in the tunnel to %s: %v", target, err)
	}
	return got
}

// openTunnel opens an intercepted tunnel to an IP target (so no SNI) and
// starts TLS in it, trusting the proxy's CA.
func (pl *pipeline) openTunnel(t testing.TB, s agentSession, target string) *tunnelClient {
	t.Helper()
	a, conn := pl.connect(t, target, basicAuth(s.token))
	if a.status != http.StatusOK {
		t.Fatalf("CONNECT %s: %d %s", target, a.status, a.body)
	}
	host, _, _ := net.SplitHostPort(target)
	tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: pl.agentRoots})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS in the tunnel to %s: %v", target, err)
	}
	return &tunnelClient{t: t, conn: tc, br: bufio.NewReader(tc), host: target}
}

// tunnelClient speaks HTTP/1.1 by hand inside a tunnel, so a test
// controls the request line and Host header exactly.
type tunnelClient struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
	host string // the CONNECT target
}

// send writes one request (request target and Host as given, extra
// header lines "Name: value") and reads the answer.
func (c *tunnelClient) send(method, requestTarget, host string, headers ...string) (answer, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, requestTarget, host)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c.conn, b.String()); err != nil {
		return answer{}, err
	}
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		return answer{}, err
	}
	return readAnswer(c.t, resp), nil
}

// get is send for a GET that must get an answer.
func (c *tunnelClient) get(requestTarget, host string, headers ...string) answer {
	c.t.Helper()
	a, err := c.send(http.MethodGet, requestTarget, host, headers...)
	if err != nil {
		c.t.Fatalf("GET %s in the tunnel: %v", requestTarget, err)
	}
	return a
}

// answer is what the agent received.
type answer struct {
	status  int
	header  http.Header
	trailer http.Header
	body    string
	length  int64 // Content-Length as received; -1 when unknown (chunked)
	proto   string
	tls     *tls.ConnectionState
}

func readAnswer(t testing.TB, resp *http.Response) answer {
	t.Helper()
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, trailer: resp.Trailer, body: string(body),
		length: resp.ContentLength, proto: resp.Proto, tls: resp.TLS}
}

// do sends req with an agent's client and reads the answer.
func do(t testing.TB, c *http.Client, req *http.Request) answer {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	return readAnswer(t, resp)
}

// newRequest builds a GET with extra headers given as name, value pairs.
func newRequest(t testing.TB, rawURL string, header ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return req
}

// get is do for a plain GET.
func get(t testing.TB, c *http.Client, rawURL string, header ...string) answer {
	t.Helper()
	return do(t, c, newRequest(t, rawURL, header...))
}

// wantRefusal checks an answer is the proxy's own refusal with the given
// status and reason fragments.
func wantRefusal(t testing.TB, a answer, status int, fragments ...string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d; body %q", a.status, status, a.body)
	}
	if a.header.Get("X-Agent-Vault-Refusal") == "" || !strings.HasPrefix(a.body, "agent-vault: ") {
		t.Fatalf("not a proxy refusal: header %v, body %q", a.header, a.body)
	}
	for _, f := range fragments {
		if !strings.Contains(a.body, f) {
			t.Errorf("refusal %q does not say %q", a.body, f)
		}
	}
}

// wantStatus checks an answer that is not a refusal.
func wantStatus(t testing.TB, a answer, status int) {
	t.Helper()
	if a.status != status || a.header.Get("X-Agent-Vault-Refusal") != "" {
		t.Fatalf("status %d (refused=%q), want %d from the upstream; body %q", a.status, a.header.Get("X-Agent-Vault-Refusal"), status, a.body)
	}
}

// upstream is a test server the proxy forwards to; it records what it
// received.
type upstream struct {
	hostPort string            // 127.0.0.1:port
	cert     *x509.Certificate // its leaf; nil for cleartext
	dials    atomic.Int64      // connections accepted

	mu   sync.Mutex
	reqs []seenRequest
}

// seenRequest is one request as the upstream received it.
type seenRequest struct {
	method, host, path, rawQuery string // path is the escaped path
	header                       http.Header
	body                         string
}

// upstreamTLS starts an HTTPS upstream whose certificate every
// pipeline's proxy trusts. h answers after the request is recorded; nil
// answers "upstream ok".
func upstreamTLS(t testing.TB, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	srv := httptest.NewUnstartedServer(u.handler(h))
	leaf := upstreamRoot(t).serverCert(t, "127.0.0.1", "::1", "localhost")
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}}
	u.start(t, srv, true)
	u.cert = leaf.Leaf
	return u
}

// upstreamHTTP starts a cleartext upstream.
func upstreamHTTP(t testing.TB, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.start(t, httptest.NewUnstartedServer(u.handler(h)), false)
	return u
}

var (
	upstreamCAOnce sync.Once
	upstreamCA     *testCA
)

// upstreamRoot is the root of the upstreams' certificates, standing in
// for the public CAs a real upstream uses.
func upstreamRoot(t testing.TB) *testCA {
	upstreamCAOnce.Do(func() { upstreamCA = newRootCA(t, "pipeline upstream root") })
	return upstreamCA
}

func (u *upstream) start(t testing.TB, srv *httptest.Server, useTLS bool) {
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.dials.Add(1)
		}
	}
	srv.Config.ErrorLog = nil
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	u.hostPort = srv.Listener.Addr().String()
}

func (u *upstream) handler(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, seenRequest{method: r.Method, host: r.Host, path: r.URL.EscapedPath(),
			rawQuery: r.URL.RawQuery, header: r.Header.Clone(), body: string(body)})
		u.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		if h == nil {
			io.WriteString(w, "upstream ok")
			return
		}
		h(w, r)
	}
}

// requests returns what the upstream has received so far.
func (u *upstream) requests() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.reqs)
}

// last returns the latest request, failing if there was none.
func (u *upstream) last(t testing.TB) seenRequest {
	t.Helper()
	reqs := u.requests()
	if len(reqs) == 0 {
		t.Fatalf("upstream %s received nothing", u.hostPort)
	}
	return reqs[len(reqs)-1]
}

// wantNothing fails if the upstream received any request.
func (u *upstream) wantNothing(t testing.TB) {
	t.Helper()
	if reqs := u.requests(); len(reqs) > 0 {
		t.Fatalf("upstream %s received %d request(s), want none; first: %s %s %v", u.hostPort, len(reqs), reqs[0].method, reqs[0].path, reqs[0].header)
	}
}

func (u *upstream) https(path string) string { return "https://" + u.hostPort + path }
func (u *upstream) http(path string) string  { return "http://" + u.hostPort + path }

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newRootCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := newECKey(t)
	tmpl := caTemplate(t, name)
	return &testCA{cert: signCert(t, tmpl, tmpl, &key.PublicKey, key), key: key}
}

// intermediate issues a CA under ca, as Caddy's pki app keeps one.
func (ca *testCA) intermediate(t testing.TB) *testCA {
	t.Helper()
	key := newECKey(t)
	tmpl := caTemplate(t, ca.cert.Subject.CommonName+" intermediate")
	tmpl.MaxPathLenZero = true
	return &testCA{cert: signCert(t, tmpl, ca.cert, &key.PublicKey, ca.key), key: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// serverCert issues a TLS server certificate for the given names and IPs.
func (ca *testCA) serverCert(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	key := newECKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: randomSerialNumber(t),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	leaf := signCert(t, tmpl, ca.cert, &key.PublicKey, ca.key)
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

func caTemplate(t testing.TB, name string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          randomSerialNumber(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func signCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func randomSerialNumber(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
