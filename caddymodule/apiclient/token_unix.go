//go:build unix

package apiclient

import (
	"fmt"
	"os"
	"syscall"
)

// openNonBlocking opens path for reading without blocking on it (a FIFO
// swapped in after the check must not hang the open) and without
// making a terminal the controlling one.
func openNonBlocking(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
}

// fileWarnings warns, as ssh does of a private key, when a secret's
// file is readable by group or others, or not owned by this user (who
// else may change it?).
func fileWarnings(path string, info os.FileInfo) []string {
	var out []string
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		out = append(out, fmt.Sprintf("%s is accessible by others (mode %04o): chmod 600 it", path, perm))
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && int64(st.Uid) != int64(os.Getuid()) {
		out = append(out, fmt.Sprintf("%s is owned by uid %d, not by you (uid %d): whoever owns it can change it", path, st.Uid, os.Getuid()))
	}
	return out
}
