// Package e2etest drives the built binaries (agent-vault, av-launch)
// with real clients against real HTTPS upstreams on loopback.
package e2etest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/pgtest"
)

// binDir holds agent-vault and av-launch: $AGENT_VAULT_BIN (make test
// sets it to ./bin) or a fresh build made by TestMain.
var binDir string

// repoRoot is the repository root, where Caddyfile.example lives.
var repoRoot string

func TestMain(m *testing.M) {
	// A child the benchmarks started: the floor MITM runs instead of
	// the tests and never returns.
	if os.Getenv(floorEnv) != "" {
		floorMain()
	}
	// Benchmarks run in a private mount namespace where the bench
	// names resolve to loopback; this re-executes the binary there (and
	// exits) unless it already is the namespaced child.
	benchNamespace()
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	binDir = os.Getenv("AGENT_VAULT_BIN")
	cleanup := func() {}
	if binDir == "" {
		dir, err := os.MkdirTemp("", "agent-vault-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cleanup = func() { os.RemoveAll(dir) }
		for _, pkg := range []string{"./caddymodule/cmd/agent-vault", "./launcher/cmd/av-launch"} {
			cmd := exec.Command("go", "build", "-o", dir, pkg)
			cmd.Dir = repoRoot
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "building binaries:", err)
				cleanup()
				os.Exit(1)
			}
		}
		binDir = dir
	}
	// pgtest.Run: the state database tests share one initdb'd template
	// (each cluster of theirs is a copy, much faster than initdb) that
	// it removes when the tests are done.
	code := pgtest.Run(m)
	cleanup()
	os.Exit(code)
}

func bin(name string) string { return filepath.Join(binDir, name) }

// testCA is the CA that signs the upstreams' certificates. The server
// process trusts it through SSL_CERT_FILE; the agent never sees it.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemPath string
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "e2e upstream test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := filepath.Join(t.TempDir(), "upstream-ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pemPath: p}
}

// leaf is an ECDSA server certificate for localhost, the loopback
// addresses and any extra DNS names.
func (ca *testCA) leaf(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     append([]string{"localhost"}, names...),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// seen is one request as an upstream received it.
type seen struct {
	Method, Path, RawQuery, Proto string
	Header                        http.Header
	// Body is the request body as received (up to 16 MiB) and
	// ContentLength the request's (-1: chunked).
	Body          string
	ContentLength int64
}

// upstream is a real HTTPS (or plain HTTP) server on loopback that
// records what it received.
type upstream struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []seen
	hit     chan seen
	sseGate chan struct{}
	conns   atomic.Int64 // client connections open now
	opened  atomic.Int64 // client connections accepted so far
}

func newUpstream(t testing.TB, ca *testCA, useTLS bool) *upstream {
	t.Helper()
	return newUpstreamNamed(t, ca, useTLS)
}

// newUpstreamNamed is newUpstream with a certificate that is also valid
// for the given DNS names.
func newUpstreamNamed(t testing.TB, ca *testCA, useTLS bool, names ...string) *upstream {
	t.Helper()
	u := &upstream{hit: make(chan seen, 1000), sseGate: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		u.record(r)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"login":"octocat"}`+"\n")
	})
	// /bench/ answers like / without recording anything, so that
	// benchmarks and load runs neither grow memory nor need a reader of
	// the hit channel.
	mux.HandleFunc("/bench/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"login":"octocat"}`+"\n")
	})
	// /echo sends the request's Authorization back: the agent must see
	// its placeholder, never the secret.
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) {
		u.record(r)
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		io.WriteString(w, "you sent: "+r.Header.Get("Authorization")+" path: "+r.URL.EscapedPath()+" query: "+r.URL.RawQuery+"\n")
	})
	// /trailer echoes Authorization in a trailer and in a 103 first.
	mux.HandleFunc("/trailer", func(w http.ResponseWriter, r *http.Request) {
		u.record(r)
		w.Header().Set("Link", "<"+r.Header.Get("Authorization")+">")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Trailer", "X-Echo")
		io.WriteString(w, "body\n")
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
	})
	// /stacked is gzip twice, one Content-Encoding line per layer: not
	// scannable (Go's transport would have decoded one layer and dropped
	// both lines).
	mux.HandleFunc("/stacked", func(w http.ResponseWriter, r *http.Request) {
		u.record(r)
		w.Header()["Content-Encoding"] = []string{"gzip", "gzip"}
		w.Write(gzipBytes(gzipBytes([]byte("you sent: " + r.Header.Get("Authorization")))))
	})
	// /gzip echoes Authorization in a gzip body: the proxy decodes it.
	mux.HandleFunc("/gzip", func(w http.ResponseWriter, r *http.Request) {
		u.record(r)
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(gzipBytes([]byte("you sent: " + r.Header.Get("Authorization"))))
	})
	// /sse sends one event, then waits for the test to open sseGate
	// before the second: the test can only open it after the first event
	// crossed the proxy, which proves the proxy streams.
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		u.record(r)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: event 1\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-u.sseGate:
		case <-r.Context().Done():
			return
		case <-time.After(30 * time.Second):
			return
		}
		io.WriteString(w, "data: event 2\n\n")
	})
	// /ws accepts a WebSocket-style upgrade and echoes raw bytes.
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		u.record(r)
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		wsEcho(conn, brw.Reader)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			u.conns.Add(1)
			u.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			u.conns.Add(-1)
		}
	}
	srv.Listener.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	if useTLS {
		srv.EnableHTTP2 = true
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, names...)}}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	u.Server = srv
	return u
}

