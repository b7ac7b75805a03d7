//go:build unix

package caddymodule

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// lockHelperEnv makes the test binary, re-run as a helper process, hold
// the instance lock of the directory it names until its stdin closes.
const lockHelperEnv = "AGENT_VAULT_TEST_LOCK_HELPER"

// TestInstanceLockHelperProcess is the helper, not a test: it does
// nothing unless started by startLockHolder.
func TestInstanceLockHelperProcess(t *testing.T) {
	dir := os.Getenv(lockHelperEnv)
	if dir == "" {
		return
	}
	if err := HoldInstance(dir); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// lockHolder is another process holding a data dir's lock.
type lockHolder struct {
	cmd   *exec.Cmd
	stdin io.Closer
}

// startLockHolder starts the helper on dir and waits until it holds the
// lock.
func startLockHolder(t *testing.T, dir string) *lockHolder {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestInstanceLockHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &lockHolder{cmd: cmd, stdin: stdin}
	t.Cleanup(h.release)
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
		io.Copy(io.Discard, stdout)
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != "locked" {
			t.Fatalf("helper: %q", s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the helper did not take the lock within 30s")
	}
	return h
}

// release ends the helper and waits for it: its lock is gone after.
func (h *lockHolder) release() {
	if h.stdin != nil {
		h.stdin.Close()
		h.stdin = nil
		h.cmd.Wait()
	}
}

// A second process on a data dir fails with the holder's pid in the
// message; once the holder is gone the lock is free again.
func TestInstanceLockOtherProcess(t *testing.T) {
	dir := t.TempDir()
	h := startLockHolder(t, dir)

	_, err := acquireInstance(dir)
	var inUse *InstanceInUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("second lock: %v, want an InstanceInUseError", err)
	}
	want := fmt.Sprintf("data_dir %s is in use by another agent-vault instance (pid %d); stop it first, or give this one its own data_dir", dir, h.cmd.Process.Pid)
	if err.Error() != want {
		t.Errorf("message\n%s\nwant\n%s", err, want)
	}
	if pid, running, err := RunningInstance(dir); err != nil || !running || pid != h.cmd.Process.Pid {
		t.Errorf("RunningInstance = %d, %v, %v; want the helper's pid %d", pid, running, err, h.cmd.Process.Pid)
	}
	// The refusal left nothing in the pool: a later attempt really locks.
	if n, _ := instanceLocks.References(instanceKey(dir)); n != 0 {
		t.Errorf("%d references left after a refused lock", n)
	}

	h.release()
	key, err := acquireInstance(dir)
	if err != nil {
		t.Fatalf("lock after the holder exited: %v", err)
	}
	defer instanceLocks.Delete(key)
	path := filepath.Join(dir, instanceLockName)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("lock file mode %v, want 0600", st.Mode().Perm())
	}
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file holds %q, want this process's pid %d", b, os.Getpid())
	}
}

// Within one process the lock is counted, as a config reload needs: the
// new config's App takes it while the old one still holds it (under
// another spelling of the directory too), and the file is unlocked only
// when the last one is cleaned up.
func TestInstanceLockSharedWithinProcess(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	// A looser file left behind is tightened, and a stale pid replaced.
	if err := os.WriteFile(filepath.Join(dir, instanceLockName), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old, reloaded := &App{DataDir: dir}, &App{DataDir: link}
	if err := old.lockInstance(); err != nil {
		t.Fatal(err)
	}
	if err := reloaded.lockInstance(); err != nil {
		t.Fatalf("the reloaded config fought the running one: %v", err)
	}
	st, _ := os.Stat(filepath.Join(dir, instanceLockName))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("lock file mode %v, want 0600", st.Mode().Perm())
	}
	// RunningInstance opens the file afresh, so even from this process
	// it sees the lock as another process would.
	if pid, running, _ := RunningInstance(dir); !running || pid != os.Getpid() {
		t.Errorf("RunningInstance = %d, %v; want this process", pid, running)
	}
	old.unlockInstance()
	old.unlockInstance() // Cleanup twice returns one reference
	if _, running, _ := RunningInstance(dir); !running {
		t.Error("lock released while the reloaded config still holds it")
	}
	reloaded.unlockInstance()
	if _, running, _ := RunningInstance(dir); running {
		t.Error("lock still held after the last config was cleaned up")
	}
}

// A symbolic link in place of instance.lock is refused, not followed:
// the file it points to keeps its content and mode.
func TestInstanceLockRefusesASymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, []byte("keep me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, instanceLockName)); err != nil {
		t.Fatal(err)
	}
	if key, err := acquireInstance(dir); err == nil {
		instanceLocks.Delete(key)
		t.Fatal("locked through a symbolic link")
	} else if !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("error %q does not say why", err)
	}
	if _, _, err := RunningInstance(dir); err == nil {
		t.Error("RunningInstance followed the symbolic link")
	}
	b, _ := os.ReadFile(target)
	st, _ := os.Stat(target)
	if string(b) != "keep me\n" || st.Mode().Perm() != 0o644 {
		t.Fatalf("the link's target was changed: %q %v", b, st.Mode().Perm())
	}
}

// RunningInstance on a data dir without a lock file says "not running"
// and creates nothing.
func TestRunningInstanceNoLockFile(t *testing.T) {
	dir := t.TempDir()
	if _, running, err := RunningInstance(dir); err != nil || running {
		t.Fatalf("RunningInstance = %v, %v on an empty dir", running, err)
	}
	if _, err := os.Stat(filepath.Join(dir, instanceLockName)); !os.IsNotExist(err) {
		t.Errorf("the probe created the lock file (%v)", err)
	}
}

// With the checks off (validate), the app takes no lock.
func TestInstanceLockDisabled(t *testing.T) {
	dir := t.TempDir()
	h := startLockHolder(t, dir)
	defer h.release()
	instanceChecksOff.Store(true)
	defer instanceChecksOff.Store(false)
	a := &App{DataDir: dir}
	if err := a.lockInstance(); err != nil {
		t.Fatalf("lock with the checks off: %v", err)
	}
	a.unlockInstance()
}

func TestReadLockPID(t *testing.T) {
	for in, want := range map[string]int{"123\n": 123, "": 0, "x": 0, "-4": 0, " 77 ": 77} {
		if got := readLockPID([]byte(in)); got != want {
			t.Errorf("readLockPID(%q) = %d, want %d", in, got, want)
		}
	}
}
