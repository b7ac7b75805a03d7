package e2etest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// One instance per data dir and listen address (caddymodule's
// instancelock.go and bindcheck.go, and instance.go at the repository
// root): a second server refuses to start without disturbing the first,
// and stop reaches only the server it is pointed at.

// agentVaultCmd runs bin/agent-vault with args in env and returns its
// combined output and exit code.
func agentVaultCmd(t testing.TB, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("agent-vault"), args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee) && ctx.Err() == nil:
		return out.String(), ee.ExitCode()
	default:
		t.Fatalf("agent-vault %s: %v\n%s", strings.Join(args, " "), err, out.String())
		return "", -1
	}
}

// waitExit waits for s to exit by itself and returns its exit code.
func (s *server) waitExit() int {
	s.t.Helper()
	select {
	case <-s.exited:
		return s.cmd.ProcessState.ExitCode()
	case <-time.After(60 * time.Second):
		s.t.Fatalf("server still running after 60s:\n%s", s.logs.String())
		return -1
	}
}

// stillServing fails unless s's management API answers and s is up.
func (s *server) stillServing(why string) {
	s.t.Helper()
	select {
	case <-s.exited:
		s.t.Fatalf("%s: the server exited: %v\n%s", why, s.cmd.ProcessState, s.logs.String())
	default:
	}
	if code := s.api("GET", "/api/v1/services", nil, nil); code != 200 {
		s.t.Fatalf("%s: GET /api/v1/services = %d", why, code)
	}
}

// stopWithConfig stops s the way an operator does, through the admin
// socket its config names, and waits for it to exit.
func (s *server) stopWithConfig() {
	s.t.Helper()
	out, code := agentVaultCmd(s.t, s.env, "stop", "--config", s.config)
	if code != 0 {
		s.t.Fatalf("agent-vault stop --config = exit %d:\n%s", code, out)
	}
	if code := s.waitExit(); code != 0 {
		s.t.Errorf("server exit code %d after stop", code)
	}
}

// A second server on the same data dir (other ports) stops before Caddy
// opens its admin endpoint, naming the first one's pid; the first keeps
// serving, its admin socket still answers (stop works), and validating
// the config it runs still works meanwhile.
func TestInstanceSameDataDir(t *testing.T) {
	ca := newTestCA(t)
	a := startServer(t, ca, serverOpts{})
	socket, err := os.Stat(a.adminSocket())
	if err != nil {
		t.Fatal(err)
	}

	b := launchServer(t, ca, serverOpts{dataDir: a.dataDir})
	if code := b.waitExit(); code == 0 {
		t.Fatalf("second server on the same data dir exited 0:\n%s", b.logs.String())
	}
	want := fmt.Sprintf("data_dir %s is in use by another agent-vault instance (pid %d); stop it first, or give this one its own data_dir", a.dataDir, a.pid())
	if logs := b.logs.String(); !strings.Contains(logs, want) {
		t.Fatalf("second server's output lacks %q:\n%s", want, logs)
	}
	if logs := b.logs.String(); strings.Contains(logs, "admin endpoint started") {
		t.Errorf("the second server opened an admin endpoint before refusing:\n%s", logs)
	}

	a.stillServing("after the refused second server")
	if now, err := os.Stat(a.adminSocket()); err != nil || !os.SameFile(socket, now) {
		t.Fatalf("the first server's admin socket was replaced or removed (%v)", err)
	}
	if out, code := agentVaultCmd(t, a.env, "validate", "--config", a.config); code != 0 {
		t.Errorf("validate while the server runs = exit %d:\n%s", code, out)
	}
	a.stillServing("after validate")
	a.stopWithConfig()
}

