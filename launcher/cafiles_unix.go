//go:build unix

package launcher

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
)

// removeStaleCAFiles removes, from dir, the CA files that launchers of
// this user left behind when they died (SIGKILL gives no chance to clean
// up). Best effort: nothing here stops a launch.
func removeStaleCAFiles(dir string) {
	removeStale(dir, os.Getuid(), os.Getpid(), pidAlive)
}

// removeStale removes the CA files in dir that are regular files owned by
// uid and named with a pid other than self that is not alive; it returns
// their names. Another user's files, a live launcher's and anything else
// are left alone. Symlinks are never followed (Lstat), and in a sticky
// temp dir only the owner can replace a file between the check and the
// removal.
func removeStale(dir string, uid, self int, alive func(pid int) bool) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range entries {
		pid, ok := caFilePID(e.Name())
		if !ok || pid == self {
			continue
		}
		path := filepath.Join(dir, e.Name())
		info, err := os.Lstat(path)
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok || int64(st.Uid) != int64(uid) || alive(pid) {
			continue
		}
		if os.Remove(path) == nil {
			removed = append(removed, e.Name())
		}
	}
	return removed
}

// pidAlive reports whether a process with that pid exists. EPERM means it
// does (another user's); a reused pid keeps a stale file, which is the
// safe side.
func pidAlive(pid int) bool {
	if pid < 1 {
		return true
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
