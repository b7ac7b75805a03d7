package builtin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/sealbox"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// Format constants shared by the header in the state database and the
// old credentials.json. Changing any of them changes the format and
// needs a new formatVersion; records imported from a file must still
// open.
const (
	formatVersion = 1
	kdfAlgorithm  = sealbox.Algorithm
	saltLen       = sealbox.SaltLen
	nonceLen      = sealbox.NonceLen
	tagLen        = sealbox.TagLen

	// adPrefix starts every piece of additional data, so a ciphertext
	// made for one purpose, name or format version never decrypts as
	// another.
	adPrefix = "agent-vault/builtin/v1/"
	checkAD  = adPrefix + "check"
	// checkPlaintext is what the password check record encrypts; only
	// its successful authentication matters, not the text itself.
	checkPlaintext = "agent-vault builtin credential store"
)

// header is the part of a store that never changes after it is
// created: it says how to derive the key and lets a password be
// checked before any record is read. It is stored as JSON through
// storebackends.Records.Header, and was the top of credentials.json.
type header struct {
	FormatVersion int          `json:"format_version"`
	KDF           kdfRecord    `json:"kdf"`
	Check         sealedRecord `json:"check"`
}

// storeFile is the JSON document an older release kept in
// credentials.json; it is read only to import it.
type storeFile struct {
	header
	Credentials map[string]credentialRecord `json:"credentials"`
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

// credentialRecord is one credential as stored. The value only exists
// encrypted.
type credentialRecord struct {
	Version   uint64    `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	sealedRecord
}

// same reports whether two records are the same stored record, so a
// reload decrypts only what changed.
func (r credentialRecord) same(o credentialRecord) bool {
	return r.Version == o.Version && r.UpdatedAt.Equal(o.UpdatedAt) &&
		bytes.Equal(r.Nonce, o.Nonce) && bytes.Equal(r.Ciphertext, o.Ciphertext)
}

// credentialAD is the additional data for a credential's ciphertext. It
// binds the ciphertext to the credential's name and metadata, so moving
// a ciphertext to another name or editing its version or time makes
// decryption fail. Names cannot contain '/', so the fields cannot run
// into each other. It is the same in the file and the database, so an
// import copies records verbatim.
func credentialAD(name string, rec credentialRecord) []byte {
	return []byte(adPrefix + "credential/" + name +
		"/" + strconv.FormatUint(rec.Version, 10) +
		"/" + rec.UpdatedAt.UTC().Format(time.RFC3339Nano))
}

// decodeStrict parses data into v strictly: unknown fields or trailing
// data mean a document this code does not understand, so it refuses it.
func decodeStrict(data []byte, v any, what string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("not a valid %s: %w", what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("not a valid %s: unexpected data after the JSON document", what)
	}
	return nil
}

// checkStructure validates everything in the header that can be
// checked without the key, so that a bad header is refused before the
// expensive KDF runs.
func (h *header) checkStructure(limits sealbox.Limits) error {
	if h.FormatVersion != formatVersion {
		return fmt.Errorf("unsupported format version %d (this build reads version %d)", h.FormatVersion, formatVersion)
	}
	if h.KDF.Algorithm != kdfAlgorithm {
		return fmt.Errorf("unsupported key derivation algorithm %q (this build supports %q)", h.KDF.Algorithm, kdfAlgorithm)
	}
	if err := h.KDF.Params.Validate(limits); err != nil {
		return fmt.Errorf("invalid key derivation parameters: %w", err)
	}
	if len(h.KDF.Salt) != saltLen {
		return fmt.Errorf("salt is %d bytes, want %d", len(h.KDF.Salt), saltLen)
	}
	if len(h.Check.Nonce) != nonceLen || len(h.Check.Ciphertext) != len(checkPlaintext)+tagLen {
		return errors.New("password check record is missing or malformed")
	}
	return nil
}

// checkRecord validates a credential record's structure (not its seal).
func checkRecord(name string, rec credentialRecord) error {
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
	return nil
}

// newHeader makes the header of a new store: a fresh salt and a check
// record sealed under the derived key.
func newHeader(password []byte, params KDFParams, limits sealbox.Limits) (header, *sealbox.Box, error) {
	h := header{
		FormatVersion: formatVersion,
		KDF:           kdfRecord{Algorithm: kdfAlgorithm, Params: params, Salt: sealbox.Random(saltLen)},
	}
	box, err := sealbox.Derive(password, h.KDF.Salt, params, limits)
	if err != nil {
		return header{}, nil, err
	}
	h.Check = seal(box, []byte(checkPlaintext), []byte(checkAD))
	return h, box, nil
}

// unlock derives the key from password and checks it against the
// check record. The structure must have been checked.
func (h *header) unlock(password []byte, limits sealbox.Limits) (*sealbox.Box, error) {
	box, err := sealbox.Derive(password, h.KDF.Salt, h.KDF.Params, limits)
	if err != nil {
		return nil, err
	}
	if _, err := h.Check.open(box, []byte(checkAD)); err != nil {
		return nil, ErrWrongPassword
	}
	return box, nil
}

// decrypt opens a credential record and checks its value; errors name
// the credential, never the value.
func decrypt(box *sealbox.Box, name string, rec credentialRecord) (string, error) {
	plain, err := rec.open(box, credentialAD(name, rec))
	if err != nil {
		return "", fmt.Errorf("credential %q does not decrypt: the record was modified or damaged", name)
	}
	value := string(plain)
	if err := validateValue(name, value); err != nil {
		return "", err
	}
	return value, nil
}

// seal encrypts plaintext under a fresh random nonce.
func seal(box *sealbox.Box, plaintext, ad []byte) sealedRecord {
	nonce, ct := box.Seal(plaintext, ad)
	return sealedRecord{Nonce: nonce, Ciphertext: ct}
}

// open decrypts and authenticates r; any failure means a wrong key or a
// modified record, which the caller reports.
func (r sealedRecord) open(box *sealbox.Box, ad []byte) ([]byte, error) {
	return box.Open(r.Nonce, r.Ciphertext, ad)
}

// ReadFile reads an older release's credentials.json so it can be
// imported: it checks the file as strictly as that release did, checks
// password against it and decrypts every record (a file that does not
// fully open is refused, never half imported). It returns the header
// document to store and the records as they are, still sealed: the
// database keeps the same ciphertexts.
func ReadFile(path string, password []byte) (headerDoc []byte, records []storebackends.Record, err error) {
	return readFile(path, password, sealbox.DefaultLimits)
}

// readFile is ReadFile with KDF limits, lowered by the fuzzer.
func readFile(path string, password []byte, limits sealbox.Limits) ([]byte, []storebackends.Record, error) {
	fail := func(err error) ([]byte, []storebackends.Record, error) {
		return nil, nil, fmt.Errorf("builtin store %s: %w", path, err)
	}
	data, err := readLimited(path, maxFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	if err != nil {
		return fail(err)
	}
	if len(data) == 0 {
		return fail(errors.New("the file is empty"))
	}
	var f storeFile
	if err := decodeStrict(data, &f, "store file"); err != nil {
		return fail(err)
	}
	if err := f.checkStructure(limits); err != nil {
		return fail(err)
	}
	for _, name := range sortedKeys(f.Credentials) {
		if err := checkRecord(name, f.Credentials[name]); err != nil {
			return fail(err)
		}
	}
	box, err := f.unlock(password, limits)
	if err != nil {
		return fail(err)
	}
	records := make([]storebackends.Record, 0, len(f.Credentials))
	for _, name := range sortedKeys(f.Credentials) {
		rec := f.Credentials[name]
		if _, err := decrypt(box, name, rec); err != nil {
			return fail(err)
		}
		records = append(records, toRecord(name, rec))
	}
	doc, err := json.Marshal(f.header)
	if err != nil {
		return fail(err)
	}
	return doc, records, nil
}

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

// toRecord and fromRecord convert between the stored form and the
// format's.
func toRecord(name string, rec credentialRecord) storebackends.Record {
	return storebackends.Record{Name: name, Version: rec.Version, UpdatedAt: rec.UpdatedAt.UTC(), Nonce: rec.Nonce, Ciphertext: rec.Ciphertext}
}

func fromRecord(r storebackends.Record) credentialRecord {
	return credentialRecord{Version: r.Version, UpdatedAt: r.UpdatedAt.UTC(), sealedRecord: sealedRecord{Nonce: r.Nonce, Ciphertext: r.Ciphertext}}
}
