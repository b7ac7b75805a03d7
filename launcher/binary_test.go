//go:build unix

package launcher

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	if path := os.Getenv(holdLockVar); path != "" {
		os.Exit(holdLock(path)) // a helper process, not a test run
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// avLaunchBinary builds cmd/av-launch once per test run.
func avLaunchBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a binary")
	}
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		if binDir, err = os.MkdirTemp("", "av-launch-test-"); err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(binDir, "av-launch")
		out, err := exec.Command(goTool, "build", "-o", binPath, "./cmd/av-launch").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("building av-launch: %v", buildErr)
	}
	return binPath
}

// startBinary runs av-launch with args against api, with its own TMPDIR.
func startBinary(t *testing.T, api *fakeAPI, args ...string) (cmd *exec.Cmd, stderr *bytes.Buffer, tmp string) {
	t.Helper()
	tmp = t.TempDir()
	stderr = new(bytes.Buffer)
	cmd = exec.Command(avLaunchBinary(t), args...)
	cmd.Env = append(baseEnv(), "AGENT_VAULT_TOKEN="+testAdminToken, "AGENT_VAULT_ADDR="+api.srv.URL, "TMPDIR="+tmp)
	cmd.Stderr = stderr
	// Its own process group lets cleanup kill a child that outlives
	// av-launch; WaitDelay stops Wait from hanging on a pipe that child holds.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killGroup(cmd) })
	return cmd, stderr, tmp
}

// killGroup kills av-launch and everything it started.
func killGroup(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// waitExit waits for cmd with a deadline and returns its state.
func waitExit(t *testing.T, cmd *exec.Cmd) *os.ProcessState {
	t.Helper()
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		killGroup(cmd)
		<-done
		t.Fatal("av-launch did not exit in time")
	}
	return cmd.ProcessState
}

func TestBinaryForwardsSIGTERM(t *testing.T) {
	api := newFakeAPI(t)
	dir := t.TempDir()
	ready, marker := filepath.Join(dir, "ready"), filepath.Join(dir, "marker")
	// The child only learns of SIGTERM if av-launch forwards it: the test
	// signals av-launch's pid alone, not the process group.
	script := `trap 'echo TERM > "$2"; exit 42' TERM
: > "$1"
while :; do sleep 1 >/dev/null 2>&1 & wait $!; done`
	cmd, stderr, tmp := startBinary(t, api, "--", "/bin/sh", "-c", script, "sh", ready, marker)
	waitForFile(t, ready)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	state := waitExit(t, cmd)
	if state.ExitCode() != 42 {
		t.Errorf("exit = %v, want 42; stderr: %s", state, stderr)
	}
	if data, err := os.ReadFile(marker); err != nil || string(data) != "TERM\n" {
		t.Errorf("marker = %q, %v: the child did not get SIGTERM", data, err)
	}
	if _, deletes := api.calls(); !slices.Equal(deletes, []string{testSessionID}) {
		t.Errorf("deletes = %q", deletes)
	}
	assertEmptyDir(t, tmp)
	assertNoSecrets(t, "stderr", stderr.String())
}

func TestBinarySignalDuringSetup(t *testing.T) {
	api := newFakeAPI(t)
	entered := make(chan struct{})
	api.set(func(f *fakeAPI) {
		f.onCreate = func(r *http.Request) {
			close(entered)
			<-r.Context().Done() // hold the request until av-launch gives up
		}
	})
	marker := filepath.Join(t.TempDir(), "started")
	cmd, stderr, _ := startBinary(t, api, "/bin/sh", "-c", `touch "$1"`, "sh", marker)
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("av-launch never asked for a session")
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	state := waitExit(t, cmd)
	// 130 means av-launch handled the signal itself (and cleaned up) rather
	// than being killed by it.
	if state.ExitCode() != 128+int(syscall.SIGINT) {
		t.Errorf("exit = %v, want 130; stderr: %s", state, stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("child started after the interrupt")
	}
}