func (u *upstream) record(r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	s := seen{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Proto: r.Proto, Header: r.Header.Clone(),
		Body: string(body), ContentLength: r.ContentLength}
	u.mu.Lock()
	u.reqs = append(u.reqs, s)
	u.mu.Unlock()
	u.hit <- s
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// last returns the last request received; it fails if there was none.
func (u *upstream) last(t testing.TB) seen {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("upstream received no request")
	}
	return u.reqs[len(u.reqs)-1]
}

func (u *upstream) hostPort() string {
	return strings.TrimPrefix(strings.TrimPrefix(u.URL, "https://"), "http://")
}

// server is a running bin/agent-vault process.
type server struct {
	t         testing.TB
	cmd       *exec.Cmd
	dataDir   string
	apiAddr   string
	proxyAddr string
	env       []string
	config    string
	logs      *logBuffer
	exited    chan struct{}
}

type serverOpts struct {
	dataDir    string
	config     string // default: the repository's Caddyfile.example
	extraEnv   []string
	noPassword bool
	// logCap, when positive, keeps only the first logCap bytes of the
	// server's output (benchmarks log a line per request).
	logCap int
	// exe, if set, is the agent-vault binary to run instead of bin's.
	exe string
	// cred, if set, runs the server as that uid/gid.
	cred *syscall.Credential
	// apiAddr and proxyAddr, if set, are the listen addresses instead of
	// free ports.
	apiAddr, proxyAddr string
}

const masterPassword = "correct horse battery staple e2e"

// freePort returns a loopback address with a port free right now, and
// never the same one twice in this process: parallel tests asking at the
// same moment could otherwise be handed one port, and the second server
// would then refuse it as in use by another instance.
func freePort(t testing.TB) string {
	t.Helper()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if _, taken := handedOut.LoadOrStore(addr, true); !taken {
			return addr
		}
	}
}

// handedOut holds the addresses freePort returned.
var handedOut sync.Map

// serverEnv is the environment the server runs with.
func serverEnv(t testing.TB, ca *testCA, o serverOpts, apiAddr, proxyAddr string) []string {
	home := t.TempDir()
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"XDG_DATA_HOME=" + filepath.Join(home, ".local", "share"),
		"AGENT_VAULT_API_ADDR=" + apiAddr,
		"AGENT_VAULT_PROXY_ADDR=" + proxyAddr,
		"AGENT_VAULT_DATA_DIR=" + o.dataDir,
		"AGENT_VAULT_ALLOW_PRIVATE_NETWORKS=127.0.0.0/8,::1/128",
		"SSL_CERT_FILE=" + ca.pemPath,
	}
	if !o.noPassword {
		env = append(env, "AGENT_VAULT_MASTER_PASSWORD="+masterPassword)
	}
	return append(env, o.extraEnv...)
}

// startServer runs agent-vault and waits until Caddy reports that it
// serves the configuration (or fails the test).
func startServer(t testing.TB, ca *testCA, o serverOpts) *server {
	t.Helper()
	for attempt := 1; ; attempt++ {
		s := launchServer(t, ca, o)
		err := s.waitReady()
		if err == nil {
			return s
		}
		// A port freePort handed out can be taken by another process
		// (an outgoing connection's local port) before the server binds
		// it: try again on fresh ports, when the test chose none.
		if attempt < 3 && o.apiAddr == "" && o.proxyAddr == "" && strings.Contains(s.logs.String(), "is already in use") {
			t.Logf("server start: a port was taken meanwhile; retrying on others")
			continue
		}
		t.Fatalf("server did not start: %v\n%s", err, s.logs.String())
	}
}

func launchServer(t testing.TB, ca *testCA, o serverOpts) *server {
	t.Helper()
	if o.dataDir == "" {
		o.dataDir = filepath.Join(t.TempDir(), "data")
	}
	if o.config == "" {
		o.config = filepath.Join(repoRoot, "Caddyfile.example")
	}
	s := &server{t: t, dataDir: o.dataDir, apiAddr: o.apiAddr, proxyAddr: o.proxyAddr, config: o.config, logs: newLogBuffer(), exited: make(chan struct{})}
	if s.apiAddr == "" {
		s.apiAddr = freePort(t)
	}
	if s.proxyAddr == "" {
		s.proxyAddr = freePort(t)
	}
	s.logs.limit = o.logCap
	s.env = serverEnv(t, ca, o, s.apiAddr, s.proxyAddr)
	exe := bin("agent-vault")
	if o.exe != "" {
		exe = o.exe
	}
	s.cmd = exec.Command(exe, "run", "--config", o.config)
	if o.cred != nil {
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred}
	}
	s.cmd.Env = s.env
	s.cmd.Stdout = s.logs
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(s.stop)
	return s
}

