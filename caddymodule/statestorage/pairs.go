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

// pairLease is a pair lock held by this Storage for one unit of work.
type pairLease struct {
	timer *time.Timer
}

// beginPair takes the pair's lock unless this Storage already holds it
// (the unit of work continues: a miss followed by the Store of the
// certificate).
func (s *Storage) beginPair(ctx context.Context, lock string) error {
	s.mu.Lock()
	_, held := s.leases[lock]
	s.mu.Unlock()
	if held {
		return nil
	}
	if err := s.Lock(ctx, lock); err != nil {
		return err
	}
	l := &pairLease{}
	s.mu.Lock()
	s.leases[lock] = l
	l.timer = time.AfterFunc(s.opts.PairLease, func() { s.endPair(lock, l) })
	s.mu.Unlock()
	return nil
}

// endPair releases the pair's lock if lease (or, for nil, any lease of
// this Storage) still holds it. Whoever removes the lease from the map
// unlocks, so the timer and a normal end never both do.
func (s *Storage) endPair(lock string, lease *pairLease) {
	s.mu.Lock()
	l, held := s.leases[lock]
	if !held || (lease != nil && l != lease) {
		s.mu.Unlock()
		return
	}
	delete(s.leases, lock)
	s.mu.Unlock()
	l.timer.Stop()
	if err := s.Unlock(context.Background(), lock); err != nil {
		s.opts.Logger.Warn(err.Error())
	}
}
