package caddymodule

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
)

// One agent-vault process per data directory.
//
// Why: Caddy listens with SO_REUSEPORT, so a second process started on
// the same configuration starts without complaint, requests alternate
// between the two, and the second one, on its way out, deletes the
// first one's admin socket (Caddy unlinks a unix socket path before it
// binds it and again when it closes it). Two brokers writing one data
// directory would also overwrite each other's services and credentials.
//
// The lock is an exclusive flock(2) on <data_dir>/instance.lock, which
// holds the holder's pid for the error message of the one refused. A
// flock belongs to an open file description: the kernel drops it when
// the process ends however it ends (no stale lock after a kill -9), and
// a second open of the file in this same process would conflict with
// the first. So within a process the lock is counted in a usage pool
// keyed by the data directory: every config's App.Provision takes a
// reference and its Cleanup returns it. Caddy provisions a new config
// before it cleans up the old one, so a config reload never drops the
// count to zero and never unlocks the file in between, let alone fights
// itself. The file is never deleted: unlinking a flocked file lets a
// third process lock a fresh inode while the second still holds the old.
//
// App.Provision takes the lock before it touches anything in the data
// dir. That is already too late for the admin socket, which Caddy opens
// before any module is provisioned; the agent-vault command path
// (instance.go at the repository root) therefore takes the same lock
// with HoldInstance before Caddy loads the config, for `run` (and so for
// `start` and `server`, which end up in `run`). App.Provision stays the
// rule for every other embedding.

// instanceLockName is the lock file's name inside the data directory.
const instanceLockName = "instance.lock"

// instanceLocks holds one *heldLock per data directory (see
// instanceKey), counted over the configs that use it.
var instanceLocks = caddy.NewUsagePool()

// instanceChecksOff is set by DisableInstanceChecks.
var instanceChecksOff atomic.Bool

// DisableInstanceChecks turns the instance lock and the listen-address
// check off for this process. It is for processes that provision a
// configuration without ever serving it (`caddy validate`, `caddy adapt
// --validate`): they must keep working while the server that
// configuration is meant for runs, which is when the checks would
// refuse them.
func DisableInstanceChecks() { instanceChecksOff.Store(true) }

// InstanceInUseError is the refusal of a data directory another process
// holds.
type InstanceInUseError struct {
	DataDir string
	PID     int // 0 if the holder's pid could not be read
}

func (e *InstanceInUseError) Error() string {
	holder := "pid unknown"
	if e.PID > 0 {
		holder = "pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("data_dir %s is in use by another agent-vault instance (%s); stop it first, or give this one its own data_dir", e.DataDir, holder)
}

// ResolveDataDir is the one rule that turns the app's data_dir setting
// into the directory used: placeholders expanded, the per-user default
// when empty, made absolute. The command path resolves it the same way
// to lock the same directory before Caddy runs.
func ResolveDataDir(raw string) (string, error) {
	dir, err := caddy.NewReplacer().ReplaceOrErr(raw, false, true)
	if err != nil {
		return "", fmt.Errorf("data_dir: %v", err)
	}
	if dir == "" {
		dir = DefaultDataDir()
	}
	if dir == "" {
		return "", errors.New("data_dir: not configured and there is no home directory to default to")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", fmt.Errorf("data_dir: %v", err)
	}
	return dir, nil
}

// instanceKey names dataDir in instanceLocks: two spellings of one
// directory (a symlink) must share the lock rather than conflict with
// this process's own flock.
func instanceKey(dataDir string) string {
	if p, err := filepath.EvalSymlinks(dataDir); err == nil {
		return p
	}
	return filepath.Clean(dataDir)
}

// acquireInstance takes a reference on dataDir's lock, locking the file
// if this process does not hold it yet. It returns the key to release.
func acquireInstance(dataDir string) (string, error) {
	key := instanceKey(dataDir)
	_, _, err := instanceLocks.LoadOrNew(key, func() (caddy.Destructor, error) {
		h, err := lockFile(dataDir)
		if err != nil {
			return nil, err
		}
		return h, nil
	})
	if err != nil {
		return "", err
	}
	return key, nil
}

// lockInstance takes this config's reference on the data dir's lock
// (see the top of this file). Provision calls it once the directory
// exists and before anything in it is read or written.
func (a *App) lockInstance() error {
	if instanceChecksOff.Load() {
		return nil
	}
	key, err := acquireInstance(a.DataDir)
	if err != nil {
		return err
	}
	a.instanceKey = key
	return nil
}

// unlockInstance returns this config's reference; the last one unlocks
// the file. Cleanup calls it, also after a failed Provision.
func (a *App) unlockInstance() {
	if a.instanceKey != "" {
		_, _ = instanceLocks.Delete(a.instanceKey)
		a.instanceKey = ""
	}
}

// HoldInstance locks dataDir (creating it, mode 0700) for the rest of
// this process's life. The agent-vault command path calls it before
// Caddy loads the config, so that a second process on the same data dir
// stops before Caddy opens, and so replaces, the first one's admin
// socket. It is never released: the process's admin socket may stay in
// that directory through any later config reload, and the kernel drops
// the lock when the process exits.
func HoldInstance(dataDir string) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("creating data_dir: %v", err)
	}
	_, err := acquireInstance(dataDir)
	return err
}

// RunningInstance tells whether a process holds dataDir's instance lock
// and, if it wrote it, its pid. It creates nothing: a data dir without
// a lock file has no instance. `agent-vault stop` and `reload` use it to
// say so instead of knocking on an admin socket nobody listens on.
func RunningInstance(dataDir string) (pid int, running bool, err error) {
	return probeLockFile(dataDir)
}

// readLockPID parses the pid a holder wrote into its lock file.
func readLockPID(b []byte) int {
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
