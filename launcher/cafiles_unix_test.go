//go:build unix

package launcher

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "exit 0")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("pem"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	dead, live, self := 4242, 4343, 4444
	names := map[string]bool{ // name: removed
		fmt.Sprintf("agent-vault-ca-%d-bundle-1.pem", dead): true,
		fmt.Sprintf("agent-vault-ca-%d-node-2.pem", dead):   true,
		fmt.Sprintf("agent-vault-ca-%d-bundle-3.pem", live): false,
		fmt.Sprintf("agent-vault-ca-%d-bundle-4.pem", self): false,
		"agent-vault-ca-bundle-5.pem":                       false, // not ours to judge
		"unrelated.pem":                                     false,
	}
	for name := range names {
		touch(t, filepath.Join(dir, name))
	}
	// A symlink and a directory with a dead pid's name are never removed.
	target := filepath.Join(t.TempDir(), "target")
	touch(t, target)
	link := fmt.Sprintf("agent-vault-ca-%d-bundle-6.pem", dead)
	if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
		t.Fatal(err)
	}
	names[link] = false
	sub := fmt.Sprintf("agent-vault-ca-%d-bundle-7.pem", dead)
	if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
		t.Fatal(err)
	}
	names[sub] = false
	alive := func(pid int) bool { return pid != dead }

	// Files of another uid are left alone, dead pid or not.
	if removed := removeStale(dir, os.Getuid()+1, self, alive); len(removed) != 0 {
		t.Errorf("removed another user's files: %q", removed)
	}
	removed := removeStale(dir, os.Getuid(), self, alive)
	slices.Sort(removed)
	var want []string
	for name, gone := range names {
		if gone {
			want = append(want, name)
		}
	}
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("removed %q, want %q", removed, want)
	}
	for name, gone := range names {
		if _, err := os.Lstat(filepath.Join(dir, name)); (err == nil) == gone {
			t.Errorf("%s: exists %v, want %v", name, err == nil, !gone)
		}
	}
	if _, err := os.Stat(target); err != nil {
		t.Error("the symlink's target was removed")
	}
}

func TestPIDAlive(t *testing.T) {
	if !pidAlive(os.Getpid()) || !pidAlive(1) {
		t.Error("a live process reported dead")
	}
	if pidAlive(deadPID(t)) {
		t.Error("a reaped process reported alive")
	}
	if !pidAlive(0) || !pidAlive(-1) {
		t.Error("process group pids must count as alive (never removed)")
	}
}

// At start, Run removes the CA files a dead launcher of ours left, and
// keeps a live launcher's and (as root) another user's.
func TestRunRemovesStaleCAFiles(t *testing.T) {
	api := newFakeAPI(t)
	tmp := t.TempDir()
	dead := deadPID(t)
	stale := filepath.Join(tmp, fmt.Sprintf("agent-vault-ca-%d-bundle-11.pem", dead))
	liveFile := filepath.Join(tmp, "agent-vault-ca-1-bundle-12.pem") // pid 1 is alive
	touch(t, stale)
	touch(t, liveFile)
	var othersFile string
	if os.Getuid() == 0 {
		othersFile = filepath.Join(tmp, fmt.Sprintf("agent-vault-ca-%d-node-13.pem", dead))
		touch(t, othersFile)
		if err := os.Chown(othersFile, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	code, stderr, err := launch(t, api, Config{TempDir: tmp, Command: []string{"/bin/sh", "-c", "exit 0"}})
	if code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; stderr: %s", code, err, stderr)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("a dead launcher's CA file was kept")
	}
	if _, err := os.Stat(liveFile); err != nil {
		t.Error("a live launcher's CA file was removed")
	}
	if othersFile != "" {
		if _, err := os.Stat(othersFile); err != nil {
			t.Error("another user's CA file was removed")
		}
	}
}
