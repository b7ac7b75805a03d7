// Package vaulttest runs a real HashiCorp Vault dev server for tests.
//
// The server is the genuine Vault, built from the separate testvault
// module (see Binary) and started per test in dev mode: in-memory
// storage, already initialized and unsealed, KV v2 mounted at "secret/",
// listening on a free loopback port with a random root token. Nothing is
// skipped when the binary is missing: it is built, which takes about ten
// minutes once, so either run `make vault-test-server` first or give
// `go test` a -timeout above its 10 minute default.
//
// Because dev storage is in memory, a restarted server would have lost
// all data; outage tests use Pause and Resume instead, which freeze the
// process so that clients hang and time out like against an unreachable
// Vault.
package vaulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

const (
	// readyTimeout bounds how long a fresh server may take to serve.
	readyTimeout = 60 * time.Second
	// stopGrace is how long the server gets to exit after SIGTERM.
	stopGrace = 10 * time.Second
	// startAttempts covers losing a race for the free ports.
	startAttempts = 3
	// maxOutput caps the server output kept for failure messages.
	maxOutput = 1 << 20
)

// Server is a running Vault dev server owned by one test.
type Server struct {
	// Addr is the server's base URL, http://127.0.0.1:PORT.
	Addr string
	// RootToken is the dev server's root token.
	RootToken string
	// Client is an API client using RootToken. It ignores the VAULT_*
	// and proxy environment, retries nothing and times out after 30s.
	Client *api.Client

	cmd    *exec.Cmd
	output *tailBuffer
	exited chan struct{} // closed once the process has been reaped
	err    error         // the process's exit status, set before exited closes
	stop   sync.Once
}

// Start builds (if needed) and starts a Vault dev server, waits until it
// serves, and stops it when the test ends. It fails the test on any
// error; it never skips.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	token := randomToken(t)
	home := t.TempDir()
	for attempt := 1; ; attempt++ {
		s, err := launch(t, bin, token, home)
		if err == nil {
			return s
		}
		if attempt < startAttempts && errors.Is(err, errPortTaken) {
			continue
		}
		t.Fatalf("vaulttest: %v", err)
	}
}

// errPortTaken marks a start that lost the race for its ports.
var errPortTaken = errors.New("port already in use")

// launch starts one server process and waits for it to be ready. On
// error the process has been stopped.
func launch(t testing.TB, bin, token, home string) (*Server, error) {
	port, err := freePortPair()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{
		Addr:      "http://" + addr,
		RootToken: token,
		output:    &tailBuffer{max: maxOutput},
		exited:    make(chan struct{}),
	}
	s.Client, err = newClient(s.Addr, token)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "server", "-dev",
		"-dev-listen-address="+addr,
		"-dev-root-token-id="+token,
		"-dev-no-store-token",
	)
	s.cmd.Env = childEnv(home)
	s.cmd.Dir = home
	s.cmd.Stdout = s.output
	s.cmd.Stderr = s.output
	s.cmd.SysProcAttr = dieWithParent()
	// Do not let an inherited output pipe keep Wait from returning.
	s.cmd.WaitDelay = time.Second
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()

	if err := s.waitReady(); err != nil {
		s.kill()
		out := s.output.Bytes()
		if bytes.Contains(out, []byte("address already in use")) {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return nil, fmt.Errorf("%w\nserver output:\n%s", err, redact(out, token))
	}
	t.Cleanup(func() {
		if err := s.kill(); err != nil {
			t.Errorf("vaulttest: stopping server: %v", err)
		}
	})
	return s, nil
}

// waitReady waits until the server is unsealed and its KV v2 mount
// serves (a fresh KV v2 mount briefly refuses requests while it sets
// itself up).
func (s *Server) waitReady() error { return s.poll(s.probe) }

// poll calls probe with a short backoff until it succeeds, the process
// exits, or readyTimeout passes.
func (s *Server) poll(probe func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	backoff := 20 * time.Millisecond
	for {
		err := probe(ctx)
		if err == nil {
			return nil
		}
		timer := time.NewTimer(backoff)
		select {
		case <-s.exited:
			timer.Stop()
			return fmt.Errorf("vault server exited: %v", s.err)
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("vault server not ready after %v: %w", readyTimeout, err)
		case <-timer.C:
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

func (s *Server) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	h, err := s.Client.Sys().HealthWithContext(ctx)
	if err != nil {
		return err
	}
	if !h.Initialized || h.Sealed || h.Standby {
		return fmt.Errorf("not active yet: initialized=%t sealed=%t standby=%t", h.Initialized, h.Sealed, h.Standby)
	}
	_, err = s.Client.Logical().ReadWithContext(ctx, "secret/config")
	return err
}

// kill stops the process: SIGTERM, then SIGKILL if it has not exited
// after stopGrace. It is idempotent.
func (s *Server) kill() error {
	var err error
	s.stop.Do(func() {
		select {
		case <-s.exited:
			return
		default:
		}
		p := s.cmd.Process
		p.Signal(syscall.SIGCONT) // a paused process cannot handle SIGTERM
		p.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
			return
		case <-time.After(stopGrace):
		}
		p.Kill()
		select {
		case <-s.exited:
			err = fmt.Errorf("vault server ignored SIGTERM for %v and was killed", stopGrace)
		case <-time.After(stopGrace):
			err = fmt.Errorf("vault server (pid %d) did not exit after SIGKILL", p.Pid)
		}
	})
	return err
}

// Stop shuts the server down for good, so clients get "connection
// refused". The data is gone: dev storage is in memory and there is no
// restart.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.kill(); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
}