func (s *server) waitReady() error {
	select {
	case <-s.logs.waitFor("serving initial configuration"):
		return nil
	case <-s.exited:
		return fmt.Errorf("exited: %v", s.cmd.ProcessState)
	case <-time.After(60 * time.Second):
		return fmt.Errorf("timed out")
	}
}

func (s *server) stop() {
	defer s.checkRaces()
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// checkRaces fails the test if a race-built server (make test builds
// one) reported a data race.
func (s *server) checkRaces() {
	if logs := s.logs.String(); strings.Contains(logs, "WARNING: DATA RACE") {
		i := strings.Index(logs, "WARNING: DATA RACE")
		s.t.Errorf("the server reported a data race:\n%s", logs[i:min(len(logs), i+4000)])
	}
}

// pid is the server process's id, for reading its /proc entries.
func (s *server) pid() int { return s.cmd.Process.Pid }

// adminSocket is where Caddy's own admin endpoint listens with the
// repository's Caddyfile.example (a unix socket in the data dir).
func (s *server) adminSocket() string { return filepath.Join(s.dataDir, "caddy-admin.sock") }

func (s *server) adminToken() string {
	s.t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dataDir, "admin.token"))
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// api calls the management API and decodes a JSON answer into out (if
// non-nil). It returns the status code.
func (s *server) api(method, path string, body any, out any) int {
	s.t.Helper()
	return s.apiWithToken(s.adminToken(), method, path, body, out)
}

func (s *server) apiWithToken(token, method, path string, body any, out any) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+s.apiAddr+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := directClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			s.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

// mustAPI is api that fails the test on an unexpected status.
func (s *server) mustAPI(method, path string, body any, want int, out any) {
	s.t.Helper()
	var raw json.RawMessage
	got := s.api(method, path, body, &raw)
	if got != want {
		s.t.Fatalf("%s %s = %d %s, want %d", method, path, got, raw, want)
	}
	if out != nil {
		json.Unmarshal(raw, out)
	}
}

var directClient = &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 30 * time.Second}

// launch runs `av-launch [flags] -- argv...` against s and returns its
// output and exit code.
func (s *server) launch(flags []string, argv ...string) (stdout, stderr string, code int) {
	s.t.Helper()
	return s.launchEnv(nil, flags, argv...)
}

// launchEnv is launch with env added to av-launch's environment (a
// HOME=... there replaces the fresh temp dir).
func (s *server) launchEnv(env, flags []string, argv ...string) (stdout, stderr string, code int) {
	s.t.Helper()
	return s.launchRaw(s.t, append([]string{"HOME=" + s.t.TempDir(), "AGENT_VAULT_TOKEN=" + s.adminToken()}, env...), nil, flags, argv...)
}

// launchRaw runs `av-launch --addr <s> [flags] -- argv...` with PATH and
// env only (no token unless env has one: the data dir's agent.token
// then), as cred's user if set; t is the (sub)test it reports to.
func (s *server) launchRaw(t testing.TB, env []string, cred *syscall.Credential, flags []string, argv ...string) (stdout, stderr string, code int) {
	t.Helper()
	return s.launchFiles(t, env, cred, nil, flags, argv...)
}

// launchFiles is launchRaw with extra descriptors handed to av-launch
// (fd 3 on).
func (s *server) launchFiles(t testing.TB, env []string, cred *syscall.Credential, files []*os.File, flags []string, argv ...string) (stdout, stderr string, code int) {
	t.Helper()
	args := append([]string{"--addr", "http://" + s.apiAddr}, flags...)
	args = append(append(args, "--"), argv...)
	cmd := exec.Command(bin("av-launch"), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.ExtraFiles = files
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// logBuffer collects a process's output and tells when a line shows up.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	waiters []logWaiter
	limit   int   // if positive, output past this many bytes is dropped
	dropped int64 // bytes dropped past limit
}

type logWaiter struct {
	substr string
	ch     chan struct{}
}

func newLogBuffer() *logBuffer { return &logBuffer{} }

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limit > 0 && l.buf.Len() >= l.limit {
		l.dropped += int64(len(p))
		return len(p), nil
	}
	l.buf.Write(p)
	if len(l.waiters) > 0 {
		l.check()
	}
	return len(p), nil
}

func (l *logBuffer) check() {
	kept := l.waiters[:0]
	for _, w := range l.waiters {
		if bytes.Contains(l.buf.Bytes(), []byte(w.substr)) {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	l.waiters = kept
}

func (l *logBuffer) waitFor(substr string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch := make(chan struct{})
	l.waiters = append(l.waiters, logWaiter{substr, ch})
	l.check()
	return ch
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// lines returns the log lines containing substr.
func (l *logBuffer) lines(substr string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// gzipBytes is b gzip-compressed.
func gzipBytes(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}
