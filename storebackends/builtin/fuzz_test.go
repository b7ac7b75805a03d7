package builtin

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzSecret is the value stored in the seed file; no error may ever
// contain it.
const fuzzSecret = "fuzz-secret-value-81c3"

// fuzzLimits keep every Open cheap: mutated KDF parameters may not make
// a single run allocate more than 256 KiB for argon2id.
var fuzzLimits = kdfLimits{maxTime: 2, maxMemoryKiB: 256}

// validSeedFile returns a real store file, opened with testPassword,
// holding two credentials.
func validSeedFile(t testing.TB) []byte {
	dir := t.TempDir()
	s, err := Open(dir, testPassword, Options{KDF: cheapKDF, Now: newStepClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{"API_KEY": fuzzSecret, "OTHER": "x"} {
		if _, err := s.Put(name, value); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// FuzzOpen feeds arbitrary bytes to Open as the store file. Open must
// return a store or an error, never panic, never change the file, and
// never put the stored value in an error. The seed corpus in testdata
// holds a valid store created with testPassword, so mutations also
// reach the decryption paths.
func FuzzOpen(f *testing.F) {
	valid := validSeedFile(f)
	f.Add(valid)
	f.Add([]byte{})
	f.Add([]byte("{}"))
	f.Add(bytes.Replace(valid, []byte(`"format_version": 1`), []byte(`"format_version": 2`), 1))
	f.Add(bytes.Replace(valid, []byte(`"argon2id"`), []byte(`"scrypt"`), 1))

	// One directory for all inputs: creating a fresh one per input made
	// the file system, not Open, the bottleneck of the fuzzer. Inputs
	// run one at a time within a process, and each overwrites the file.
	dir := f.TempDir()
	path := filepath.Join(dir, FileName)
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, testPassword, Options{KDF: cheapKDF, limits: fuzzLimits})
		if after, readErr := os.ReadFile(path); readErr != nil || !bytes.Equal(after, data) {
			t.Fatalf("Open changed or removed an existing file (read error %v)", readErr)
		}
		if err != nil {
			if strings.Contains(err.Error(), fuzzSecret) {
				t.Fatalf("error reveals a stored value: %v", err)
			}
			if s != nil {
				t.Fatal("Open returned both a store and an error")
			}
			return
		}
		// Whatever was accepted must hold up to the store's own rules.
		for _, m := range s.List() {
			value, _, ok := s.Get(m.Name)
			if !ok {
				t.Fatalf("listed credential %q is missing", m.Name)
			}
			if err := validateName(m.Name); err != nil {
				t.Fatal(err)
			}
			if err := validateValue(m.Name, value); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Put("FUZZ_PUT", "v"); err != nil {
			t.Fatalf("Put on an accepted store: %v", err)
		}
	})
}
