package statestorage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/agentvault/caddy-agent-vault/internal/sealbox"
)

// The sealing key is derived from the master password with argon2id
// and a salt kept in the state database's meta table, so every broker
// given the same password derives the same key, and nothing but the
// password needs to travel between them. The same record holds a
// check value sealed under the key, so a broker given another password
// stops at start-up instead of writing values no other broker can
// read (or failing to read the CA later).
const (
	// kdfMetaKey is the meta row of the record.
	kdfMetaKey = "caddy_storage_kdf"
	// kdfLockName serialises the creation of the record, so brokers
	// starting together on an empty database derive the expensive key
	// once each rather than race; agreement on one salt comes from
	// ClaimMeta, which never replaces a record, even should the lock
	// fail.
	kdfLockName = "agent_vault_state/caddy_storage_kdf"
	// kdfFormatVersion is the record's format.
	kdfFormatVersion = 1
	// checkAD and checkPlaintext make the password check; only their
	// successful authentication matters, not the text.
	checkAD        = "agent-vault/caddy-storage/v1/check"
	checkPlaintext = "agent-vault caddy storage"
)

// defaultKDF is the cost of a new record's derivation: the built-in
// store's. Recorded in the database, so later brokers use the cost the
// record was made with. A variable so tests can make it cheap.
var defaultKDF = sealbox.KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 2}

// MetaStore is the part of the state database that keeps the record.
// The methods match the state API's.
type MetaStore interface {
	// Meta returns the row at key; ok is false when there is none.
	Meta(ctx context.Context, key string) (string, bool, error)
	// ClaimMeta writes value at key unless a row is there already and
	// returns the row stored: the first writer wins.
	ClaimMeta(ctx context.Context, key, value string) (string, error)
}

// kdfRecord is the meta row's JSON document.
type kdfRecord struct {
	FormatVersion int `json:"format_version"`
	KDF           struct {
		Algorithm string            `json:"algorithm"`
		Params    sealbox.KDFParams `json:"params"`
		Salt      []byte            `json:"salt"` // base64 in JSON
	} `json:"kdf"`
	Check []byte `json:"check"` // base64 in JSON: SealJoined(checkPlaintext, checkAD)
}

// boxSealer is a Sealer over a sealbox.Box: the nonce travels in front
// of the ciphertext, as one opaque value.
type boxSealer struct{ box *sealbox.Box }

func (b boxSealer) Seal(plaintext, ad []byte) []byte { return b.box.SealJoined(plaintext, ad) }

func (b boxSealer) Open(sealed, ad []byte) ([]byte, error) { return b.box.OpenJoined(sealed, ad) }

// errWrongPassword is the start-up error for a password that does not
// open the record; it never shows the password.
var errWrongPassword = errors.New(errPrefix + "the master password does not match the one this state database's storage was set up with (every broker of a cluster needs the same master password)")

// openSealer derives the sealing key from password, creating the
// database's record on first use. locker (a Storage over the same
// database) takes the creation lock; its own sealer is not used.
func openSealer(ctx context.Context, meta MetaStore, locker *Storage, password []byte) (Sealer, error) {
	doc, ok, err := meta.Meta(ctx, kdfMetaKey)
	if err != nil {
		return nil, fmt.Errorf(errPrefix+"reading the key derivation record: %w", err)
	}
	var created *recordSealer
	if !ok {
		// doc is what the database kept: the record every broker uses,
		// whoever wrote it.
		if created, doc, err = createRecord(ctx, meta, locker, password); err != nil {
			return nil, err
		}
	}
	rec, err := decodeRecord(doc)
	if err != nil {
		return nil, err
	}
	if created != nil && created.doc == doc {
		return created.boxSealer, nil // ours was kept: no second derivation
	}
	box, err := sealbox.Derive(password, rec.KDF.Salt, rec.KDF.Params, sealbox.DefaultLimits)
	if err != nil {
		return nil, fmt.Errorf(errPrefix+"deriving the sealing key: %w", err)
	}
	if _, err := box.OpenJoined(rec.Check, []byte(checkAD)); err != nil {
		return nil, errWrongPassword
	}
	return boxSealer{box}, nil
}

