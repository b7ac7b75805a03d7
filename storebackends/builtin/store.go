// Package builtin is the credential store that ships with agent-vault:
// its values are encrypted with AES-256-GCM under a key derived from a
// master password with argon2id, and kept in the app's state database
// (through storebackends.Records), so every broker sharing the database
// serves the same credentials.
//
// Names, versions and update times are stored in clear (they are not
// secret, and the management API lists them); values only ever exist
// sealed outside this process. Every ciphertext is bound to its
// credential's name, version and update time, so moving or editing
// records in the database is detected when they are read.
//
// Open decrypts all values once and keeps them in memory, so reads never
// touch the database or the cipher; Reload (driven by the database's
// change feed) decrypts what another broker changed. Writes use
// optimistic concurrency on the record's version. The format does not
// protect against rollback: someone able to write the database can put
// back an older record made with the same password.
//
// The single-file format of earlier releases (credentials.json) is read
// only to import it (ReadFile).
package builtin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/sealbox"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// FileName is the name of an older release's store file inside the
// store directory; it is imported on first start.
const FileName = "credentials.json"

const (
	// maxValueLen bounds a credential value; values go into HTTP
	// headers, where anything larger is a mistake.
	maxValueLen = 64 << 10
	// maxFileSize bounds how much ReadFile reads, so a huge file fails
	// cleanly instead of exhausting memory.
	maxFileSize = 64 << 20
	// writeTimeout bounds one write to the database, so a hung
	// database fails the API request instead of holding it (and the
	// reloads the change feed runs, which wait for writeMu) for long.
	writeTimeout = 10 * time.Second
)

// KDFParams are the argon2id parameters; they are recorded in the
// header.
type KDFParams = sealbox.KDFParams

// DefaultKDF is used for new stores when Options.KDF is left zero. It
// follows the RFC 9106 recommendation for memory-constrained settings.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 2}

// Options configure Open. The zero value is ready to use.
type Options struct {
	// StoreName goes into Meta.Store; default "builtin".
	StoreName string
	// KDF is used only when Open creates a new header; an existing
	// store keeps the parameters recorded in it. Zero means DefaultKDF.
	KDF KDFParams
	// Now is the clock for UpdatedAt, replaceable in tests; default
	// time.Now.
	Now func() time.Time

	// limits bounds the KDF parameters Open accepts; zero means
	// sealbox.DefaultLimits. Tests (the fuzzer) lower it so that
	// mutated input cannot make each run allocate gigabytes.
	limits sealbox.Limits
}

// ErrWrongPassword means the master password does not open the store.
// A modified password check record looks the same.
var ErrWrongPassword = errors.New("the master password does not open this credential store")

// ErrInvalidInput marks errors caused by a bad credential name or value
// passed to Put or Delete, so callers can tell them from I/O failures
// (for example to answer 400 rather than 500).
var ErrInvalidInput = storebackends.ErrInvalidInput

// Store is an open built-in credential store. It is safe for concurrent
// use.
type Store struct {
	records   storebackends.Records
	storeName string
	now       func() time.Time
	box       *sealbox.Box

	// writeMu serialises writers and reloads across the database I/O,
	// so that mu is held only briefly and readers never wait on it, and
	// a reload cannot put back what a concurrent write replaced.
	writeMu  sync.Mutex
	mu       sync.RWMutex
	creds    map[string]credential // guarded by mu; replaced only under writeMu
	onChange atomic.Pointer[func()]
}

// credential is one decrypted credential together with its stored
// record, so a reload can tell whether it changed.
type credential struct {
	value  string
	record credentialRecord
}

