package statestorage

import (
	"context"
	"strings"
	"time"
)

// Caddy's PKI app reads and writes each CA certificate and its private
// key as two separate storage calls, with no lock around them: it
// loads <ca>/root.crt, generates and stores a new root (crt, then key)
// when that is missing, then does the same for the intermediate, and
// renews the intermediate in place later. Over one file system on one
// machine that is harmless; over a storage shared by brokers starting
// or renewing at the same moment it is not: two brokers on an empty
// database would each generate a root and sign under different CAs,
// and interleaved writes could leave one broker's certificate next to
// the other's key, a pair that signs nothing verifiable.
//
// So this storage makes every access to such a pair one unit of work
// across the cluster: the first call on a pair's certificate (a Load,
// hit or miss, or a Store) takes a cluster lock on the pair, and the
// call that completes the unit releases it — a Load of the key after a
// Load that found the certificate, a Store of the key after a miss or
// a Store of the certificate. A second broker's Load of the
// certificate waits for the lock and then finds the first broker's CA.
// If the unit is never completed (the PKI app failed half-way), the
// lock is released after Options.PairLease.
//
// The calls carry no identity of the unit they belong to, and one
// Storage serves every goroutine of the process (a reloading config's
// provisioning next to the old config's renewal of the intermediate).
// So a unit records the step it waits for, and only that step
// continues or completes it: a Store of the certificate after a miss,
// a Load of the key after a hit, a Store of the key after a Store of
// the certificate. Any other call that begins a unit waits for the
// open one to end, as another broker's would, and a call on the key
// that the unit does not wait for leaves it alone.

// caPairPrefix is where the PKI app keeps its CAs: <prefix><id>/<file>.
const caPairPrefix = "pki/authorities/"

// caPair reports whether the clean key k is half of a CA certificate
// and key pair, which pair (the lock name), and whether it is the
// certificate.
func caPair(k string) (lock string, isCert, ok bool) {
	rest, found := strings.CutPrefix(k, caPairPrefix)
	if !found {
		return "", false, false
	}
	id, file, found := strings.Cut(rest, "/")
	if !found || id == "" {
		return "", false, false
	}
	base, isCert := strings.CutSuffix(file, ".crt")
	if !isCert {
		var isKey bool
		if base, isKey = strings.CutSuffix(file, ".key"); !isKey {
			return "", false, false
		}
	}
	if base != "root" && base != "intermediate" {
		return "", false, false
	}
	return "agent_vault_state/ca_pair/" + id + "/" + base, isCert, true
}

// isRootPair reports whether a pair lock (from caPair) is a CA's root,
// whose halves are created once and never replaced.
func isRootPair(lock string) bool { return strings.HasSuffix(lock, "/root") }

// pairStep is what an open unit of work on a pair waits for.
type pairStep int

const (
	awaitCertStore pairStep = iota // the certificate was missing: its Store continues
	awaitKeyLoad                   // the certificate was loaded: the key's Load completes
	awaitKeyStore                  // the certificate was stored: the key's Store completes
)

// pairLease is a pair lock held by this Storage for one unit of work.
// Its fields are guarded by Storage.mu.
type pairLease struct {
	timer *time.Timer
	next  pairStep
}

// beginPair starts a unit of work on the pair by taking its lock,
// waiting while another unit, of this Storage or another broker, holds
// it. The one exception is a Store of the certificate (storeCert) that
// an open unit waits for, after its Load missed: that unit continues.
func (s *Storage) beginPair(ctx context.Context, lock string, storeCert bool) (*pairLease, error) {
	s.mu.Lock()
	if l := s.leases[lock]; l != nil && storeCert && l.next == awaitCertStore {
		s.mu.Unlock()
		return l, nil
	}
	s.mu.Unlock()
	// The open unit holds the lock in this Storage, so this waits for
	// it to end (see heldLock).
	if err := s.Lock(ctx, lock); err != nil {
		return nil, err
	}
	l := &pairLease{}
	s.mu.Lock()
	if s.closed {
		// Close has run since Lock: it released the lock and will not
		// stop a timer started now.
		s.mu.Unlock()
		return nil, errClosed(lock)
	}
	s.leases[lock] = l
	l.timer = time.AfterFunc(s.opts.PairLease, func() { s.endPair(lock, l) })
	s.mu.Unlock()
	return l, nil
}

// awaitPair records the step lease's unit waits for next, if the unit
// is still open (its lease may have run out).
func (s *Storage) awaitPair(lock string, lease *pairLease, next pairStep) {
	s.mu.Lock()
	if s.leases[lock] == lease {
		lease.next = next
	}
	s.mu.Unlock()
}

// completePair ends the open unit on the pair if it waits for step:
// the call on the key that completes it.
func (s *Storage) completePair(lock string, step pairStep) {
	s.mu.Lock()
	l := s.leases[lock]
	waits := l != nil && l.next == step
	s.mu.Unlock()
	if waits {
		s.endPair(lock, l)
	}
}

// endPair releases the pair's lock if lease still holds it. Whoever
// removes the lease from the map unlocks, so the timer and a normal end
// never both do.
func (s *Storage) endPair(lock string, lease *pairLease) {
	s.mu.Lock()
	if s.leases[lock] != lease {
		s.mu.Unlock()
		return
	}
	delete(s.leases, lock)
	s.mu.Unlock()
	lease.timer.Stop()
	if err := s.Unlock(context.Background(), lock); err != nil {
		s.opts.Logger.Warn(err.Error())
	}
}
