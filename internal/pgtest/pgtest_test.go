package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agentvault/caddy-agent-vault/internal/testenv"
)

func TestMain(m *testing.M) { Main(m) }

// execSQL runs statements on dsn.
func execSQL(t *testing.T, dsn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
}

// query runs a one-value query on dsn.
func query(t *testing.T, dsn, sql string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var s string
	err = conn.QueryRow(ctx, sql).Scan(&s)
	return s, err
}

func TestSharedDatabasesAreSeparate(t *testing.T) {
	s := Shared(t)
	if Shared(t) != s {
		t.Fatal("Shared returned a second server")
	}
	a, b := s.NewDatabase(t), s.NewDatabase(t)
	if a == b {
		t.Fatalf("two databases with one DSN %s", a)
	}
	execSQL(t, a, "CREATE TABLE only_in_a(x int)")
	got, err := query(t, b, "SELECT count(*)::text FROM pg_tables WHERE tablename = 'only_in_a'")
	if err != nil || got != "0" {
		t.Fatalf("database b sees a's table: %q, %v", got, err)
	}
}

func TestDSNShapeAndPassword(t *testing.T) {
	s := Shared(t)
	u, err := url.Parse(s.DSN())
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	if u.Scheme != "postgres" || u.Hostname() != "127.0.0.1" || pw == "" || pw != s.Password() ||
		u.Port() != strings.TrimPrefix(u.Port(), ":") || u.Query().Get("sslmode") != "disable" {
		t.Fatalf("unexpected DSN %s", s.DSN())
	}
	if got, err := query(t, s.DSN(), "SELECT current_database()"); err != nil || got != "test" {
		t.Fatalf("current_database = %q, %v", got, err)
	}
	// The password is checked (scram-sha-256), not just carried.
	u.User = url.UserPassword(u.User.Username(), "wrong")
	if _, err := query(t, u.String(), "SELECT 'x'"); err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("wrong password: %v", err)
	}
	// Only loopback: the socket directory is private and the server
	// listens on 127.0.0.1 alone.
	if got, err := query(t, s.DSN(), "SHOW listen_addresses"); err != nil || got != "127.0.0.1" {
		t.Fatalf("listen_addresses = %q, %v", got, err)
	}
	if st, err := os.Stat(s.root); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("cluster dir mode: %v %v", st.Mode(), err)
	}
}

func TestStopStartKeepsDataAndPort(t *testing.T) {
	s := Start(t)
	port := s.Port()
	execSQL(t, s.DSN(), "CREATE TABLE kept(x int); INSERT INTO kept VALUES (7)")
	s.Stop(t)
	if _, err := query(t, s.DSN(), "SELECT 'x'"); err == nil {
		t.Fatal("query succeeded on a stopped server")
	}
	s.Start(t)
	if got, err := query(t, s.DSN(), "SELECT x::text FROM kept"); err != nil || got != "7" {
		t.Fatalf("after restart: %q, %v", got, err)
	}
	if s.Port() != port {
		t.Fatalf("port changed %d -> %d", port, s.Port())
	}
	s.Kill(t)
	if _, err := query(t, s.DSN(), "SELECT 'x'"); err == nil {
		t.Fatal("query succeeded on a killed server")
	}
	s.Start(t)
	s.Restart(t)
	if _, err := query(t, s.DSN(), "SELECT 'x'"); err != nil {
		t.Fatal(err)
	}
}

func TestKillThenStartRecovers(t *testing.T) {
	s := Start(t)
	conn, err := pgx.Connect(context.Background(), s.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "CREATE TABLE k(x int); INSERT INTO k VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	s.Kill(t)
	// The open session notices: its backend exits with the postmaster.
	deadline := time.Now().Add(10 * time.Second)
	for conn.Ping(context.Background()) == nil {
		if time.Now().After(deadline) {
			t.Fatal("a session survived the postmaster's SIGKILL")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Start(t) // crash recovery, possibly after the old backends let go of shared memory
	if got, err := query(t, s.DSN(), "SELECT x::text FROM k"); err != nil || got != "1" {
		t.Fatalf("after crash recovery: %q, %v", got, err)
	}
}

func TestCleanupRemovesTheCluster(t *testing.T) {
	var root string
	t.Run("inner", func(t *testing.T) {
		root = Start(t).root
	})
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("cluster dir %s left behind: %v", root, err)
	}
}

func TestSharedCannotBeStopped(t *testing.T) {
	r := &fatalRecorder{TB: t}
	Shared(t).Stop(r)
	if !r.failed {
		t.Fatal("Stop of the shared server did not fail the test")
	}
}

func TestMissingBinariesAreUnavailable(t *testing.T) {
	t.Setenv(BinDirVar, t.TempDir())
	t.Setenv(testenv.StrictVar, "")
	r := &fatalRecorder{TB: t}
	if s := Start(r); s != nil || !r.skipped || r.failed {
		t.Fatalf("Start without binaries: server %v, skipped %v, failed %v", s, r.skipped, r.failed)
	}
	t.Setenv(testenv.StrictVar, "1")
	r = &fatalRecorder{TB: t}
	if s := Start(r); s != nil || !r.failed {
		t.Fatalf("strict Start without binaries: server %v, failed %v", s, r.failed)
	}
}

// fatalRecorder records Fatalf and Skipf instead of ending the test.
type fatalRecorder struct {
	testing.TB
	failed, skipped bool
}

func (r *fatalRecorder) Helper()               {}
func (r *fatalRecorder) Fatalf(string, ...any) { r.failed = true }
func (r *fatalRecorder) Skipf(string, ...any)  { r.skipped = true }

func TestSweepRemovesOnlyDeadOwnersDirs(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	names := map[string]bool{ // name -> should survive
		fmt.Sprintf("pgtest-%d-cluster-1", dead.Process.Pid): false,
		fmt.Sprintf("pgtest-%d-cluster-2", os.Getpid()):      true,
		fmt.Sprintf("pgtest-%d-template-3", os.Getppid()):    true,
		"pgtest-notapid-x": true,
		"other":            true,
	}
	for n := range names {
		if err := os.Mkdir(filepath.Join(base, n), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sweep(base)
	for n, survive := range names {
		_, err := os.Stat(filepath.Join(base, n))
		if got := err == nil; got != survive {
			t.Errorf("%s: exists %v, want %v", n, got, survive)
		}
	}
}

func TestUniqueName(t *testing.T) {
	long := strings.Repeat("Abc/", 40)
	a, b := uniqueName(long), uniqueName(long)
	if a == b || len(a) > 63 || strings.ContainsAny(a, "/A") {
		t.Fatalf("uniqueName: %q %q", a, b)
	}
}
