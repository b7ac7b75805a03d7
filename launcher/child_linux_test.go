//go:build linux

package launcher

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The child is started with Pdeathsig SIGKILL, and its CA files carry the
// launcher's pid.
func TestChildSysProcAttr(t *testing.T) {
	var seen *exec.Cmd
	startHook = func(cmd *exec.Cmd) { seen = cmd }
	t.Cleanup(func() { startHook = nil })
	api := newFakeAPI(t)
	code, stderr, err := launch(t, api, Config{Command: []string{"/bin/sh", "-c", "exit 0"}})
	if code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; stderr %s", code, err, stderr)
	}
	if seen == nil || seen.SysProcAttr == nil || seen.SysProcAttr.Pdeathsig != syscall.SIGKILL {
		t.Fatalf("SysProcAttr = %+v, want Pdeathsig SIGKILL", seen.SysProcAttr)
	}
	for _, name := range []string{"SSL_CERT_FILE", nodeCAVar} {
		base := filepath.Base(lookupEnv(seen.Env, name))
		if pid, ok := caFilePID(base); !ok || pid != os.Getpid() {
			t.Errorf("%s = %q: want a CA file named with our pid %d", name, base, os.Getpid())
		}
	}
}

// gone reports whether pid no longer runs: no such process, or a zombie
// (the container's init may not reap orphans).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// "pid (comm) S ...": the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// A launcher killed with SIGKILL takes its child with it.
func TestBinaryChildDiesWithLauncher(t *testing.T) {
	api := newFakeAPI(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The shell writes its pid, then becomes sleep under the same pid.
	cmd, stderr, _ := startBinary(t, api, "/bin/sh", "-c", `echo $$ > "$1.tmp" && mv "$1.tmp" "$1" && exec sleep 300`, "sh", pidFile)
	waitForFile(t, pidFile)
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid < 2 {
		t.Fatalf("child pid %q: %v", data, err)
	}
	if gone(pid) {
		t.Fatal("the child is not running")
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL to av-launch alone
		t.Fatal(err)
	}
	waitExit(t, cmd)
	deadline := time.Now().Add(10 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the child %d outlived av-launch by 10s; stderr: %s", pid, stderr)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not synchronization
	}
}
