//go:build unix

package launcher

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// holdLockVar, in the environment of this test binary, makes it a helper
// that holds a shared lock on the file it names, as a live launcher in
// another process (or pid namespace) does, until its stdin closes.
const holdLockVar = "AV_LAUNCH_TEST_HOLD_LOCK"

// holdLock is the helper's main: it locks path, says "locked" on
// stdout, and keeps the lock until stdin ends.
func holdLock(path string) int {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := lockShared(f); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// lockFromAnotherProcess has a helper process hold a shared lock on path
// until the returned function is called (which waits for it to exit).
func lockFromAnotherProcess(t *testing.T, path string) (release func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), holdLockVar+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the lock helper said %q, %v", line, err)
	}
	done := false
	release = func() {
		if done {
			return
		}
		done = true
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("lock helper: %v", err)
		}
	}
	t.Cleanup(release)
	return release
}

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

// A file is stale when no process holds its lock, whatever the pid in
// its name: a live launcher in another pid namespace may carry a pid
// that is dead (or someone else's) here, and its files must stay.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	dead := deadPID(t)
	names := map[string]bool{ // name: removed
		fmt.Sprintf("agent-vault-ca-%d-bundle-1.pem", dead): true,
		fmt.Sprintf("agent-vault-ca-%d-node-2.pem", dead):   true,
		"agent-vault-ca-1-bundle-3.pem":                     true,  // pid 1 lives, but holds no lock
		fmt.Sprintf("agent-vault-ca-%d-bundle-4.pem", dead): false, // another launcher holds it
		"agent-vault-ca-bundle-5.pem":                       false, // not ours to judge
		"unrelated.pem":                                     false,
	}
	for name := range names {
		touch(t, filepath.Join(dir, name))
	}
	release := lockFromAnotherProcess(t, filepath.Join(dir, fmt.Sprintf("agent-vault-ca-%d-bundle-4.pem", dead)))
	// A symlink and a directory with a CA file's name are never removed.
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

	// Files of another uid are left alone, locked or not.
	if removed := removeStale(dir, os.Getuid()+1); len(removed) != 0 {
		t.Errorf("removed another user's files: %q", removed)
	}
	removed := removeStale(dir, os.Getuid())
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
	// Once its launcher is gone (the lock with it), the file is stale.
	release()
	if removed := removeStale(dir, os.Getuid()); !slices.Equal(removed, []string{fmt.Sprintf("agent-vault-ca-%d-bundle-4.pem", dead)}) {
		t.Errorf("after the lock went: removed %q", removed)
	}
}

// writeCAFile holds its file locked: a cleanup in this process (another
// open file, as good as another process for flock) keeps it.
func TestWriteCAFileHoldsALock(t *testing.T) {
	dir := t.TempDir()
	h, err := writeCAFile(dir, "bundle", []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(h.path)
	if err != nil || info.Mode().Perm() != 0o600 || filepath.Dir(h.path) != dir {
		t.Fatalf("file %s: %v, %v", h.path, info, err)
	}
	if data, _ := os.ReadFile(h.path); string(data) != "data" {
		t.Errorf("content = %q", data)
	}
	if pid, ok := caFilePID(filepath.Base(h.path)); !ok || pid != os.Getpid() {
		t.Errorf("name %s does not carry our pid", h.path)
	}
	if removed := removeStale(dir, os.Getuid()); len(removed) != 0 {
		t.Errorf("a held CA file was removed: %q", removed)
	}
	h.release()
	if _, err := os.Stat(h.path); err == nil {
		t.Error("release left the file")
	}
	if _, err := writeCAFile(filepath.Join(dir, "missing"), "node", nil); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}

// At start, Run removes the CA files a dead launcher of ours left, and
// keeps a live launcher's (locked from another process, its pid dead
// here as across pid namespaces) and (as root) another user's. While the
// command runs, its own CA files are held: another launcher's cleanup
// keeps them.
func TestRunRemovesStaleCAFiles(t *testing.T) {
	api := newFakeAPI(t)
	tmp := t.TempDir()
	dead := deadPID(t)
	stale := filepath.Join(tmp, fmt.Sprintf("agent-vault-ca-%d-bundle-11.pem", dead))
	liveFile := filepath.Join(tmp, fmt.Sprintf("agent-vault-ca-%d-bundle-12.pem", dead))
	touch(t, stale)
	touch(t, liveFile)
	lockFromAnotherProcess(t, liveFile)
	var othersFile string
	if os.Getuid() == 0 {
		othersFile = filepath.Join(tmp, fmt.Sprintf("agent-vault-ca-%d-node-13.pem", dead))
		touch(t, othersFile)
		if err := os.Chown(othersFile, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	marker := filepath.Join(t.TempDir(), "go")
	done := make(chan error, 1)
	go func() {
		code, _, err := launch(t, api, Config{TempDir: tmp, Command: []string{"/bin/sh", "-c", `while [ ! -e "$1" ]; do sleep 0.02; done; cat "$SSL_CERT_FILE" "$NODE_EXTRA_CA_CERTS" > /dev/null`, "sh", marker}})
		if err == nil && code != 0 {
			err = fmt.Errorf("exit %d", code)
		}
		done <- err
	}()
	var own []string
	waitFor(t, "the launcher's CA files", 10*time.Second, func() bool {
		own = nil
		entries, _ := os.ReadDir(tmp)
		for _, e := range entries {
			if pid, ok := caFilePID(e.Name()); ok && pid == os.Getpid() {
				own = append(own, e.Name())
			}
		}
		return len(own) == len(caFileKinds)
	})
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
	// A second launcher starting now keeps the running one's files.
	if removed := removeStale(tmp, os.Getuid()); len(removed) != 0 {
		t.Errorf("a running launcher's CA files were taken for stale: %q", removed)
	}
	touch(t, marker)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	for _, name := range own {
		if _, err := os.Stat(filepath.Join(tmp, name)); err == nil {
			t.Errorf("%s left behind", name)
		}
	}
}