// A second server on other data dir but the same listen addresses
// refuses with the address, instead of sharing the ports through
// SO_REUSEPORT; the first keeps serving and stops through its socket.
func TestInstanceSamePorts(t *testing.T) {
	ca := newTestCA(t)
	a := startServer(t, ca, serverOpts{})

	b := launchServer(t, ca, serverOpts{apiAddr: a.apiAddr, proxyAddr: a.proxyAddr})
	if code := b.waitExit(); code == 0 {
		t.Fatalf("second server on the same ports exited 0:\n%s", b.logs.String())
	}
	logs := b.logs.String()
	found := false
	for _, addr := range []string{a.apiAddr, a.proxyAddr} {
		found = found || strings.Contains(logs, fmt.Sprintf("listen address %s is already in use (another agent-vault instance?)", addr))
	}
	if !found {
		t.Fatalf("second server's output names neither %s nor %s as in use:\n%s", a.apiAddr, a.proxyAddr, logs)
	}
	if strings.Contains(logs, "serving initial configuration") {
		t.Fatalf("the second server served:\n%s", logs)
	}
	// Every new connection reaches the first server.
	for i := range 20 {
		a.stillServing(fmt.Sprintf("request %d after the refused second server", i))
	}
	a.stopWithConfig()
}

// Two servers with their own data dirs and ports: `server stop` for one
// stops that one only; stopping it again says nothing runs there and
// fails; `stop --config` stops the other.
func TestInstanceStopOnlyItsOwn(t *testing.T) {
	ca := newTestCA(t)
	a := startServer(t, ca, serverOpts{})
	b := startServer(t, ca, serverOpts{})

	if out, code := agentVaultCmd(t, a.env, "server", "stop"); code != 0 {
		t.Fatalf("agent-vault server stop = exit %d:\n%s", code, out)
	}
	if code := a.waitExit(); code != 0 {
		t.Errorf("first server exit code %d after server stop", code)
	}
	b.stillServing("after stopping the other server")

	out, code := agentVaultCmd(t, a.env, "server", "stop")
	want := fmt.Sprintf("no agent-vault instance is running on data_dir %s", a.dataDir)
	if code == 0 || !strings.Contains(out, want) {
		t.Errorf("server stop with nothing running = exit %d, want non-zero with %q:\n%s", code, want, out)
	}
	out, code = agentVaultCmd(t, a.env, "stop", "--config", filepath.Join(repoRoot, "Caddyfile.example"))
	if code == 0 || !strings.Contains(out, want) {
		t.Errorf("stop --config with nothing running = exit %d, want non-zero with %q:\n%s", code, want, out)
	}
	b.stillServing("after the stops pointed at the stopped server")
	b.stopWithConfig()
}

// A config reload inside the running server keeps its own lock and its
// own ports (neither is "another instance"), and a reload that adds a
// port another process holds is refused while the old config keeps
// serving. After the reloads the data dir is still held: a second
// server is still refused.
func TestInstanceReload(t *testing.T) {
	ca := newTestCA(t)
	a := startServer(t, ca, serverOpts{})
	if out, code := agentVaultCmd(t, a.env, "reload", "--force", "--config", a.config); code != 0 {
		t.Fatalf("reload of the running config = exit %d:\n%s", code, out)
	}
	a.stillServing("after a reload")

	// Move the API to a port another process could share with Caddy:
	// held WITH SO_REUSEPORT, so only the check stops the reload.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
	}}
	held, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	env := append(slices.Clone(a.env), "AGENT_VAULT_API_ADDR="+held.Addr().String())
	out, code := agentVaultCmd(t, env, "reload", "--config", a.config)
	if want := fmt.Sprintf("listen address %s is already in use", held.Addr()); code == 0 || !strings.Contains(out, want) {
		t.Errorf("reload onto a held port = exit %d, want non-zero with %q:\n%s", code, want, out)
	}
	a.stillServing("after the refused reload")

	b := launchServer(t, ca, serverOpts{dataDir: a.dataDir})
	if code := b.waitExit(); code == 0 || !strings.Contains(b.logs.String(), fmt.Sprintf("(pid %d)", a.pid())) {
		t.Fatalf("second server after the reloads = exit %d:\n%s", code, b.logs.String())
	}
	a.stopWithConfig()
}
