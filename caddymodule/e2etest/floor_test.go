package e2etest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The floor is the least a Go MITM proxy has to do for the benchmark's
// requests, to tell the proxy's own costs from those of the job: accept
// CONNECT, hijack, terminate TLS with one cached ECDSA leaf, serve the
// tunnel with net/http and forward with httputil.ReverseProxy over a
// pooled HTTP/1.1 upstream transport, setting one header (the bearer).
// There is no authentication, matching, redaction or logging. It runs
// as a separate process (this test binary re-executed with floorEnv) so
// that its CPU time is read from /proc exactly like the server's.

// floorEnv names the floor's config file in the child's environment.
const floorEnv = "AGENT_VAULT_E2E_FLOOR"

// floorConfig is what the benchmark hands the floor process.
type floorConfig struct {
	CertDER       []byte `json:"cert_der"`        // the leaf the tunnels present
	KeyDER        []byte `json:"key_der"`         // PKCS #8
	UpstreamCADER []byte `json:"upstream_ca_der"` // trust for the upstream
	Authorization string `json:"authorization"`   // the one header set
}

// floorMain is the floor process. It prints "floor listening ADDR" once
// it accepts connections and serves until it is signalled.
func floorMain() {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	raw, err := os.ReadFile(os.Getenv(floorEnv))
	if err != nil {
		fail(err)
	}
	var cfg floorConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		fail(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(cfg.KeyDER)
	if err != nil {
		fail(err)
	}
	ca, err := x509.ParseCertificate(cfg.UpstreamCADER)
	if err != nil {
		fail(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	leaf := tls.Certificate{Certificate: [][]byte{cfg.CertDER}, PrivateKey: key}
	tunnelTLS := &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12}
	quiet := log.New(io.Discard, "", 0)

	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "https"
			pr.Out.URL.Host = pr.In.Host
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set("Authorization", cfg.Authorization)
		},
		Transport: &http.Transport{
			Proxy:               nil,
			TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2:   false,
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		},
		// The cheap fix any Go proxy makes: no 32 KiB buffer per response.
		BufferPool: floorBuffers{},
		ErrorLog:   quiet,
	}
	tunnels := &chanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
	inner := &http.Server{Handler: rp, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: quiet}
	go inner.Serve(tunnels)

	outer := &http.Server{ErrorLog: quiet, ReadHeaderTimeout: 30 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			// Not on the measured path: lets the benchmark profile the
			// floor as it profiles the server.
			if r.Method == http.MethodGet && r.URL.Path == "/debug/pprof/profile" {
				pprof.Profile(w, r)
				return
			}
			http.Error(w, "floor: CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		conn.SetDeadline(time.Time{})
		if brw.Reader.Buffered() > 0 {
			conn = &prefixedConn{Conn: conn, r: io.MultiReader(brw.Reader, conn)}
		}
		if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
			conn.Close()
			return
		}
		tunnels.push(tls.Server(conn, tunnelTLS))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; os.Exit(0) }()
	fmt.Printf("floor listening %s\n", ln.Addr())
	fail(outer.Serve(ln))
}

type floorBuffers struct{}

var floorBufPool = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (floorBuffers) Get() []byte  { return floorBufPool.Get().(*[32 << 10]byte)[:] }
func (floorBuffers) Put(b []byte) { floorBufPool.Put((*[32 << 10]byte)(b)) }

type prefixedConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// chanListener hands hijacked tunnel connections to an http.Server.
type chanListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// floorProc is a running floor.
type floorProc struct {
	addr  string
	pid   int
	roots *x509.CertPool // trusts the floor's leaf
}

// startFloor starts the floor for an upstream reached by the given
// names, trusting upstreamCA, setting authorization on every request.
func startFloor(t testing.TB, upstreamCA *testCA, authorization string, names ...string) *floorProc {
	t.Helper()
	ca := newTestCA(t) // the floor's own MITM CA
	leaf := ca.leaf(t, names...)
	keyDER, err := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(floorConfig{CertDER: leaf.Certificate[0], KeyDER: keyDER, UpstreamCADER: upstreamCA.cert.Raw, Authorization: authorization})
	path := filepath.Join(t.TempDir(), "floor.json")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), floorEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "floor listening "); ok {
				addrCh <- a
			}
		}
		cmd.Wait()
		close(exited)
	}()
	select {
	case a := <-addrCh:
		pool := x509.NewCertPool()
		pool.AddCert(ca.cert)
		return &floorProc{addr: a, pid: cmd.Process.Pid, roots: pool}
	case <-exited:
		t.Fatalf("floor exited: %v", cmd.ProcessState)
	case <-time.After(30 * time.Second):
		t.Fatal("floor did not start")
	}
	return nil
}
