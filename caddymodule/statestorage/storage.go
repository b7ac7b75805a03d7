// Package statestorage is a certmagic.Storage over the state database,
// so that every broker of a cluster pointed at one database keeps its
// TLS assets — above all the PKI app's CA root and intermediate, with
// their private keys — in one place and signs under one CA, with no key
// copied by hand.
//
// Values are sealed (authenticated encryption, bound to their key)
// before they reach the database: whoever can read the database or a
// backup of it learns nothing of the CA keys without the master
// password, and a value edited in or moved within the database fails
// to load instead of being trusted.
package statestorage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// errPrefix starts every error, so a start-up or renewal failure says
// which storage it came from.
const errPrefix = "agent_vault_state storage: "

// adPrefix starts the additional data of every sealed value; the key
// follows it. Binding the key (and this format's name and version)
// means a sealed value copied to another key, or one made for another
// purpose under the same master password (the password check record
// is sealed under "agent-vault/caddy-storage/v1/check"), never opens.
const adPrefix = "agent-vault/caddy-storage/v1/value/"

// Backend is the part of the state database this storage needs. The
// methods match the state API's storage methods one for one, so the
// state database is used as is; values are opaque bytes (already
// sealed). Locks are given a TTL, not an expiry time: the backend
// computes the expiry and compares it with its own clock, the one
// clock all brokers share, so a broker whose clock runs ahead cannot
// take a lock another still holds.
type Backend interface {
	// StoragePut creates or replaces the value at key.
	StoragePut(ctx context.Context, key string, value []byte, modified time.Time) error
	// StorageCreate puts the value at key only if there is none, and
	// reports whether it did (first writer wins).
	StorageCreate(ctx context.Context, key string, value []byte, modified time.Time) (bool, error)
	// StorageGet returns the value at key; ok is false when there is none.
	StorageGet(ctx context.Context, key string) (value []byte, modified time.Time, ok bool, err error)
	// StorageDelete deletes key and every key under key+"/".
	StorageDelete(ctx context.Context, key string) (bool, error)
	// StorageList returns the keys equal to prefix or under prefix+"/"
	// (every key for prefix "").
	StorageList(ctx context.Context, prefix string) ([]Entry, error)
	// TryLock takes the named lock for owner for ttl (by the
	// backend's clock) if it is free, expired or already owner's.
	TryLock(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	// RefreshLock moves owner's lock expiry to ttl from the backend's
	// now; false if owner lost it.
	RefreshLock(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	// Unlock releases owner's lock, if owner still has it.
	Unlock(ctx context.Context, name, owner string) error
}

// Entry describes one stored value as the backend lists it. It is the
// state database's own type, so *state.DB is a Backend as it is.
type Entry = state.StorageEntry

// Sealer encrypts and authenticates values. Open must fail for any
// sealed value that was altered or sealed with other additional data.
type Sealer interface {
	Seal(plaintext, additionalData []byte) []byte
	Open(sealed, additionalData []byte) ([]byte, error)
}

// Options tune a Storage; the zero value gives the defaults.
type Options struct {
	// Now is the clock for modification times. Default: time.Now.
	// Lock expiry is the backend's (see Backend).
	Now func() time.Time
	// LockTTL is how long a lock outlives its holder's last refresh, so
	// a crashed broker's lock frees itself. Default: 1 minute.
	LockTTL time.Duration
	// RefreshInterval is how often a held lock is refreshed.
	// Default: LockTTL/3, so two refreshes may fail before it expires.
	RefreshInterval time.Duration
	// PollMin and PollMax bound the wait between attempts of a Lock
	// that finds the lock taken; the wait doubles from PollMin up to
	// PollMax. Defaults: 50ms and 1s.
	PollMin, PollMax time.Duration
	// PairLease bounds how long the lock on a CA certificate and key
	// pair is held for one unit of work (see pairs.go); generating a CA
	// key and storing both halves takes milliseconds. Default: 30s.
	PairLease time.Duration
	// Logger receives lock keep-alive problems. Default: no logging.
	Logger *zap.Logger
}

// Storage is a certmagic.Storage (and certmagic.TryLocker) over a
// Backend, with values sealed by a Sealer. It is safe for concurrent
// use.
type Storage struct {
	backend Backend
	sealer  Sealer
	opts    Options
	owners  ownerSource

	mu     sync.Mutex
	held   map[string]*heldLock  // locks taken through this Storage, by name
	leases map[string]*pairLease // CA pair locks held for a unit of work (pairs.go)

	closed bool // by Close; guarded by mu

	waits atomic.Int64 // how many times a Lock has started to wait (for tests)
}

// New returns a Storage over backend whose values are sealed by sealer.
func New(backend Backend, sealer Sealer, opts Options) *Storage {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = time.Minute
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = opts.LockTTL / 3
	}
	if opts.PollMin <= 0 {
		opts.PollMin = 50 * time.Millisecond
	}
	if opts.PollMax < opts.PollMin {
		opts.PollMax = max(time.Second, opts.PollMin)
	}
	if opts.PairLease <= 0 {
		opts.PairLease = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	return &Storage{
		backend: backend,
		sealer:  sealer,
		opts:    opts,
		owners:  newOwnerSource(),
		held:    make(map[string]*heldLock),
		leases:  make(map[string]*pairLease),
	}
}

// String names the storage in certmagic's and Caddy's logs.
func (s *Storage) String() string { return "agent_vault_state storage" }

// cleanKey gives a key its canonical form: slash-separated, no leading,
// trailing or doubled slashes, no "." or ".." components, as
// certmagic's file storage would resolve them. "" is the root.
func cleanKey(key string) string {
	return strings.Trim(path.Clean("/"+key), "/")
}

// additionalData binds a sealed value to its (clean) key.
func additionalData(key string) []byte {
	return []byte(adPrefix + key)
}

// notExist reports a missing key the way certmagic expects.
func notExist(key string) error {
	return fmt.Errorf(errPrefix+"%q: %w", key, fs.ErrNotExist)
}

// Store seals value and puts it at key, replacing any value there,
// except for a CA root (see storeRoot).
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	k := cleanKey(key)
	if k == "" {
		return errors.New(errPrefix + "cannot store a value at an empty key")
	}
	lock, isCert, pair := caPair(k)
	var lease *pairLease
	if pair && isCert {
		var err error
		if lease, err = s.beginPair(ctx, lock, true); err != nil {
			return err
		}
	}
	sealed := s.sealer.Seal(value, additionalData(k))
	var err error
	if pair && isRootPair(lock) {
		err = s.storeRoot(ctx, k, value, sealed)
	} else {
		err = s.backend.StoragePut(ctx, k, sealed, s.opts.Now())
	}
	switch {
	case !pair:
	case !isCert:
		s.completePair(lock, awaitKeyStore) // stored or not, the key ends the unit
	case err != nil:
		s.endPair(lock, lease) // a failure ends the unit
	default:
		s.awaitPair(lock, lease, awaitKeyStore)
	}
	if err != nil {
		return fmt.Errorf(errPrefix+"storing %q: %w", k, err)
	}
	return nil
}

// errRootExists refuses to replace a CA root. Caddy's PKI app stores a
// root only when it found none, so one already there was made by
// another broker in the meantime (the pair lock normally prevents it),
// and replacing it would split the cluster between two CAs.
var errRootExists = errors.New("a different CA root is stored there already (another broker created it) and a root is never replaced: restart to use the stored one, or delete the CA's pki/authorities/<id> keys to make a new CA")

// storeRoot puts a CA root certificate or key only where there is none:
// the pair lock already makes brokers take turns, and this is the
// defence should the lock ever fail (a lock lost while held). Storing
// the same value again, a retried Store, succeeds.
func (s *Storage) storeRoot(ctx context.Context, k string, value, sealed []byte) error {
	created, err := s.backend.StorageCreate(ctx, k, sealed, s.opts.Now())
	if err != nil || created {
		return err
	}
	stored, _, err := s.load(ctx, k)
	if err != nil {
		return err
	}
	if !bytes.Equal(stored, value) {
		return errRootExists
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist
// when there is none. A value that fails to open is an error of its
// own, never "not exist": the PKI app would take that as licence to
// generate and store a new CA over the damaged one.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	k := cleanKey(key)
	lock, isCert, pair := caPair(k)
	if !pair {
		value, _, err := s.load(ctx, k)
		return value, err
	}
	if !isCert {
		value, _, err := s.load(ctx, k)
		s.completePair(lock, awaitKeyLoad) // found or not, the key ends the unit
		return value, err
	}
	lease, err := s.beginPair(ctx, lock, false)
	if err != nil {
		return nil, err
	}
	value, _, err := s.load(ctx, k)
	// A certificate found is followed by a Load of its key, a missing
	// one by the Store of a new pair.
	switch {
	case err == nil:
		s.awaitPair(lock, lease, awaitKeyLoad)
	case errors.Is(err, fs.ErrNotExist):
		s.awaitPair(lock, lease, awaitCertStore)
	default:
		s.endPair(lock, lease)
	}
	return value, err
}

// load fetches and opens the value at the clean key k.
func (s *Storage) load(ctx context.Context, k string) ([]byte, time.Time, error) {
	sealed, modified, ok, err := s.backend.StorageGet(ctx, k)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf(errPrefix+"loading %q: %w", k, err)
	}
	if !ok {
		return nil, time.Time{}, notExist(k)
	}
	value, err := s.sealer.Open(sealed, additionalData(k))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf(errPrefix+"the value at %q does not authenticate: it was altered, moved from another key or sealed under another master password", k)
	}
	return value, modified, nil
}

