package e2etest

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // the "sqlite" database/sql driver

	"github.com/agentvault/caddy-agent-vault/internal/pgtest"
)

// runToExit runs `agent-vault run` on Caddyfile.example with extraEnv
// and returns its exit code and stderr; it fails the test if the
// process is still running after a minute (start-up must stop, not
// hang).
func runToExit(t *testing.T, ca *testCA, dataDir string, extraEnv ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := serverOpts{dataDir: dataDir, extraEnv: extraEnv}
	cmd := exec.CommandContext(ctx, bin("agent-vault"), "run", "--config", filepath.Join(repoRoot, "Caddyfile.example"))
	cmd.Env = serverEnv(t, ca, o, freePort(t), freePort(t))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("agent-vault did not stop within a minute:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("agent-vault run: %v (want a non-zero exit)\n%s", err, stderr.String())
	}
	return ee.ExitCode(), stderr.String()
}

// closedLoopbackPort returns a loopback port nothing listens on.
func closedLoopbackPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// execSQL runs statements on a database through database/sql.
func execSQL(t *testing.T, driver, dsn string, stmts ...string) {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// futureMigration is the row a newer binary would have written: the
// version after the newest migration in the source tree (so it stays
// newer as migrations are added), and the refusal it must cause.
func futureMigration(t *testing.T) (stmt, refusal string) {
	latest := len(stateMigrations(t))
	stmt = fmt.Sprintf("INSERT INTO agent_vault_schema (version, name, applied_at) VALUES (%d, 'from_the_future', '2099-01-01T00:00:00Z')", latest+1)
	refusal = fmt.Sprintf("the database schema is version %d, newer than this binary's %d", latest+1, latest)
	return stmt, refusal
}

// TestStateOpenFailureStopsStartup: a state database that cannot be
// used — a DSN that does not parse, PostgreSQL not listening, a SQLite
// path that cannot be created, a schema newer than the binary on either
// backend — stops `agent-vault run` with a non-zero exit and a message
// that names the backend, and never shows the DSN's password.
func TestStateOpenFailureStopsStartup(t *testing.T) {
	ca := newTestCA(t)
	const password = "pg-Secret-Password-e2e-0123"

	t.Run("postgres bad DSN", func(t *testing.T) {
		dsn := "postgres://agent:" + password + "@127.0.0.1:notaport/agent_vault"
		code, stderr := runToExit(t, ca, filepath.Join(t.TempDir(), "data"), "AGENT_VAULT_DATABASE_URL="+dsn)
		checkStateFailure(t, code, stderr, "state postgres", password)
	})

	t.Run("postgres unreachable", func(t *testing.T) {
		dsn := "postgres://agent:" + password + "@127.0.0.1:" + closedLoopbackPort(t) + "/agent_vault?sslmode=disable&connect_timeout=5"
		code, stderr := runToExit(t, ca, filepath.Join(t.TempDir(), "data"), "AGENT_VAULT_DATABASE_URL="+dsn)
		checkStateFailure(t, code, stderr, "state postgres", password)
		mustContain(t, "stderr", stderr, "connect")
	})

	t.Run("sqlite path cannot be created", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "a-file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		code, stderr := runToExit(t, ca, filepath.Join(dir, "data"),
			"AGENT_VAULT_STATE_BACKEND=sqlite", "AGENT_VAULT_STATE_DSN="+filepath.Join(file, "state.db"))
		checkStateFailure(t, code, stderr, "state sqlite", "")
	})

	t.Run("sqlite schema newer than the binary", func(t *testing.T) {
		s := startServer(t, ca, serverOpts{})
		s.stop()
		future, refusal := futureMigration(t)
		execSQL(t, "sqlite", filepath.Join(s.dataDir, "state.db"), future)
		code, stderr := runToExit(t, ca, s.dataDir)
		checkStateFailure(t, code, stderr, "state sqlite", "")
		mustContain(t, "stderr", stderr, refusal)
		mustContain(t, "stderr", stderr, "upgrade agent-vault")
	})

	t.Run("postgres schema newer than the binary", func(t *testing.T) {
		pg := pgtest.Start(t)
		future, refusal := futureMigration(t)
		execSQL(t, "pgx", pg.DSN(),
			"CREATE TABLE agent_vault_schema (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
			future)
		code, stderr := runToExit(t, ca, filepath.Join(t.TempDir(), "data"), "AGENT_VAULT_DATABASE_URL="+pg.DSN())
		checkStateFailure(t, code, stderr, "state postgres", pg.Password())
		mustContain(t, "stderr", stderr, refusal)
	})
}

// checkStateFailure checks an exit of a start-up the state database
// stopped: non-zero, the backend named, the password (if any) absent
// in clear and URL-escaped.
func checkStateFailure(t *testing.T, code int, stderr, backend, password string) {
	t.Helper()
	if code == 0 {
		t.Fatalf("exit code 0, want a failure\n%s", stderr)
	}
	mustContain(t, "stderr", stderr, backend+": ")
	if password != "" && (strings.Contains(stderr, password) || strings.Contains(stderr, url.QueryEscape(password))) {
		t.Fatalf("the DSN password is in the output:\n%s", stderr)
	}
}
