// Package builtin is the credential store that ships with agent-vault:
// a single file, credentials.json, whose values are encrypted with
// AES-256-GCM under a key derived from a master password with argon2id.
//
// Names, versions and update times are stored in clear (they are not
// secret, and the management API lists them); values only ever exist
// encrypted on disk. Every ciphertext is bound to its credential's name,
// version and update time, so moving or editing records in the file is
// detected when the store is opened.
//
// Open decrypts all values once and keeps them in memory, so reads never
// touch the disk or the cipher. A Store assumes it is the only writer of
// its file: two Stores (or processes) writing the same file overwrite
// each other's changes. The format does not protect against rollback:
// someone able to write the file can replace it with an older copy made
// with the same password.
package builtin

import (
	"crypto/cipher"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/atomicfile"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// FileName is the name of the store file inside the store directory.
const FileName = "credentials.json"

const (
	// maxValueLen bounds a credential value; values go into HTTP
	// headers, where anything larger is a mistake.
	maxValueLen = 64 << 10
	// maxFileSize bounds how much Open reads, so a huge file fails
	// cleanly instead of exhausting memory.
	maxFileSize = 64 << 20
)

// KDFParams are the argon2id parameters; they are recorded in the file.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultKDF is used for new stores when Options.KDF is left zero. It
// follows the RFC 9106 recommendation for memory-constrained settings.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 2}

// Options configure Open. The zero value is ready to use.
type Options struct {
	// StoreName goes into Meta.Store; default "builtin".
	StoreName string
	// KDF is used only when Open creates a new file; an existing file
	// keeps the parameters recorded in it. Zero means DefaultKDF.
	KDF KDFParams
	// Now is the clock for UpdatedAt, replaceable in tests; default
	// time.Now.
	Now func() time.Time

	// limits bounds the KDF parameters Open accepts; zero means
	// defaultKDFLimits. Tests (the fuzzer) lower it so that a mutated
	// file cannot make each run allocate gigabytes.
	limits kdfLimits
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
	path      string
	storeName string
	now       func() time.Time
	aead      cipher.AEAD
	// header holds the parts of the file that never change after Open:
	// format version, KDF record and password check record.
	header storeFile

	// writeMu serializes writers across the slow disk I/O, so that mu
	// is held only briefly and readers are not blocked by fsync.
	writeMu sync.Mutex
	mu      sync.RWMutex
	creds   map[string]credential // guarded by mu; replaced entries only under writeMu
}

// credential is one decrypted credential together with its on-disk
// record, which is written back unchanged when other credentials change.
type credential struct {
	value  string
	record credentialRecord
}

// Open opens the store in dir, creating dir (mode 0700) and a new empty
// store file (mode 0600) if there is none yet. A new file is written
// immediately, so the first password used is the one the store keeps.
//
// The caller may clear password after Open returns; the Store keeps
// only the derived cipher.
func Open(dir string, password []byte, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("builtin store: the store directory must be set")
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
	if opts.limits == (kdfLimits{}) {
		opts.limits = defaultKDFLimits
	}
	// Checked even when the file exists, so a bad setting is noticed
	// before it is first needed.
	if err := opts.KDF.validate(opts.limits); err != nil {
		return nil, fmt.Errorf("builtin store: invalid KDF options: %w", err)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("builtin store: creating directory: %w", err)
	}
	s := &Store{
		path:      filepath.Join(dir, FileName),
		storeName: opts.StoreName,
		now:       opts.Now,
		creds:     map[string]credential{},
	}
	data, err := readLimited(s.path, maxFileSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		err = s.create(password, opts.KDF)
	case err != nil:
		err = fmt.Errorf("builtin store: reading %s: %w", s.path, err)
	default:
		err = s.load(data, password, opts.limits)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// create sets up a new store with a fresh salt and writes it out.
func (s *Store) create(password []byte, params KDFParams) error {
	s.header = storeFile{
		FormatVersion: formatVersion,
		KDF:           kdfRecord{Algorithm: kdfAlgorithm, Params: params, Salt: randomBytes(saltLen)},
	}
	aead, err := deriveAEAD(password, s.header.KDF)
	if err != nil {
		return fmt.Errorf("builtin store %s: %w", s.path, err)
	}
	s.aead = aead
	s.header.Check = seal(aead, []byte(checkPlaintext), []byte(checkAD))
	if err := s.write(map[string]credentialRecord{}); err != nil {
		return fmt.Errorf("builtin store: creating %s: %w", s.path, err)
	}
	return nil
}

// load parses, checks and decrypts an existing store file.
func (s *Store) load(data []byte, password []byte, limits kdfLimits) error {
	fail := func(err error) error { return fmt.Errorf("builtin store %s: %w", s.path, err) }
	if len(data) == 0 {
		return fail(errors.New("the file is empty"))
	}
	f, err := decodeStoreFile(data)
	if err != nil {
		return fail(err)
	}
	if err := f.checkStructure(limits); err != nil {
		return fail(err)
	}
	aead, err := deriveAEAD(password, f.KDF)
	if err != nil {
		return fail(err)
	}
	if _, err := f.Check.open(aead, []byte(checkAD)); err != nil {
		return fail(ErrWrongPassword)
	}
	for _, name := range sortedKeys(f.Credentials) {
		rec := f.Credentials[name]
		plain, err := rec.open(aead, credentialAD(name, rec))
		if err != nil {
			return fail(fmt.Errorf("credential %q does not decrypt: the file was modified or damaged", name))
		}
		value := string(plain)
		if err := validateValue(name, value); err != nil {
			return fail(err)
		}
		s.creds[name] = credential{value: value, record: rec}
	}
	s.aead = aead
	f.Credentials = nil
	s.header = f
	return nil
}

// Path returns the path of the store file.
func (s *Store) Path() string { return s.path }

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

// Put sets the named credential to value and saves the store. The
// version starts at "1" and grows by one on every Put, even when the
// value is unchanged: a Put is an explicit operator action and the
// version records it. A credential deleted and put again starts over at
// "1". If saving fails, the store is left as it was; the one exception
// is a failure to sync the directory after the new file is in place,
// where the change is kept and Put returns both the Meta and an error.
func (s *Store) Put(name, value string) (storebackends.Meta, error) {
	if err := validateName(name); err != nil {
		return storebackends.Meta{}, err
	}
	if err := validateValue(name, value); err != nil {
		return storebackends.Meta{}, err
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()

	records := s.records()
	version := uint64(1)
	if old, ok := records[name]; ok {
		version = old.Version + 1
		if version == 0 {
			return storebackends.Meta{}, fmt.Errorf("credential %q: version counter is exhausted", name)
		}
	}
	rec := credentialRecord{Version: version, UpdatedAt: s.now().UTC()}
	rec.sealedRecord = seal(s.aead, []byte(value), credentialAD(name, rec))
	records[name] = rec

	err := s.write(records)
	if err != nil && !errors.Is(err, errNotDurable) {
		return storebackends.Meta{}, fmt.Errorf("saving credential %q: %w", name, err)
	}
	s.mu.Lock()
	s.creds[name] = credential{value: value, record: rec}
	s.mu.Unlock()
	if err != nil {
		return s.meta(name, rec), fmt.Errorf("saving credential %q: %w", name, err)
	}
	return s.meta(name, rec), nil
}

// Delete removes the named credential and saves the store. It returns
// an error wrapping storebackends.ErrNotFound if there is none. If
// saving fails, the store is left as it was (with the same exception
// as Put).
func (s *Store) Delete(name string) error {
	if err := validateName(name); err != nil {
		return err
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()

	records := s.records()
	if _, ok := records[name]; !ok {
		return fmt.Errorf("credential %q: %w", name, storebackends.ErrNotFound)
	}
	delete(records, name)

	err := s.write(records)
	if err != nil && !errors.Is(err, errNotDurable) {
		return fmt.Errorf("deleting credential %q: %w", name, err)
	}
	s.mu.Lock()
	delete(s.creds, name)
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("deleting credential %q: %w", name, err)
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

// records returns a copy of the on-disk records of all credentials, for
// a writer to change and save.
func (s *Store) records() map[string]credentialRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	records := make(map[string]credentialRecord, len(s.creds))
	for name, c := range s.creds {
		records[name] = c.record
	}
	return records
}

// write saves the store with the given credential records, replacing the
// file atomically: a crash leaves either the old or the new file, never
// a mix.
func (s *Store) write(records map[string]credentialRecord) error {
	f := s.header
	f.Credentials = records
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.path, data, 0o600)
}

// errNotDurable means the file is in place but may not survive a crash
// (see atomicfile.ErrNotDurable): the Store keeps the change.
var errNotDurable = atomicfile.ErrNotDurable

// readLimited reads the file at path, failing if it is larger than
// limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("the file is larger than %d bytes", limit)
	}
	return data, nil
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