// Pause freezes the server process (SIGSTOP). The kernel still accepts
// TCP connections for it, but nothing answers, so clients hang until
// their timeout: the realistic shape of a Vault outage. Undo with Resume;
// cleanup resumes a paused server before stopping it.
//
// It returns once every thread of the server is stopped: kill(2)
// returns before the stop has reached a process running on another CPU,
// and a request sent in between would still be answered.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGSTOP)
	deadline := time.Now().Add(10 * time.Second)
	for !s.allStopped() {
		if time.Now().After(deadline) {
			t.Fatal("vaulttest: the server did not stop within 10s of SIGSTOP")
		}
		time.Sleep(time.Millisecond) // poll interval on /proc, not synchronization
	}
}

// allStopped reports whether every thread of the server is in the
// stopped state (T in /proc/PID/task/TID/stat).
func (s *Server) allStopped() bool {
	dir := "/proc/" + strconv.Itoa(s.cmd.Process.Pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(dir + "/" + task.Name() + "/stat")
		if err != nil {
			return false
		}
		// pid (comm) state ...: the state follows the last ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) || stat[i+2] != 'T' {
			return false
		}
	}
	return true
}

// Resume continues a server frozen by Pause (SIGCONT), with its data
// intact.
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGCONT)
}

func (s *Server) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	select {
	case <-s.exited:
		t.Fatalf("vaulttest: cannot send %v: the server has exited (%v)", sig, s.err)
	default:
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("vaulttest: sending %v: %v", sig, err)
	}
}

// Output returns the server's output so far (capped to the last MiB),
// with the root token redacted.
func (s *Server) Output() string {
	return redact(s.output.Bytes(), s.RootToken)
}

// NewClient returns a fresh API client for the server that uses token
// (none if empty). Like Server.Client it ignores the VAULT_* and proxy
// environment, does not retry and times out after 30s; change that with
// SetClientTimeout and SetMaxRetries.
func (s *Server) NewClient(t testing.TB, token string) *api.Client {
	t.Helper()
	c, err := newClient(s.Addr, token)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return c
}

// newClient configures a client explicitly: api.DefaultConfig would pick
// up VAULT_ADDR, VAULT_TOKEN and the HTTP(S)_PROXY settings of whoever
// runs the tests.
func newClient(addr, token string) (*api.Client, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	c, err := api.NewClient(&api.Config{
		Address: addr,
		HttpClient: &http.Client{
			Transport: transport,
			// Vault's client handles redirects itself.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Timeout:    30 * time.Second,
		MaxRetries: 0,
	})
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	// api.NewClient still reads VAULT_TOKEN, VAULT_NAMESPACE and
	// VAULT_HEADERS; replace all three.
	c.SetHeaders(http.Header{api.RequestHeaderName: {"true"}})
	if token == "" {
		c.ClearToken()
	} else {
		c.SetToken(token)
	}
	return c, nil
}

// childEnv is the test's environment without any VAULT_* setting and
// with HOME in a temporary directory, so the server never sees or
// touches the developer's Vault configuration or ~/.vault-token.
func childEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home)
}

// freePortPair returns a loopback port p such that p and p+1 are both
// free: a dev server also listens for cluster traffic on p+1.
func freePortPair() (int, error) {
	var lastErr error
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		next, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1)))
		l.Close()
		if err == nil {
			next.Close()
			return port, nil
		}
		lastErr = err
	}
	return 0, fmt.Errorf("finding two consecutive free ports: %w", lastErr)
}

func randomToken(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return "root-" + hex.EncodeToString(b)
}

// redact hides the root token in server output: dev mode prints it.
func redact(out []byte, token string) string {
	return string(bytes.ReplaceAll(out, []byte(token), []byte("<root-token>")))
}

// tailBuffer is a concurrency-safe writer that keeps the last max bytes.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

// Bytes returns a copy of the kept output.
func (b *tailBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf)
}
