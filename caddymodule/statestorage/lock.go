package statestorage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// unlockTimeout bounds the release of a lock, which runs even when the
// caller's context is done: a lock left behind would block the other
// brokers until it expires.
const unlockTimeout = 10 * time.Second

// ownerSource names lock holders. Every acquisition gets its own owner
// name, not one per Storage: the database lets an owner re-take its own
// lock, and two goroutines of one broker asking for the same lock must
// still exclude each other.
type ownerSource struct {
	prefix string
	next   atomic.Uint64
}

// newOwnerSource makes owner names that say which host and process
// holds a lock (for whoever looks at the lock table) and stay unique
// across restarts and across Storages of one process.
func newOwnerSource() ownerSource {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails since Go 1.24
	return ownerSource{prefix: host + "/" + strconv.Itoa(os.Getpid()) + "/" + hex.EncodeToString(b) + "/"}
}

func (o *ownerSource) newOwner() string {
	return o.prefix + strconv.FormatUint(o.next.Add(1), 10)
}

// heldLock is a lock this Storage holds (or is taking), with its
// keep-alive.
//
// A Storage holds each name at most once at a time: certmagic's Unlock
// names only the lock, not the acquisition, so with two acquisitions
// of one name in this process (one whose lock expired while held, and
// one that took it again) the first holder's Unlock would release the
// second's lock. So while the name has an entry in Storage.held, even
// one whose lock was lost, another TryLock of it through this Storage
// answers false without asking the database, and the entry goes only
// with its holder's Unlock.
type heldLock struct {
	owner    string
	acquired bool          // the database granted it; guarded by Storage.mu
	stop     chan struct{} // closed to stop the refresher
	done     chan struct{} // closed when the refresher has returned
}

// Lock takes the named lock, waiting (polling with a growing pause)
// while another holder has it, until ctx is done. While held, the lock
// is refreshed in the background, so it lasts as long as this process
// does and frees itself LockTTL after a crash.
func (s *Storage) Lock(ctx context.Context, name string) error {
	wait := s.opts.PollMin
	for {
		ok, err := s.TryLock(ctx, name)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		s.waits.Add(1)
		// Jitter keeps brokers that started waiting together from
		// polling in step.
		t := time.NewTimer(wait/2 + mrand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf(errPrefix+"waiting for lock %q: %w", name, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(2*wait, s.opts.PollMax)
	}
}

// TryLock takes the named lock if nobody holds it (or its holder's
// lease ran out), without waiting; it reports whether it did. A name
// this Storage holds already is not free (see heldLock).
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	h := &heldLock{owner: s.owners.newOwner(), stop: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, errClosed(name)
	}
	if _, busy := s.held[name]; busy {
		s.mu.Unlock()
		return false, nil
	}
	s.held[name] = h // reserves the name while the database decides
	s.mu.Unlock()
	ok, err := s.backend.TryLock(ctx, name, h.owner, s.opts.LockTTL)
	if err != nil || !ok {
		if err != nil {
			// The database may have taken the lock before the error (a
			// cancelled context, a lost reply): release it rather than
			// leave it to block the cluster until it expires.
			s.release(ctx, name, h.owner)
			err = fmt.Errorf(errPrefix+"taking lock %q: %w", name, err)
		}
		s.mu.Lock()
		delete(s.held, name)
		s.mu.Unlock()
		return false, err
	}
	s.mu.Lock()
	if s.closed {
		// Close ran while the database decided: it did not see this
		// lock, so give it back here rather than start a keep-alive
		// that nothing would stop.
		delete(s.held, name)
		s.mu.Unlock()
		s.release(ctx, name, h.owner)
		return false, errClosed(name)
	}
	h.acquired = true
	go s.keepAlive(name, h)
	s.mu.Unlock()
	return true, nil
}

func errClosed(name string) error {
	return fmt.Errorf(errPrefix+"taking lock %q: the storage is closed", name)
}

// Close ends what the Storage runs in the background, for when its
// database is about to close (the last config using it is cleaned up):
// the keep-alives of its locks stop and the locks are released, and
// the CA pair leases' timers are stopped, so that nothing is left
// refreshing, or logging failures against, a closed database. Locks
// cannot be taken after Close; holders' later Unlocks report the lock
// not held. Close is idempotent.
func (s *Storage) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	leases := s.leases
	s.leases = make(map[string]*pairLease)
	held := make(map[string]*heldLock)
	for name, h := range s.held {
		if h.acquired {
			h.acquired = false // Close releases it, not a later Unlock
			held[name] = h
		}
	}
	s.mu.Unlock()
	for _, l := range leases {
		l.timer.Stop()
	}
	var errs []error
	for name, h := range held {
		h.halt()
		if err := s.release(context.Background(), name, h.owner); err != nil {
			errs = append(errs, fmt.Errorf(errPrefix+"releasing %q: %w", name, err))
		}
		s.mu.Lock()
		delete(s.held, name)
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Unlock releases the named lock, which this Storage must hold. It
// runs even if ctx is already done (certmagic unlocks after a failed
// or cancelled operation). A lock that was lost while held releases
// nothing in the database: the release is by owner, and the lock is
// now someone else's or nobody's.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	if h == nil || !h.acquired {
		s.mu.Unlock()
		return fmt.Errorf(errPrefix+"unlock %q: the lock is not held here", name)
	}
	h.acquired = false // a second Unlock is refused
	s.mu.Unlock()
	h.halt()
	err := s.release(ctx, name, h.owner)
	// The name is free here only once the database has it free too,
	// so that the next acquisition here does not poll for nothing.
	s.mu.Lock()
	delete(s.held, name)
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf(errPrefix+"unlock %q: %w", name, err)
	}
	return nil
}

// release unlocks owner's lock with a context that outlives ctx's
// cancellation but not unlockTimeout.
func (s *Storage) release(ctx context.Context, name, owner string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
	defer cancel()
	return s.backend.Unlock(ctx, name, owner)
}

// halt stops the keep-alive and waits for it, so no refresh can land
// after the lock has been released.
func (h *heldLock) halt() {
	close(h.stop)
	<-h.done
}

// keepAlive refreshes h every RefreshInterval until halted or the lock
// turns out lost. A failed refresh is retried at the next tick: the
// lock stays valid until LockTTL after the last success.
func (s *Storage) keepAlive(name string, h *heldLock) {
	defer close(h.done)
	tick := time.NewTicker(s.opts.RefreshInterval)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.RefreshInterval)
		ok, err := s.backend.RefreshLock(ctx, name, h.owner, s.opts.LockTTL)
		cancel()
		switch {
		case err != nil:
			s.opts.Logger.Warn("refreshing a storage lock failed; retrying", zap.String("lock", name), zap.Error(err))
		case !ok:
			s.opts.Logger.Error("a storage lock expired while held; another broker may now hold it", zap.String("lock", name))
			return
		}
	}
}
