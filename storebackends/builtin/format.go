package builtin

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"golang.org/x/crypto/argon2"
)

// On-disk format constants. Changing any of them changes the file
// format and needs a new formatVersion.
const (
	formatVersion = 1
	kdfAlgorithm  = "argon2id"
	saltLen       = 16
	keyLen        = 32 // AES-256
	nonceLen      = 12 // standard GCM nonce
	tagLen        = 16 // GCM authentication tag

	// adPrefix starts every piece of additional data, so a ciphertext
	// made for one purpose, name or format version never decrypts as
	// another.
	adPrefix = "agent-vault/builtin/v1/"
	checkAD  = adPrefix + "check"
	// checkPlaintext is what the password check record encrypts; only
	// its successful authentication matters, not the text itself.
	checkPlaintext = "agent-vault builtin credential store"
)

// kdfLimits bounds the KDF parameters Open accepts, so that a damaged or
// hostile file cannot make Open allocate or compute without limit.
type kdfLimits struct {
	maxTime      uint32
	maxMemoryKiB uint32
}

// defaultKDFLimits are generous for real use: argon2id with 4 GiB is
// already far beyond any sensible setting for this store.
var defaultKDFLimits = kdfLimits{maxTime: 100, maxMemoryKiB: 4 << 20}

// validate reports whether p can be used within limits.
func (p KDFParams) validate(limits kdfLimits) error {
	switch {
	case p.Time < 1:
		return errors.New("argon2id time must be at least 1")
	case p.Time > limits.maxTime:
		return fmt.Errorf("argon2id time %d is above the limit of %d", p.Time, limits.maxTime)
	case p.Threads < 1:
		return errors.New("argon2id threads must be at least 1")
	case p.MemoryKiB < 8*uint32(p.Threads):
		// argon2 needs at least 8 KiB per lane; refuse rather than let
		// the library silently change the parameters.
		return fmt.Errorf("argon2id memory %d KiB is below the minimum of 8 KiB per thread", p.MemoryKiB)
	case p.MemoryKiB > limits.maxMemoryKiB:
		return fmt.Errorf("argon2id memory %d KiB is above the limit of %d KiB", p.MemoryKiB, limits.maxMemoryKiB)
	}
	return nil
}

// storeFile is the JSON document kept in credentials.json.
type storeFile struct {
	FormatVersion int                         `json:"format_version"`
	KDF           kdfRecord                   `json:"kdf"`
	Check         sealedRecord                `json:"check"`
	Credentials   map[string]credentialRecord `json:"credentials"`
}

// kdfRecord says how to derive the key from the master password.
type kdfRecord struct {
	Algorithm string    `json:"algorithm"`
	Params    KDFParams `json:"params"`
	Salt      []byte    `json:"salt"` // base64 in JSON
}

// sealedRecord is one AES-256-GCM encryption; both fields are base64 in
// JSON.
type sealedRecord struct {
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// credentialRecord is one credential as stored on disk. The name is the
// map key in storeFile.Credentials; the value only exists encrypted.
type credentialRecord struct {
	Version   uint64    `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	sealedRecord
}

// credentialAD is the additional data for a credential's ciphertext. It
// binds the ciphertext to the credential's name and metadata, so moving
// a ciphertext to another name or editing its version or time in the
// file makes decryption fail. Names cannot contain '/', so the fields
// cannot run into each other.
func credentialAD(name string, rec credentialRecord) []byte {
	return []byte(adPrefix + "credential/" + name +
		"/" + strconv.FormatUint(rec.Version, 10) +
		"/" + rec.UpdatedAt.UTC().Format(time.RFC3339Nano))
}

// decodeStoreFile parses data strictly: unknown fields or trailing data
// mean a file this code does not understand, so it refuses it.
func decodeStoreFile(data []byte) (storeFile, error) {
	var f storeFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return storeFile{}, fmt.Errorf("not a valid store file: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return storeFile{}, errors.New("not a valid store file: unexpected data after the JSON document")
	}
	return f, nil
}

// checkStructure validates everything that can be checked without the
// key, so that a bad file is refused before the expensive KDF runs.
func (f *storeFile) checkStructure(limits kdfLimits) error {
	if f.FormatVersion != formatVersion {
		return fmt.Errorf("unsupported format version %d (this build reads version %d)", f.FormatVersion, formatVersion)
	}
	if f.KDF.Algorithm != kdfAlgorithm {
		return fmt.Errorf("unsupported key derivation algorithm %q (this build supports %q)", f.KDF.Algorithm, kdfAlgorithm)
	}
	if err := f.KDF.Params.validate(limits); err != nil {
		return fmt.Errorf("invalid key derivation parameters: %w", err)
	}
	if len(f.KDF.Salt) != saltLen {
		return fmt.Errorf("salt is %d bytes, want %d", len(f.KDF.Salt), saltLen)
	}
	if len(f.Check.Nonce) != nonceLen || len(f.Check.Ciphertext) != len(checkPlaintext)+tagLen {
		return errors.New("password check record is missing or malformed")
	}
	for name, rec := range f.Credentials {
		if err := validateName(name); err != nil {
			return err
		}
		if rec.Version < 1 {
			return fmt.Errorf("credential %q: version must be at least 1", name)
		}
		if len(rec.Nonce) != nonceLen {
			return fmt.Errorf("credential %q: nonce is %d bytes, want %d", name, len(rec.Nonce), nonceLen)
		}
		if n := len(rec.Ciphertext); n <= tagLen || n > maxValueLen+tagLen {
			return fmt.Errorf("credential %q: ciphertext length %d is out of range", name, n)
		}
	}
	return nil
}

// deriveAEAD turns the master password into the AES-256-GCM cipher.
// The parameters must have been validated.
func deriveAEAD(password []byte, kdf kdfRecord) (cipher.AEAD, error) {
	key := argon2.IDKey(password, kdf.Salt, kdf.Params.Time, kdf.Params.MemoryKiB, kdf.Params.Threads, keyLen)
	defer clear(key) // the AEAD keeps its own expanded key
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts plaintext under a fresh random nonce.
func seal(aead cipher.AEAD, plaintext, ad []byte) sealedRecord {
	nonce := randomBytes(nonceLen)
	return sealedRecord{Nonce: nonce, Ciphertext: aead.Seal(nil, nonce, plaintext, ad)}
}

// open decrypts and authenticates r; any failure means a wrong key or a
// modified record, which the caller reports.
func (r sealedRecord) open(aead cipher.AEAD, ad []byte) ([]byte, error) {
	return aead.Open(nil, r.Nonce, r.Ciphertext, ad)
}

// randomBytes returns n bytes from the system CSPRNG. Since Go 1.24
// crypto/rand.Read never returns an error (it aborts the program
// instead), so there is nothing to handle.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
