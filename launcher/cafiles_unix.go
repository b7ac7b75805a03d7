//go:build unix

package launcher

import (
	"os"
	"path/filepath"
	"syscall"
)

// lockShared takes a shared flock on f, held as long as f is open.
// Blocking: an exclusive lock is only ever held for an instant, by a
// cleaner removing a file it found stale.
func lockShared(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH)
		if err != syscall.EINTR {
			return err
		}
	}
}

// removeStaleCAFiles removes, from dir, the CA files that launchers of
// this user left behind when they died (SIGKILL gives no chance to clean
// up). Best effort: nothing here stops a launch.
func removeStaleCAFiles(dir string) {
	removeStale(dir, os.Getuid())
}

// removeStale removes the CA files in dir that are regular files owned
// by uid and that no process holds a lock on (cafiles.go); it returns
// their names. Another user's files, a live launcher's (locked, in
// whichever pid namespace) and anything else are left alone. Symlinks
// are never followed (Lstat, O_NOFOLLOW), what is locked is checked to
// be what was looked at, and the file is removed while the exclusive
// lock is held, only if its name still names it.
func removeStale(dir string, uid int) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range entries {
		if _, ok := caFilePID(e.Name()); !ok {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if removeIfStale(path, uid) {
			removed = append(removed, e.Name())
		}
	}
	return removed
}

// removeIfStale removes path if it is a stale CA file of uid.
func removeIfStale(path string, uid int) bool {
	info, err := os.Lstat(path)
	if err != nil || !info.Mode().IsRegular() || !ownedBy(info, uid) {
		return false
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if opened, err := f.Stat(); err != nil || !os.SameFile(info, opened) {
		return false
	}
	// Its launcher holds a shared lock for as long as it lives.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return false
	}
	if !stillAt(f) {
		return false
	}
	return os.Remove(path) == nil
}

// ownedBy reports whether info's file belongs to uid.
func ownedBy(info os.FileInfo, uid int) bool {
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && int64(st.Uid) == int64(uid)
}