// Delete removes key and, when key is a directory, everything under
// it. A missing key is not an error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	k := cleanKey(key)
	if _, err := s.backend.StorageDelete(ctx, k); err != nil {
		return fmt.Errorf(errPrefix+"deleting %q: %w", k, err)
	}
	return nil
}

// Exists reports whether key is a stored value or a directory (a
// prefix of stored keys). An error reads as false, as the contract
// has it.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	entries, err := s.backend.StorageList(ctx, cleanKey(key))
	return err == nil && len(entries) > 0
}

// List returns the keys in the directory prefix: its direct children
// (values and subdirectories) or, when recursive, every value and
// directory below it, in lexical order, as certmagic's file storage
// walks them. A prefix that is a value has no children; a prefix that
// is neither gives an error wrapping fs.ErrNotExist.
func (s *Storage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	p := cleanKey(prefix)
	entries, err := s.backend.StorageList(ctx, p)
	if err != nil {
		return nil, fmt.Errorf(errPrefix+"listing %q: %w", p, err)
	}
	if len(entries) == 0 {
		return nil, notExist(p)
	}
	base := ""
	if p != "" {
		base = p + "/"
	}
	seen := make(map[string]struct{})
	for _, e := range entries {
		rel, ok := strings.CutPrefix(e.Key, base)
		if !ok || rel == "" || e.Key == p {
			continue // the prefix itself, or not below it
		}
		parts := strings.Split(rel, "/")
		if !recursive {
			parts = parts[:1]
		}
		for i := range parts {
			seen[base+strings.Join(parts[:i+1], "/")] = struct{}{}
		}
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, nil
}

// Stat describes key: a stored value (terminal, with its modification
// time and plaintext size) or a directory (not terminal, with the
// newest modification time below it). The value is opened to learn
// its size, so a damaged value fails Stat as it would fail Load.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	k := cleanKey(key)
	value, modified, err := s.load(ctx, k)
	switch {
	case err == nil:
		return certmagic.KeyInfo{Key: k, Modified: modified, Size: int64(len(value)), IsTerminal: true}, nil
	case !errors.Is(err, fs.ErrNotExist):
		return certmagic.KeyInfo{}, err
	}
	entries, err := s.backend.StorageList(ctx, k)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf(errPrefix+"stat %q: %w", k, err)
	}
	if len(entries) == 0 {
		return certmagic.KeyInfo{}, notExist(k)
	}
	info := certmagic.KeyInfo{Key: k}
	for _, e := range entries {
		if e.Modified.After(info.Modified) {
			info.Modified = e.Modified
		}
	}
	return info, nil
}

// Interface guards
var (
	_ certmagic.Storage   = (*Storage)(nil)
	_ certmagic.TryLocker = (*Storage)(nil)
)
