package builtin

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/internal/sealbox"
)

// fuzzSecret is the value stored in the seed file; no error may ever
// contain it.
const fuzzSecret = "fuzz-secret-value-81c3"

// fuzzLimits keep every read cheap: mutated KDF parameters may not make
// a single run allocate more than 256 KiB for argon2id.
var fuzzLimits = sealbox.Limits{MaxTime: 2, MaxMemoryKiB: 256}

// corpusBytes returns the input of a seed corpus entry in testdata.
func corpusBytes(t testing.TB, name string) []byte {
	raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzReadFile", name))
	if err != nil {
		t.Fatal(err)
	}
	_, lit, ok := strings.Cut(string(raw), "[]byte(")
	if !ok {
		t.Fatalf("corpus entry %s is not a []byte", name)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimSpace(lit), ")"))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

// FuzzReadFile feeds arbitrary bytes to ReadFile as an old store file.
// It must return records or an error, never panic, never change the
// file, and never put the stored value in an error; whatever it
// accepts must import into a store that opens. The seed corpus in
// testdata holds a valid store created with testPassword, so mutations
// also reach the decryption paths.
func FuzzReadFile(f *testing.F) {
	valid := corpusBytes(f, "valid_store")
	f.Add(valid)
	f.Add([]byte{})
	f.Add([]byte("{}"))
	f.Add(bytes.Replace(valid, []byte(`"format_version": 1`), []byte(`"format_version": 2`), 1))
	f.Add(bytes.Replace(valid, []byte(`"argon2id"`), []byte(`"scrypt"`), 1))

	// One directory for all inputs: creating a fresh one per input made
	// the file system, not ReadFile, the bottleneck of the fuzzer.
	path := filepath.Join(f.TempDir(), FileName)
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		hdr, records, err := readFile(path, testPassword, fuzzLimits)
		if after, readErr := os.ReadFile(path); readErr != nil || !bytes.Equal(after, data) {
			t.Fatalf("ReadFile changed or removed the file (read error %v)", readErr)
		}
		if err != nil {
			if strings.Contains(err.Error(), fuzzSecret) {
				t.Fatalf("error reveals a stored value: %v", err)
			}
			if hdr != nil || records != nil {
				t.Fatal("ReadFile returned both records and an error")
			}
			return
		}
		// Whatever was accepted must import and open under the store's
		// own rules.
		recs := newMemRecords()
		if err := recs.Import(context.Background(), hdr, records); err != nil {
			t.Fatal(err)
		}
		s, err := Open(context.Background(), recs, testPassword, Options{KDF: cheapKDF, limits: fuzzLimits})
		if err != nil {
			t.Fatalf("an accepted file does not open once imported: %v", err)
		}
		if len(s.List()) != len(records) {
			t.Fatalf("imported %d records, the store serves %d", len(records), len(s.List()))
		}
		if _, err := s.Put("FUZZ_PUT", "v"); err != nil {
			t.Fatalf("Put on an imported store: %v", err)
		}
	})
}
