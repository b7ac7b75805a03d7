// Package pgtest starts private PostgreSQL clusters for tests, so the
// state database is tested against the real server and not a fake: one
// cluster per Start, in its own temporary directory, on a free loopback
// port, with password (scram-sha-256) authentication so that DSNs carry
// a password the way production ones do.
//
// A test package that only needs a database calls Shared (one cluster
// for the whole package, a fresh database per test) and runs its tests
// through Main. A test that stops, kills or restarts the server calls
// Start and gets a cluster of its own.
//
// initdb and postgres refuse to run as root, so as root the cluster runs
// as the "postgres" system user (Debian's postgresql package creates
// it). Without the binaries the test is skipped through
// testenv.Unavailable (a failure in the strict run, where `make deps`
// has installed them).
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agentvault/caddy-agent-vault/internal/testenv"
)

// BinDirVar names a directory holding initdb and postgres, overriding
// the search of /usr/lib/postgresql/*/bin and PATH.
const BinDirVar = "AGENT_VAULT_PG_BINDIR"

// superuser is the cluster's only role; every DSN logs in as it.
const superuser = "pgtest"

// startTimeout bounds how long a postmaster may take to accept
// connections (a few hundred milliseconds normally; crash recovery after
// Kill takes longer).
const startTimeout = 30 * time.Second

// Server is one private PostgreSQL cluster. Its methods fail the test
// they are given on error.
type Server struct {
	root     string // the cluster's directory: data/, the socket, log
	bin      string
	port     int
	password string
	dbname   string // the database DSN points at
	cred     *account
	shared   bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// Start initialises and starts a new cluster that belongs to t: t's
// cleanup shuts it down (immediate mode: nothing of it needs to
// survive) and removes its directory. The cluster has a database of its
// own that DSN points at.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := newServer(false)
	if err != nil {
		fail(t, err)
		return nil
	}
	t.Cleanup(s.destroy)
	return s
}

// DSN returns the URL of the server's database, with the password:
// postgres://pgtest:PASSWORD@127.0.0.1:PORT/DB?sslmode=disable.
func (s *Server) DSN() string { return s.dsnFor(s.dbname) }

// Port returns the loopback TCP port the server listens on; it stays
// the same across Stop, Start and Kill.
func (s *Server) Port() int { return s.port }

// Password returns the password every DSN carries, so a test can check
// that an error message does not repeat it.
func (s *Server) Password() string { return s.password }

// NewDatabase creates an empty database with a name unique in this
// process and returns its DSN; t's cleanup drops it again. It gives
// each test on a shared server its own schema and data.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := uniqueName(t.Name())
	if err := s.admin(context.Background(), "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		// WITH (FORCE) ends sessions a failed test left open; an error
		// (the server was stopped by the test) leaves the database to
		// the cluster's own removal.
		_ = s.admin(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	return s.dsnFor(name)
}

// Stop shuts the server down cleanly (fast mode: open sessions are
// ended) and waits for it to exit. Start brings it back on the same port
// with the same data.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if !s.mustOwn(t) {
		return
	}
	if err := s.signalAndWait(syscall.SIGINT); err != nil {
		t.Fatalf("pgtest: stop: %v", err)
	}
}

// Kill sends SIGKILL to the postmaster, as a crash would, and waits for
// it to exit. Its backends notice and exit on their own; Start then runs
// crash recovery.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if !s.mustOwn(t) {
		return
	}
	if err := s.signalAndWait(syscall.SIGKILL); err != nil {
		t.Fatalf("pgtest: kill: %v", err)
	}
}

// Start starts a stopped or killed server again on the same port and
// waits until it accepts connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if !s.mustOwn(t) {
		return
	}
	if err := s.start(false); err != nil {
		t.Fatalf("pgtest: start: %v", err)
	}
}

// Restart is Stop then Start.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop(t)
	s.Start(t)
}

// mustOwn refuses to stop the shared server, which other tests use.
func (s *Server) mustOwn(t testing.TB) bool {
	t.Helper()
	if s.shared {
		t.Fatalf("pgtest: the shared server cannot be stopped or restarted: use pgtest.Start for a server of your own")
		return false
	}
	return true
}

// errUnavailable marks a machine without PostgreSQL, as opposed to a
// cluster that failed to start.
type errUnavailable struct{ msg string }

func (e errUnavailable) Error() string { return e.msg }

// fail reports err on t: a skip (or strict failure) for a missing
// PostgreSQL, a failure otherwise.
func fail(t testing.TB, err error) {
	t.Helper()
	var u errUnavailable
	if errors.As(err, &u) {
		testenv.Unavailable(t, "pgtest: %s", u.msg)
		return
	}
	t.Fatalf("pgtest: %v", err)
}

