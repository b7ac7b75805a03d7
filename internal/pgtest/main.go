package pgtest

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// process is the state Main keeps for a test binary: the shared server
// and the initdb'd template every later cluster is copied from.
var process struct {
	mu     sync.Mutex
	active bool   // Main is running the tests
	dir    string // holds the template; removed when Main ends

	sharedMu sync.Mutex // held while the shared server starts
	shared   *Server
	err      error // why the shared server could not start (reported to every caller)

	tmplOnce     sync.Once
	tmpl, tmplPw string
	tmplErr      error
}

// Main runs a package's tests (call it from TestMain) and afterwards
// stops the shared server and removes the template cluster. While it
// runs, Start copies a cluster initialised once instead of running
// initdb each time, which is most of a cluster's start-up cost.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	process.mu.Lock()
	process.active = true
	process.mu.Unlock()
	code := m.Run()
	process.sharedMu.Lock()
	shared := process.shared
	process.shared = nil
	process.sharedMu.Unlock()
	process.mu.Lock()
	dir := process.dir
	process.active = false
	process.mu.Unlock()
	if shared != nil {
		shared.destroy()
	}
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	return code
}

// Shared returns the package's shared server, starting it on first use.
// Each test takes a database of its own with NewDatabase; the server
// cannot be stopped (tests that do that use Start). It needs Main: only
// Main knows when the last test is done with it.
func Shared(t testing.TB) *Server {
	t.Helper()
	process.mu.Lock()
	active := process.active
	process.mu.Unlock()
	if !active {
		t.Fatalf("pgtest.Shared needs TestMain to call pgtest.Main(m)")
	}
	process.sharedMu.Lock()
	defer process.sharedMu.Unlock()
	if process.shared == nil && process.err == nil {
		process.shared, process.err = newServer(true)
	}
	if process.err != nil {
		fail(t, process.err)
		return nil
	}
	return process.shared
}

// template returns a cluster directory initialised once for the process
// and its superuser's password, or "" when Main is not running (nothing
// would remove it).
func template(bin string, cred *account) (dir, password string, err error) {
	process.mu.Lock()
	active := process.active
	process.mu.Unlock()
	if !active {
		return "", "", nil
	}
	process.tmplOnce.Do(func() {
		root, err := makeDir("template")
		if err != nil {
			process.tmplErr = err
			return
		}
		process.mu.Lock()
		process.dir = root
		process.mu.Unlock()
		if cred != nil {
			if err := os.Chown(root, cred.uid, cred.gid); err != nil {
				process.tmplErr = err
				return
			}
		}
		pw := newPassword()
		data := filepath.Join(root, "data")
		if err := initdb(bin, root, data, pw, cred); err != nil {
			process.tmplErr = err
			return
		}
		process.tmpl, process.tmplPw = data, pw
	})
	if process.tmplErr != nil {
		return "", "", errors.Join(errors.New("template cluster"), process.tmplErr)
	}
	return process.tmpl, process.tmplPw, nil
}
