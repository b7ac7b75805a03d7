//go:build unix

package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// heldLock is an open, flocked instance.lock; closing the file is what
// unlocks it.
type heldLock struct{ f *os.File }

// Destruct runs when the last config using the data dir is gone.
func (h *heldLock) Destruct() error { return h.f.Close() }

// lockFile opens <dataDir>/instance.lock (mode 0600), locks it without
// waiting and writes this process's pid into it. A lock held elsewhere
// is an *InstanceInUseError naming the holder's pid.
//
// The file is opened with O_NOFOLLOW: a symbolic link planted in its
// place (the data dir may be shared with, or writable by, someone
// else) is refused rather than followed, so the chmod and the pid
// written below land on no other file. Nothing is truncated before the
// lock is held: the holder's pid stays readable for the refusal.
func lockFile(dataDir string) (*heldLock, error) {
	path := filepath.Join(dataDir, instanceLockName)
	f, err := openLockFile(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return nil, fmt.Errorf("data_dir %s: opening the instance lock: %v", dataDir, err)
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid := readPIDFrom(f)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &InstanceInUseError{DataDir: dataDir, PID: pid}
		}
		return nil, fmt.Errorf("data_dir %s: locking %s: %v", dataDir, instanceLockName, err)
	}
	// The pid is only for the message of a process refused later; the
	// lock itself is the flock. Chmod in case an older file was looser.
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := errors.Join(f.Chmod(0o600), f.Truncate(0)); err == nil {
		_, err = f.WriteAt(pid, 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data_dir %s: writing the instance lock: %v", dataDir, err)
	}
	return &heldLock{f: f}, nil
}

// probeLockFile tells whether another process holds dataDir's lock. If
// it finds the file free it holds it for an instant, which a process
// starting at that very instant would take for a running instance.
func probeLockFile(dataDir string) (pid int, running bool, err error) {
	f, err := openLockFile(filepath.Join(dataDir, instanceLockName), os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	switch err := flock(f, unix.LOCK_EX|unix.LOCK_NB); {
	case err == nil:
		return 0, false, nil // closing f unlocks it
	case errors.Is(err, unix.EWOULDBLOCK):
		return readPIDFrom(f), true, nil
	default:
		return 0, false, err
	}
}

// openLockFile opens the lock file without following a symbolic link
// in its place, which it names in the error.
func openLockFile(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|unix.O_NOFOLLOW, 0o600)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link; refusing to follow it (remove it)", path)
	}
	return f, err
}

// flock applies how to f's open file description.
func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lockErr error
	if err := rc.Control(func(fd uintptr) {
		for {
			lockErr = unix.Flock(int(fd), how)
			if !errors.Is(lockErr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	return lockErr
}

// readPIDFrom reads the pid the holder wrote; 0 if there is none yet.
func readPIDFrom(f *os.File) int {
	b := make([]byte, 32)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0
	}
	return readLockPID(b[:n])
}