// newServer makes and starts a cluster, returning it only once it
// accepts connections and has its database.
func newServer(shared bool) (s *Server, err error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	// Not t.TempDir: under root the postgres user could not traverse
	// it. The base is traversable and the directory itself is 0700.
	root, err := makeDir("cluster")
	if err != nil {
		return nil, err
	}
	s = &Server{root: root, bin: bin, cred: cred, shared: shared, dbname: "test"}
	defer func() {
		if err != nil {
			s.destroy()
		}
	}()
	if err := s.own(root); err != nil {
		return nil, err
	}
	data := filepath.Join(root, "data")
	tmpl, password, err := template(bin, cred)
	switch {
	case err != nil:
		return nil, err
	case tmpl != "":
		s.password = password
		if err := copyTree(tmpl, data, cred); err != nil {
			return nil, fmt.Errorf("copy the template cluster: %w", err)
		}
	default:
		s.password = newPassword()
		if err := initdb(bin, root, data, s.password, cred); err != nil {
			return nil, err
		}
	}
	if err := s.start(true); err != nil {
		return nil, err
	}
	if err := s.admin(context.Background(), "CREATE DATABASE "+s.dbname); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	return s, nil
}

// dsnFor is the URL of database db, password included.
func (s *Server) dsnFor(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(superuser, s.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// admin runs one statement in the maintenance database.
func (s *Server) admin(ctx context.Context, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.dsnFor("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// start runs the postmaster and waits until it is ready. pickPort
// chooses a new free port (the first start, or a retry after a port
// race); otherwise the server must come back on its port.
func (s *Server) start(pickPort bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("the server is already running")
	}
	deadline := time.Now().Add(startTimeout)
	for attempt := 0; ; attempt++ {
		if pickPort {
			port, err := freePort()
			if err != nil {
				return err
			}
			s.port = port
		}
		err := s.startOnce(deadline)
		if err == nil {
			return nil
		}
		var r errRetry
		if !errors.As(err, &r) || time.Now().After(deadline) || attempt > 200 {
			return err
		}
		// The port was taken between freePort and the bind, or after a
		// Kill the old backends still hold the shared memory: try again.
		pickPort = pickPort && r.port
		time.Sleep(50 * time.Millisecond)
	}
}

// errRetry is a start that failed for a passing reason.
type errRetry struct {
	err  error
	port bool // the port was in use
}

func (e errRetry) Error() string { return e.err.Error() }

// startOnce starts the postmaster once; s.mu is held.
func (s *Server) startOnce(deadline time.Time) error {
	data := filepath.Join(s.root, "data")
	logPath := filepath.Join(s.root, "log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child keeps its own descriptor
	cmd := exec.Command(filepath.Join(s.bin, "postgres"),
		"-D", data,
		"-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+s.root,
		// Test data need not survive a machine crash: no fsync makes
		// starting, creating databases and committing much faster.
		// Commits still write their WAL before returning
		// (synchronous_commit stays on), so they survive Kill.
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "shared_buffers=16MB",
		// Dynamic shared memory in the data directory rather than
		// /dev/shm, so a killed cluster leaves nothing outside it.
		"-c", "dynamic_shared_memory_type=mmap",
		"-c", "max_connections=200",
	)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr(s.cred)
	if err := startProcess(cmd); err != nil {
		return fmt.Errorf("run postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	pidFile := filepath.Join(data, "postmaster.pid")
	for {
		select {
		case <-exited:
			log := s.logTail()
			err := fmt.Errorf("postgres exited while starting: %s", log)
			switch {
			case strings.Contains(log, "could not bind") || strings.Contains(log, "Address already in use"):
				return errRetry{err: err, port: true}
			case strings.Contains(log, "pre-existing shared memory block") || strings.Contains(log, "lock file") && strings.Contains(log, "already exists"):
				return errRetry{err: err}
			}
			return err
		default:
		}
		if ready(pidFile, cmd.Process.Pid) {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("postgres did not become ready within %v: %s", startTimeout, s.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ready reports whether the postmaster with this pid has written "ready"
// into its pid file, as pg_ctl -w checks. The pid guards against the
// stale file a killed postmaster leaves behind.
func ready(pidFile string, pid int) bool {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 8 || strings.TrimSpace(lines[0]) != strconv.Itoa(pid) {
		return false
	}
	return strings.TrimSpace(lines[7]) == "ready"
}

// signalAndWait sends sig to a running postmaster and waits for it to
// exit, killing it if it has not after a while.
func (s *Server) signalAndWait(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("the server is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		return err
	}
	select {
	case <-s.exited:
	case <-time.After(startTimeout):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd, s.exited = nil, nil
	return nil
}

// destroy stops the server at once (SIGQUIT: immediate shutdown, what
// `pg_ctl stop -m immediate` sends) and removes its directory.
func (s *Server) destroy() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd, s.exited = nil, nil
	s.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(startTimeout):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	_ = os.RemoveAll(s.root)
}

// logTail returns the end of the server's log for error messages.
func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.root, "log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// own gives path to the user the cluster runs as.
func (s *Server) own(path string) error {
	if s.cred == nil {
		return nil
	}
	return os.Chown(path, s.cred.uid, s.cred.gid)
}

// initdb creates a cluster in data whose superuser has password.
func initdb(bin, root, data, password string, cred *account) error {
	pwfile := filepath.Join(root, "pwfile")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pwfile)
	if cred != nil {
		if err := os.Chown(pwfile, cred.uid, cred.gid); err != nil {
			return err
		}
	}
	cmd := exec.Command(filepath.Join(bin, "initdb"),
		"-D", data,
		"-U", superuser,
		"--pwfile", pwfile,
		"-A", "scram-sha-256", // every connection, TCP or socket, needs the password
		"-E", "UTF8",
		"--locale", "C",
		"-N", // no fsync: a test cluster need not survive a crash of the machine
	)
	cmd.SysProcAttr = sysProcAttr(cred)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	return nil
}

// binDir finds the newest PostgreSQL server binaries: BinDirVar, then
// Debian's versioned /usr/lib/postgresql/N/bin (not on PATH), then PATH.
func binDir() (string, error) {
	if d := os.Getenv(BinDirVar); d != "" {
		for _, tool := range []string{"initdb", "postgres"} {
			if _, err := os.Stat(filepath.Join(d, tool)); err != nil {
				return "", errUnavailable{fmt.Sprintf("%s=%s has no %s", BinDirVar, d, tool)}
			}
		}
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	best, bestVersion := "", -1.0
	for _, m := range matches {
		bin := filepath.Dir(m)
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(bin)), 64)
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(bin, "postgres")); err == nil && v > bestVersion {
			best, bestVersion = bin, v
		}
	}
	if best != "" {
		return best, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errUnavailable{"no PostgreSQL server binaries (install Debian's postgresql: make deps)"}
}

// runAs returns the credentials of the postgres user when running as
// root (initdb and postgres refuse root), nil otherwise.
func runAs() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if !canSwitchUser {
		return nil, errUnavailable{"running as root, and pgtest can run the cluster as the postgres user only on Linux"}
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, errUnavailable{"running as root and there is no postgres user to run the cluster as"}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user has a non-numeric uid/gid %q/%q", u.Uid, u.Gid)
	}
	return &account{uid: int(uid), gid: int(gid)}, nil
}

// account is the user the cluster's processes run as.
type account struct{ uid, gid int }

// makeDir creates a cluster's directory: under $TMPDIR when set, else
// in /dev/shm when that is usable, else in the system temp dir. A
// cluster is ~1000 files; on a busy disk creating them takes seconds, in
// memory a fraction of that. The name carries our pid so that a later
// run can remove what a killed test binary left behind (sweepStale).
func makeDir(kind string) (string, error) {
	sweepStale()
	pattern := fmt.Sprintf("pgtest-%d-%s-", os.Getpid(), kind)
	if os.Getenv("TMPDIR") == "" {
		if d, err := os.MkdirTemp("/dev/shm", pattern); err == nil {
			return d, nil
		}
	}
	return os.MkdirTemp("", pattern)
}

var sweepOnce sync.Once

// staleName matches the directories makeDir creates.
var staleName = regexp.MustCompile(`^pgtest-([0-9]+)-`)

// sweepStale removes cluster directories whose test binary is gone (it
// was killed before its cleanup ran; Pdeathsig has already ended its
// postmaster). A directory whose pid is alive, reused or not, stays.
func sweepStale() {
	sweepOnce.Do(func() { sweep("/dev/shm", os.TempDir()) })
}

func sweep(bases ...string) {
	for _, base := range bases {
		entries, _ := os.ReadDir(base)
		for _, e := range entries {
			m := staleName.FindStringSubmatch(e.Name())
			if m == nil || !e.IsDir() {
				continue
			}
			pid, err := strconv.Atoi(m[1])
			if err != nil || pid == os.Getpid() || processAlive(pid) {
				continue
			}
			_ = os.RemoveAll(filepath.Join(base, e.Name()))
		}
	}
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before postgres binds it; start retries then.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// newPassword returns a random password that needs no URL escaping.
func newPassword() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "pw" + hex.EncodeToString(b)
}

var (
	nameSeq   atomic.Int64
	nameClean = regexp.MustCompile(`[^a-z0-9_]+`)
)

// uniqueName makes a database name from a test name: readable in the
// server's log, unique, and within PostgreSQL's 63-byte identifiers.
func uniqueName(testName string) string {
	n := nameClean.ReplaceAllString(strings.ToLower(testName), "_")
	prefix := fmt.Sprintf("t%d_", nameSeq.Add(1))
	if len(prefix)+len(n) > 63 {
		n = n[:63-len(prefix)]
	}
	return prefix + n
}

// copyTree copies a cluster directory, keeping modes (postgres insists
// on a 0700 data directory) and giving everything to cred's user.
func copyTree(src, dst string, cred *account) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
				return err
			}
		case d.Type().IsRegular():
			if err := copyFile(path, target, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected file type %v", path, d.Type())
		}
		if cred != nil {
			return os.Lchown(target, cred.uid, cred.gid)
		}
		return nil
	})
}

// copyFile copies one file; io.Copy between files lets the kernel move
// the bytes (copy_file_range) without a round trip through our memory.
func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
