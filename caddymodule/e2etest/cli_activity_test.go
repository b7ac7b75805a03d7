package e2etest

// agent-vault activity against a running broker: the forwarded and the
// refused request listed, and --follow printing what happens next until
// interrupted, or until the login it reads with ends.

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// cliProc is an agent-vault command still running.
type cliProc struct {
	t              *testing.T
	cmd            *exec.Cmd
	stdout, stderr *logBuffer
	done           chan int // the exit code, once it exited
}

// startCLI starts bin/agent-vault args with env (plus PATH and a HOME of
// its own); it is killed when the test ends if it still runs.
func startCLI(t *testing.T, env []string, args ...string) *cliProc {
	t.Helper()
	p := &cliProc{t: t, cmd: exec.Command(bin("agent-vault"), args...), stdout: newLogBuffer(), stderr: newLogBuffer(), done: make(chan int, 1)}
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "AGENT_VAULT_DATA_DIR=" + t.TempDir()}, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			code = -1
		}
		p.done <- code
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
	})
	return p
}

// waitOut waits until the process printed substr on stdout (or stderr,
// with onStderr).
func (p *cliProc) waitOut(what, substr string, onStderr bool) {
	p.t.Helper()
	buf := p.stdout
	if onStderr {
		buf = p.stderr
	}
	select {
	case <-buf.waitFor(substr):
	case code := <-p.done:
		p.t.Fatalf("agent-vault exited (%d) before printing %s\nstdout: %s\nstderr: %s", code, what, p.stdout, p.stderr)
	case <-time.After(20 * time.Second): // a bound on a broken run, not a wait
		p.t.Fatalf("agent-vault did not print %s\nstdout: %s\nstderr: %s", what, p.stdout, p.stderr)
	}
}

// exit waits for the process to end and returns its exit code.
func (p *cliProc) exit() int {
	p.t.Helper()
	select {
	case code := <-p.done:
		return code
	case <-time.After(20 * time.Second): // a bound on a broken run, not a wait
		p.t.Fatalf("agent-vault did not exit\nstdout: %s\nstderr: %s", p.stdout, p.stderr)
		return -1
	}
}

func TestCLIActivity(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	other := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", bearerService(up.hostPort(), "GITHUB_TOKEN"))
	env := []string{"AGENT_VAULT_ADDR=http://" + s.apiAddr, "AGENT_VAULT_TOKEN=" + s.adminToken()}

	if out, errOut, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+up.hostPort()+"/user?access_token=q"); code != 0 {
		t.Fatalf("av-launch curl: exit %d\n%s\n%s", code, out, errOut)
	}
	if _, _, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+other.hostPort()+"/"); code == 0 {
		t.Fatal("curl to an uncovered host succeeded")
	}
	activityEntries(t, s, "", func(es []apiwire.ActivityEntry) bool {
		return findActivity(es, func(e apiwire.ActivityEntry) bool { return e.Path == "/user" }) != nil &&
			findActivity(es, func(e apiwire.ActivityEntry) bool { return e.Code == "uncovered_host" }) != nil
	})

	// The table: both, the query and the secret nowhere.
	table := runCLI(t, env, "", "activity")
	if table.code != 0 {
		t.Fatalf("agent-vault activity: %s", table)
	}
	for _, want := range []string{"DECISION", "forwarded", "GET " + up.hostPort() + "/user", "github", "refused", "uncovered_host", "GET " + other.hostPort() + "/"} {
		mustContain(t, "agent-vault activity", table.stdout, want)
	}
	for _, secret := range []string{githubSecret, "access_token", s.adminToken()} {
		mustNotContain(t, "agent-vault activity", table.stdout+table.stderr, secret)
	}
	// --json with a filter: one entry a line, all refused.
	js := runCLI(t, env, "", "activity", "--json", "--decision", "refused", "--host", "127.0.0.1")
	if js.code != 0 {
		t.Fatalf("agent-vault activity --json: %s", js)
	}
	lines := strings.Split(strings.TrimSpace(js.stdout), "\n")
	sawRefusal := false
	for _, line := range lines {
		var e apiwire.ActivityEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("--json line %q: %v", line, err)
		}
		if e.Decision != "refused" {
			t.Errorf("--decision refused printed %+v", e)
		}
		sawRefusal = sawRefusal || e.Code == "uncovered_host" && net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) == other.hostPort()
	}
	if !sawRefusal {
		t.Errorf("--json --decision refused lacks the refusal:\n%s", js.stdout)
	}
	if bad := runCLI(t, env, "", "activity", "--decision", "allowed"); bad.code != 2 {
		t.Errorf("--decision allowed: %s, want exit 2", bad)
	}

	// --follow prints what happens next, until interrupted: exit 0.
	follow := startCLI(t, env, "activity", "--follow", "--json", "--service", "github")
	follow.waitOut("that it follows", "following the activity log", true)
	if _, _, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+up.hostPort()+"/followed"); code != 0 {
		t.Fatal("curl /followed failed")
	}
	follow.waitOut("the new entry", `"path":"/followed"`, false)
	follow.cmd.Process.Signal(syscall.SIGINT)
	if code := follow.exit(); code != 0 {
		t.Errorf("--follow after SIGINT: exit %d, want 0\nstderr: %s", code, follow.stderr)
	}
	for _, line := range strings.Split(strings.TrimSpace(follow.stdout.String()), "\n") {
		var e apiwire.ActivityEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Service != "github" {
			t.Errorf("--follow --json --service github printed %q (%v)", line, err)
		}
	}

	// With an operator's login, --follow ends when the login does: exit
	// 1 and the reason.
	s.createOperator("vera", "viewer-password-0123", "viewer")
	login := s.login("vera", "viewer-password-0123")
	viewer := startCLI(t, []string{"AGENT_VAULT_ADDR=http://" + s.apiAddr, "AGENT_VAULT_TOKEN=" + login.Token}, "activity", "--follow")
	viewer.waitOut("that it follows", "following the activity log", true)
	if _, _, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+up.hostPort()+"/seen-by-vera"); code != 0 {
		t.Fatal("curl /seen-by-vera failed")
	}
	viewer.waitOut("the new entry", "GET "+up.hostPort()+"/seen-by-vera", false)
	s.must(bearer(login.Token), "POST", "/api/v1/logout", nil, http.StatusNoContent, nil)
	if code := viewer.exit(); code != 1 {
		t.Errorf("--follow after logout: exit %d, want 1\nstderr: %s", code, viewer.stderr)
	}
	mustContain(t, "--follow after logout", viewer.stderr.String(), "the login or token is no longer valid")
	mustNotContain(t, "--follow after logout", viewer.stdout.String()+viewer.stderr.String(), login.Token)
}