// recordSealer is the sealer made with a new record, and the record.
type recordSealer struct {
	boxSealer
	doc string
}

// createRecord claims the record under the creation lock, unless
// another broker wrote one first, and returns the record stored. The
// sealer is the one of the record this broker made, or nil when it
// made none; it is the stored record's only if doc equals its doc.
func createRecord(ctx context.Context, meta MetaStore, locker *Storage, password []byte) (*recordSealer, string, error) {
	if err := locker.Lock(ctx, kdfLockName); err != nil {
		return nil, "", err
	}
	defer func() { _ = locker.Unlock(ctx, kdfLockName) }()
	if doc, ok, err := meta.Meta(ctx, kdfMetaKey); err != nil || ok {
		if err != nil {
			return nil, "", fmt.Errorf(errPrefix+"reading the key derivation record: %w", err)
		}
		return nil, doc, nil // another broker was first
	}
	var rec kdfRecord
	rec.FormatVersion = kdfFormatVersion
	rec.KDF.Algorithm = sealbox.Algorithm
	rec.KDF.Params = defaultKDF
	rec.KDF.Salt = sealbox.Random(sealbox.SaltLen)
	box, err := sealbox.Derive(password, rec.KDF.Salt, rec.KDF.Params, sealbox.DefaultLimits)
	if err != nil {
		return nil, "", fmt.Errorf(errPrefix+"deriving the sealing key: %w", err)
	}
	rec.Check = box.SealJoined([]byte(checkPlaintext), []byte(checkAD))
	doc, err := json.Marshal(rec)
	if err != nil {
		return nil, "", err
	}
	// Insert-if-absent: a record another broker wrote in the meantime
	// (its lock and ours overlapped, say during the slow derivation
	// above) is kept, and its key is the one to use: that broker may
	// already have sealed values with it.
	stored, err := meta.ClaimMeta(ctx, kdfMetaKey, string(doc))
	if err != nil {
		return nil, "", fmt.Errorf(errPrefix+"writing the key derivation record: %w", err)
	}
	return &recordSealer{boxSealer{box}, string(doc)}, stored, nil
}

// decodeRecord parses a record strictly and checks everything that can
// be checked before the expensive derivation, so a damaged or hostile
// record is refused cheaply.
func decodeRecord(doc string) (kdfRecord, error) {
	var rec kdfRecord
	dec := json.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return kdfRecord{}, fmt.Errorf(errPrefix+"the key derivation record is not valid: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return kdfRecord{}, errors.New(errPrefix + "the key derivation record is not valid: unexpected data after it")
	}
	switch {
	case rec.FormatVersion != kdfFormatVersion:
		return kdfRecord{}, fmt.Errorf(errPrefix+"the key derivation record has format version %d; this build reads version %d", rec.FormatVersion, kdfFormatVersion)
	case rec.KDF.Algorithm != sealbox.Algorithm:
		return kdfRecord{}, fmt.Errorf(errPrefix+"the key derivation record uses %q; this build supports %q", rec.KDF.Algorithm, sealbox.Algorithm)
	case len(rec.KDF.Salt) != sealbox.SaltLen:
		return kdfRecord{}, fmt.Errorf(errPrefix+"the key derivation record's salt is %d bytes, want %d", len(rec.KDF.Salt), sealbox.SaltLen)
	case len(rec.Check) != sealbox.NonceLen+len(checkPlaintext)+sealbox.TagLen:
		return kdfRecord{}, errors.New(errPrefix + "the key derivation record's password check is malformed")
	}
	if err := rec.KDF.Params.Validate(sealbox.DefaultLimits); err != nil {
		return kdfRecord{}, fmt.Errorf(errPrefix+"the key derivation record's parameters are not valid: %v", err)
	}
	return rec, nil
}