// Open opens the store kept in records, creating its header (a fresh
// salt and a password check) if there is none yet: the first password
// used is the one the store keeps. When two brokers create the header
// at once, the one stored first wins and the other checks its password
// against it. Every record must decrypt, or Open fails.
//
// The caller may clear password after Open returns; the Store keeps
// only the derived cipher.
func Open(ctx context.Context, records storebackends.Records, password []byte, opts Options) (*Store, error) {
	if records == nil {
		return nil, errors.New("builtin store: no records to keep the store in")
	}
	if len(password) == 0 {
		return nil, errors.New("builtin store: the master password must not be empty")
	}
	if opts.StoreName == "" {
		opts.StoreName = "builtin"
	}
	if opts.KDF == (KDFParams{}) {
		opts.KDF = DefaultKDF
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.limits == (sealbox.Limits{}) {
		opts.limits = sealbox.DefaultLimits
	}
	// Checked even when the header exists, so a bad setting is noticed
	// before it is first needed.
	if err := opts.KDF.Validate(opts.limits); err != nil {
		return nil, fmt.Errorf("builtin store: invalid KDF options: %w", err)
	}
	fail := func(err error) (*Store, error) { return nil, fmt.Errorf("builtin store %q: %w", opts.StoreName, err) }

	s := &Store{records: records, storeName: opts.StoreName, now: opts.Now, creds: map[string]credential{}}
	doc, ok, err := records.Header(ctx)
	if err != nil {
		return fail(fmt.Errorf("reading the header: %w", err))
	}
	if !ok {
		h, box, err := newHeader(password, opts.KDF, opts.limits)
		if err != nil {
			return fail(err)
		}
		mine, err := json.Marshal(h)
		if err != nil {
			return fail(err)
		}
		if doc, err = records.CreateHeader(ctx, mine); err != nil {
			return fail(fmt.Errorf("creating the header: %w", err))
		}
		if bytes.Equal(doc, mine) {
			s.box = box
		}
		// Otherwise another broker created the header first: fall
		// through and open the store it made.
	}
	if s.box == nil {
		var h header
		if err := decodeStrict(doc, &h, "store header"); err != nil {
			return fail(err)
		}
		if err := h.checkStructure(opts.limits); err != nil {
			return fail(err)
		}
		if s.box, err = h.unlock(password, opts.limits); err != nil {
			return fail(err)
		}
	}
	if _, _, err := s.reloadLocked(ctx, true); err != nil {
		return fail(err)
	}
	return s, nil
}

// Reload re-reads the records, decrypts those that are new or changed
// and forgets those that are gone; the function set with SetOnChange
// runs if anything changed. A record that does not decrypt is not
// served (fail closed) and named in the error; the others are.
func (s *Store) Reload(ctx context.Context) error {
	s.writeMu.Lock()
	changed, bad, err := s.reloadLocked(ctx, false)
	s.writeMu.Unlock()
	if changed {
		if f := s.onChange.Load(); f != nil {
			(*f)()
		}
	}
	if err = errors.Join(err, bad); err != nil {
		return fmt.Errorf("builtin store %q: %w", s.storeName, err)
	}
	return nil
}

// SetOnChange registers the function Reload calls after a change (the
// app's rebuild of its merged view). Writes through Put and Delete do
// not call it: their caller rebuilds.
func (s *Store) SetOnChange(f func()) { s.onChange.Store(&f) }

// reloadLocked replaces the in-memory credentials with the stored ones;
// writeMu must be held. err is a failure to read (nothing changed).
// strict refuses the whole set if one record is bad (Open) and returns
// that as err; otherwise bad records are left out and reported in bad.
// The map is replaced, never changed in place, so a reader holding the
// old one needs no lock.
func (s *Store) reloadLocked(ctx context.Context, strict bool) (changed bool, bad, err error) {
	list, err := s.records.List(ctx)
	if err != nil {
		return false, nil, fmt.Errorf("reading the records: %w", err)
	}
	s.mu.RLock()
	current := s.creds
	s.mu.RUnlock()
	next := make(map[string]credential, len(list))
	var badNames []string
	var errs []error
	for _, r := range list {
		rec := fromRecord(r)
		if _, dup := next[r.Name]; dup {
			return false, nil, fmt.Errorf("credential %q is stored twice", r.Name)
		}
		if old, ok := current[r.Name]; ok && old.record.same(rec) {
			next[r.Name] = old
			continue
		}
		value, err := s.open(r.Name, rec)
		if err != nil {
			if strict {
				return false, nil, err
			}
			badNames = append(badNames, r.Name)
			errs = append(errs, err)
			continue
		}
		next[r.Name] = credential{value: value, record: rec}
		changed = true
	}
	for name := range current {
		if _, ok := next[name]; !ok {
			changed = true
		}
	}
	if changed {
		s.mu.Lock()
		s.creds = next
		s.mu.Unlock()
	}
	if len(badNames) > 0 {
		bad = fmt.Errorf("not serving %s: %w", strings.Join(badNames, ", "), errors.Join(errs...))
	}
	return changed, bad, nil
}

// open checks and decrypts one stored record.
func (s *Store) open(name string, rec credentialRecord) (string, error) {
	if err := checkRecord(name, rec); err != nil {
		return "", err
	}
	return decrypt(s.box, name, rec)
}

// Get returns the value and metadata of the named credential; ok is
// false if there is none.
func (s *Store) Get(name string) (value string, meta storebackends.Meta, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.creds[name]
	if !ok {
		return "", storebackends.Meta{}, false
	}
	return c.value, s.meta(name, c.record), true
}

// List returns the metadata of all credentials, sorted by name. It
// never includes values.
func (s *Store) List() []storebackends.Meta {
	s.mu.RLock()
	defer s.mu.RUnlock()
	metas := make([]storebackends.Meta, 0, len(s.creds))
	for _, name := range sortedKeys(s.creds) {
		metas = append(metas, s.meta(name, s.creds[name].record))
	}
	return metas
}

// Values returns a fresh copy of all values, by name.
func (s *Store) Values() map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	values := make(map[string]string, len(s.creds))
	for name, c := range s.creds {
		values[name] = c.value
	}
	return values
}

