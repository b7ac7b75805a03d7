package launcher

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Temp CA files. A launcher killed with SIGKILL cannot remove its own,
// so each launcher removes, at start, those its dead predecessors (of the
// same user) left behind. Whether a file's launcher lives is judged by a
// lock, not by the pid in its name: a launcher holds a shared flock on
// each of its CA files for its lifetime, and a file is stale only if an
// exclusive lock on it can be taken at once. A pid means nothing across
// pid namespaces (containers sharing /tmp), where the pid of a live
// launcher may be free, or another process's, in the cleaner's own.
// The pid stays in the name, for humans.

// caFilePrefix starts the name of every temp CA file; the launcher's pid
// follows.
const caFilePrefix = "agent-vault-ca-"

// caFileKinds are the temp files a launch writes, by kind, with the
// suffix of their names: the CA bundle, Node's extra CA, and the WGETRC
// that points wget at the bundle (clients.go).
var caFileKinds = map[string]string{"bundle": ".pem", "node": ".pem", "wgetrc": ".wgetrc"}

// caFilePattern is the os.CreateTemp pattern of a temp file of kind:
// agent-vault-ca-<pid>-<kind>-<random><suffix>.
func caFilePattern(kind string) string {
	return fmt.Sprintf("%s%d-%s-*%s", caFilePrefix, os.Getpid(), kind, caFileKinds[kind])
}

// caFilePID returns the pid in the name of a CA file written by a
// launcher, and false for any other name (which the cleanup leaves
// alone). The pid is at least 1.
func caFilePID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, caFilePrefix)
	if !ok {
		return 0, false
	}
	pidText, rest, ok := strings.Cut(rest, "-")
	if !ok || !allDigits(pidText) || len(pidText) > 10 {
		return 0, false
	}
	kind, random, ok := strings.Cut(rest, "-")
	suffix, known := caFileKinds[kind]
	if !ok || !known {
		return 0, false
	}
	random, ok = strings.CutSuffix(random, suffix)
	if !ok || !allDigits(random) {
		return 0, false
	}
	pid, err := strconv.ParseInt(pidText, 10, 32)
	if err != nil || pid < 1 {
		return 0, false
	}
	return int(pid), true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// heldFile is a CA file the launcher wrote and holds open, with its
// shared lock, until release.
type heldFile struct {
	path string
	f    *os.File
}

// release removes the file, then drops the lock.
func (h *heldFile) release() {
	os.Remove(h.path)
	h.f.Close()
}

// maxCAFileAttempts bounds the retries of writeCAFile.
const maxCAFileAttempts = 5

// writeCAFile writes data to a new CA file of kind in dir that only the
// current user can read, and holds it (heldFile). The lock is taken
// before the content is written, and the file is checked to still be at
// its path once locked: another launcher's cleanup may have taken it for
// stale in the instant between its creation and the lock, in which case
// a new one is made.
func writeCAFile(dir, kind string, data []byte) (*heldFile, error) {
	for range maxCAFileAttempts {
		f, err := os.CreateTemp(dir, caFilePattern(kind))
		if err != nil {
			return nil, err
		}
		h := &heldFile{path: f.Name(), f: f}
		if err := lockShared(f); err != nil {
			h.release()
			return nil, err
		}
		if !stillAt(f) {
			f.Close() // removed by a cleaner: not ours to remove again
			continue
		}
		// CreateTemp already uses 0600; Chmod states the requirement.
		err = f.Chmod(0o600)
		if err == nil {
			_, err = f.Write(data)
		}
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			h.release()
			return nil, err
		}
		return h, nil
	}
	return nil, errors.New("another launcher's cleanup kept removing the new CA file")
}

// stillAt reports whether f's name still names f.
func stillAt(f *os.File) bool {
	held, err := f.Stat()
	if err != nil {
		return false
	}
	now, err := os.Lstat(f.Name())
	return err == nil && os.SameFile(held, now)
}
