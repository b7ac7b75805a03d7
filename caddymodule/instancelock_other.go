//go:build !unix

package caddymodule

// Without flock(2) there is no instance lock: every process may use any
// data dir, as before the lock existed. The listen-address check still
// applies.

type heldLock struct{}

func (*heldLock) Destruct() error { return nil }

func lockFile(string) (*heldLock, error) { return &heldLock{}, nil }

// probeLockFile cannot tell: it answers "running" so that stop and
// reload go ahead and ask the admin endpoint, as they did before.
func probeLockFile(string) (int, bool, error) { return 0, true, nil }