// Put sets the named credential to value and saves it. The version
// starts at "1" and grows by one on every Put, even when the value is
// unchanged: a Put is an explicit operator action and the version
// records it. A credential deleted and put again starts over at "1".
// If another broker changed the credential since this one read it, Put
// re-reads the records and tries once more; a second conflict is an
// error matching storebackends.ErrConflict. If saving fails, the store
// is left as it was.
func (s *Store) Put(name, value string) (storebackends.Meta, error) {
	if err := validateName(name); err != nil {
		return storebackends.Meta{}, err
	}
	if err := validateValue(name, value); err != nil {
		return storebackends.Meta{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	for attempt := 0; ; attempt++ {
		version := uint64(1)
		s.mu.RLock()
		old, ok := s.creds[name]
		s.mu.RUnlock()
		if ok {
			version = old.record.Version + 1
			if version == 0 {
				return storebackends.Meta{}, fmt.Errorf("credential %q: version counter is exhausted", name)
			}
		}
		rec := credentialRecord{Version: version, UpdatedAt: s.now().UTC()}
		rec.sealedRecord = seal(s.box, []byte(value), credentialAD(name, rec))
		err := s.records.Put(ctx, toRecord(name, rec))
		if errors.Is(err, storebackends.ErrConflict) && attempt == 0 {
			// Someone else wrote first: learn their version and retry.
			// A record that does not decrypt is simply replaced, so a
			// bad record is no reason to stop.
			if _, _, rerr := s.reloadLocked(ctx, false); rerr != nil {
				return storebackends.Meta{}, fmt.Errorf("saving credential %q: %w", name, errors.Join(err, rerr))
			}
			continue
		}
		if err != nil {
			return storebackends.Meta{}, fmt.Errorf("saving credential %q: %w", name, err)
		}
		s.mu.Lock()
		s.creds = maps.Clone(s.creds)
		s.creds[name] = credential{value: value, record: rec}
		s.mu.Unlock()
		return s.meta(name, rec), nil
	}
}

// Delete removes the named credential. It returns an error wrapping
// storebackends.ErrNotFound if there is none. If deleting fails, the
// store is left as it was.
func (s *Store) Delete(name string) error {
	if err := validateName(name); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	found, err := s.records.Delete(ctx, name)
	if err != nil {
		return fmt.Errorf("deleting credential %q: %w", name, err)
	}
	// Gone from the database either way: if another broker deleted it
	// first, this one stops serving it too.
	s.mu.Lock()
	if _, ok := s.creds[name]; ok {
		s.creds = maps.Clone(s.creds)
		delete(s.creds, name)
	}
	s.mu.Unlock()
	if !found {
		return fmt.Errorf("credential %q: %w", name, storebackends.ErrNotFound)
	}
	return nil
}

// meta builds the public description of a credential.
func (s *Store) meta(name string, rec credentialRecord) storebackends.Meta {
	return storebackends.Meta{
		Name:      name,
		Store:     s.storeName,
		Version:   strconv.FormatUint(rec.Version, 10),
		UpdatedAt: rec.UpdatedAt,
	}
}

// validateName checks a credential name and marks a failure as
// ErrInvalidInput.
func validateName(name string) error {
	if err := storebackends.ValidateName(name); err != nil {
		return invalidInputError{err}
	}
	return nil
}

// validateValue checks a credential value. Values are sent in HTTP
// headers, so control characters (other than tab) are refused: CR and LF
// would allow header injection and net/http rejects the rest anyway.
// Messages never include the value.
func validateValue(name, value string) error {
	invalid := func(problem string) error {
		return invalidInputError{fmt.Errorf("invalid value for credential %q: %s", name, problem)}
	}
	switch {
	case value == "":
		return invalid("it must not be empty")
	case len(value) > maxValueLen:
		return invalid(fmt.Sprintf("it is longer than %d bytes", maxValueLen))
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return invalid("it contains a control character such as CR, LF or NUL, which cannot be sent in an HTTP header")
		}
	}
	return nil
}

// invalidInputError marks an error caused by the caller's input, so
// that errors.Is(err, ErrInvalidInput) holds while the message stays
// unchanged.
type invalidInputError struct{ error }

func (e invalidInputError) Is(target error) bool { return target == ErrInvalidInput }
func (e invalidInputError) Unwrap() error        { return e.error }

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// SealAux seals a secret the broker keeps outside this store's records
// (a rotated refresh token of a read-only store) with this store's key.
// purpose binds it (say "token-source/GMAIL/refresh"): a sealed value
// opens only for the same purpose, never as a credential record.
func (s *Store) SealAux(purpose string, plaintext []byte) []byte {
	return s.box.SealJoined(plaintext, []byte(adPrefix+"aux/"+purpose))
}

// OpenAux opens what SealAux sealed for purpose.
func (s *Store) OpenAux(purpose string, sealed []byte) ([]byte, error) {
	return s.box.OpenJoined(sealed, []byte(adPrefix+"aux/"+purpose))
}

// Interface guards.
var (
	_ storebackends.Sealer   = (*Store)(nil)
	_ storebackends.Reloader = (*Store)(nil)
)
