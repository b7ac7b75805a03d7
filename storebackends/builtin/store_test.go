package builtin

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// cheapKDF keeps tests fast; real stores use DefaultKDF.
var cheapKDF = KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

var testPassword = []byte("correct horse battery staple")

// stepClock is a deterministic clock that advances one second per call.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func newStepClock() *stepClock {
	return &stepClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func testOptions(clock *stepClock) Options {
	return Options{KDF: cheapKDF, Now: clock.Now}
}

func mustOpen(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, testPassword, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func mustPut(t *testing.T, s *Store, name, value string) storebackends.Meta {
	t.Helper()
	m, err := s.Put(name, value)
	if err != nil {
		t.Fatalf("Put(%q): %v", name, err)
	}
	return m
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	clock := newStepClock()
	s := mustOpen(t, dir, testOptions(clock))

	if got := s.List(); len(got) != 0 {
		t.Fatalf("new store lists %v, want nothing", got)
	}
	if s.Path() != filepath.Join(dir, FileName) {
		t.Errorf("Path() = %q", s.Path())
	}

	mzeta := mustPut(t, s, "zeta", "value-z")
	want := storebackends.Meta{Name: "zeta", Store: "builtin", Version: "1", UpdatedAt: clock.t}
	if mzeta != want {
		t.Errorf("Put meta = %+v, want %+v", mzeta, want)
	}
	mustPut(t, s, "ALPHA", "value-a1")
	if m := mustPut(t, s, "ALPHA", "value-a2"); m.Version != "2" {
		t.Errorf("second Put version = %q, want 2", m.Version)
	}
	// Putting the same value again is still an operator action.
	if m := mustPut(t, s, "ALPHA", "value-a2"); m.Version != "3" || !m.UpdatedAt.Equal(clock.t) {
		t.Errorf("unchanged Put meta = %+v, want version 3 at %v", m, clock.t)
	}

	value, meta, ok := s.Get("ALPHA")
	if !ok || value != "value-a2" || meta.Version != "3" || meta.Name != "ALPHA" {
		t.Errorf("Get(ALPHA) = %q, %+v, %v", value, meta, ok)
	}
	if _, _, ok := s.Get("missing"); ok {
		t.Error("Get(missing) reported ok")
	}

	list := s.List()
	if len(list) != 2 || list[0].Name != "ALPHA" || list[1].Name != "zeta" {
		t.Fatalf("List() = %+v, want ALPHA then zeta", list)
	}
	if list[1] != mzeta {
		t.Errorf("List()[1] = %+v, want %+v", list[1], mzeta)
	}

	values := s.Values()
	if !reflect.DeepEqual(values, map[string]string{"ALPHA": "value-a2", "zeta": "value-z"}) {
		t.Errorf("Values() = %v", values)
	}
	values["ALPHA"] = "changed by caller"
	if v, _, _ := s.Get("ALPHA"); v != "value-a2" {
		t.Error("changing the map from Values() changed the store")
	}

	reopened := mustOpen(t, dir, testOptions(clock))
	if !reflect.DeepEqual(reopened.List(), s.List()) {
		t.Errorf("after reopen List() = %+v, want %+v", reopened.List(), s.List())
	}
	if !reflect.DeepEqual(reopened.Values(), s.Values()) {
		t.Error("after reopen Values() differ")
	}

	if err := s.Delete("zeta"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, _, ok := s.Get("zeta"); ok {
		t.Error("deleted credential still there")
	}
	if err := s.Delete("zeta"); !errors.Is(err, storebackends.ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if m := mustPut(t, s, "zeta", "again"); m.Version != "1" {
		t.Errorf("Put after Delete version = %q, want 1", m.Version)
	}

	reopened = mustOpen(t, dir, testOptions(clock))
	if !reflect.DeepEqual(reopened.List(), s.List()) {
		t.Errorf("after delete and reopen List() = %+v, want %+v", reopened.List(), s.List())
	}
}

func TestStoreNameOption(t *testing.T) {
	opts := testOptions(newStepClock())
	opts.StoreName = "team"
	s := mustOpen(t, t.TempDir(), opts)
	if m := mustPut(t, s, "TOKEN", "v"); m.Store != "team" {
		t.Errorf("Meta.Store = %q, want team", m.Store)
	}
	if l := s.List(); l[0].Store != "team" {
		t.Errorf("List()[0].Store = %q, want team", l[0].Store)
	}
}

func TestWrongPassword(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions(newStepClock()))
	mustPut(t, s, "TOKEN", "v")

	_, err := Open(dir, []byte("not the password"), testOptions(newStepClock()))
	if !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("Open with wrong password = %v, want ErrWrongPassword", err)
	}
	if !strings.Contains(err.Error(), s.Path()) || !strings.Contains(err.Error(), "master password does not open") {
		t.Errorf("error %q should name the file and say the password does not open it", err)
	}
}

func TestOpenRejectsBadArguments(t *testing.T) {
	opts := testOptions(newStepClock())
	if _, err := Open(t.TempDir(), nil, opts); err == nil || !strings.Contains(err.Error(), "password must not be empty") {
		t.Errorf("empty password: %v", err)
	}
	if _, err := Open("", testPassword, opts); err == nil {
		t.Error("empty dir accepted")
	}
	for _, kdf := range []KDFParams{
		{Time: 0, MemoryKiB: 64, Threads: 1},
		{Time: 1, MemoryKiB: 64, Threads: 0},
		{Time: 1, MemoryKiB: 4, Threads: 1},
		{Time: 1, MemoryKiB: 4<<20 + 1, Threads: 1},
		{Time: 1000, MemoryKiB: 64, Threads: 1},
	} {
		opts.KDF = kdf
		dir := t.TempDir()
		if _, err := Open(dir, testPassword, opts); err == nil || !strings.Contains(err.Error(), "invalid KDF options") {
			t.Errorf("KDF %+v: err = %v, want invalid KDF options", kdf, err)
		}
		if _, err := os.Stat(filepath.Join(dir, FileName)); err == nil {
			t.Errorf("KDF %+v: a store file was created", kdf)
		}
	}
}

func TestNoPlaintextOnDisk(t *testing.T) {
	const canary = "sk-live-CANARY-6d1f0e8a9b7c"
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions(newStepClock()))
	mustPut(t, s, "API_KEY", canary)
	mustPut(t, s, "OTHER", canary+"-2")
	mustPut(t, s, "API_KEY", canary)
	if err := s.Delete("OTHER"); err != nil {
		t.Fatal(err)
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != FileName {
		t.Errorf("directory holds %v, want only %s (no leftover temporary files)", entries, FileName)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(canary)) {
			t.Errorf("%s contains the plaintext value", e.Name())
		}
		if !bytes.Contains(data, []byte("API_KEY")) {
			t.Errorf("%s does not contain the credential name; is this the store file?", e.Name())
		}
	}
}

// editStoreFile rewrites the store file in dir through its generic JSON
// form.
func editStoreFile(t *testing.T, dir string, edit func(doc map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, FileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	edit(doc)
	if data, err = json.Marshal(doc); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func credentialDoc(doc map[string]any, name string) map[string]any {
	return doc["credentials"].(map[string]any)[name].(map[string]any)
}

// flipBase64Byte flips one bit of the base64-encoded bytes at obj[field].
func flipBase64Byte(t *testing.T, obj map[string]any, field string) {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(obj[field].(string))
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0x01
	obj[field] = base64.StdEncoding.EncodeToString(raw)
}

func TestTamperingIsDetected(t *testing.T) {
	const secretA, secretB = "secret-value-AAAA", "secret-value-BBBB"
	tests := []struct {
		name     string
		edit     func(t *testing.T, doc map[string]any)
		wantErr  string
		wrongPwd bool
	}{
		{
			name: "flipped ciphertext byte",
			edit: func(t *testing.T, doc map[string]any) {
				flipBase64Byte(t, credentialDoc(doc, "FIRST"), "ciphertext")
			},
			wantErr: `credential "FIRST" does not decrypt`,
		},
		{
			name: "flipped nonce byte",
			edit: func(t *testing.T, doc map[string]any) {
				flipBase64Byte(t, credentialDoc(doc, "SECOND"), "nonce")
			},
			wantErr: `credential "SECOND" does not decrypt`,
		},
		{
			name: "swapped ciphertexts",
			edit: func(t *testing.T, doc map[string]any) {
				a, b := credentialDoc(doc, "FIRST"), credentialDoc(doc, "SECOND")
				a["nonce"], b["nonce"] = b["nonce"], a["nonce"]
				a["ciphertext"], b["ciphertext"] = b["ciphertext"], a["ciphertext"]
			},
			wantErr: `credential "FIRST" does not decrypt`,
		},
		{
			name: "renamed credential",
			edit: func(t *testing.T, doc map[string]any) {
				creds := doc["credentials"].(map[string]any)
				creds["RENAMED"] = creds["FIRST"]
				delete(creds, "FIRST")
			},
			wantErr: `credential "RENAMED" does not decrypt`,
		},
		{
			name: "changed version",
			edit: func(t *testing.T, doc map[string]any) {
				credentialDoc(doc, "FIRST")["version"] = 7
			},
			wantErr: `credential "FIRST" does not decrypt`,
		},
		{
			name: "changed update time",
			edit: func(t *testing.T, doc map[string]any) {
				credentialDoc(doc, "SECOND")["updated_at"] = "2020-01-01T00:00:00Z"
			},
			wantErr: `credential "SECOND" does not decrypt`,
		},
		{
			name: "changed salt",
			edit: func(t *testing.T, doc map[string]any) {
				flipBase64Byte(t, doc["kdf"].(map[string]any), "salt")
			},
			wrongPwd: true,
		},
		{
			name: "changed KDF time",
			edit: func(t *testing.T, doc map[string]any) {
				doc["kdf"].(map[string]any)["params"].(map[string]any)["time"] = 2
			},
			wrongPwd: true,
		},
		{
			name: "flipped check record",
			edit: func(t *testing.T, doc map[string]any) {
				flipBase64Byte(t, doc["check"].(map[string]any), "ciphertext")
			},
			wrongPwd: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			// A constant clock gives both credentials the same version and
			// time, so only the name tells their ciphertexts apart.
			opts := testOptions(newStepClock())
			fixed := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
			opts.Now = func() time.Time { return fixed }
			s := mustOpen(t, dir, opts)
			mustPut(t, s, "FIRST", secretA)
			mustPut(t, s, "SECOND", secretB)

			editStoreFile(t, dir, func(doc map[string]any) { tt.edit(t, doc) })

			_, err := Open(dir, testPassword, testOptions(newStepClock()))
			if err == nil {
				t.Fatal("Open accepted a tampered file")
			}
			if tt.wrongPwd && !errors.Is(err, ErrWrongPassword) {
				t.Errorf("err = %v, want ErrWrongPassword", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %q, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), secretA) || strings.Contains(err.Error(), secretB) {
				t.Errorf("error %q reveals a value", err)
			}
		})
	}
}

func TestRejectsUnsupportedFiles(t *testing.T) {
	setKDF := func(field string, v any) func(map[string]any) {
		return func(doc map[string]any) {
			doc["kdf"].(map[string]any)["params"].(map[string]any)[field] = v
		}
	}
	tests := []struct {
		name    string
		edit    func(doc map[string]any)
		raw     string // replaces the file instead of edit when set
		wantErr string
	}{
		{name: "newer format", edit: func(d map[string]any) { d["format_version"] = 2 }, wantErr: "unsupported format version 2"},
		{name: "missing format", edit: func(d map[string]any) { delete(d, "format_version") }, wantErr: "unsupported format version 0"},
		{name: "other KDF", edit: func(d map[string]any) { d["kdf"].(map[string]any)["algorithm"] = "scrypt" }, wantErr: `unsupported key derivation algorithm "scrypt"`},
		{name: "memory above 4 GiB", edit: setKDF("memory_kib", 4<<20+1), wantErr: "above the limit"},
		{name: "time zero", edit: setKDF("time", 0), wantErr: "time must be at least 1"},
		{name: "huge time", edit: setKDF("time", 1<<31), wantErr: "above the limit"},
		{name: "threads zero", edit: setKDF("threads", 0), wantErr: "threads must be at least 1"},
		{name: "threads overflow", edit: setKDF("threads", 256), wantErr: "not a valid store file"},
		{name: "short salt", edit: func(d map[string]any) { d["kdf"].(map[string]any)["salt"] = "AAAA" }, wantErr: "salt is 3 bytes"},
		{name: "no check record", edit: func(d map[string]any) { delete(d, "check") }, wantErr: "password check record"},
		{name: "unknown field", edit: func(d map[string]any) { d["extra"] = true }, wantErr: "unknown field"},
		{name: "invalid name", edit: func(d map[string]any) {
			creds := d["credentials"].(map[string]any)
			creds["BAD-NAME"] = creds["TOKEN"]
		}, wantErr: `invalid credential name "BAD-NAME"`},
		{name: "version zero", edit: func(d map[string]any) { credentialDoc(d, "TOKEN")["version"] = 0 }, wantErr: "version must be at least 1"},
		{name: "empty ciphertext", edit: func(d map[string]any) { credentialDoc(d, "TOKEN")["ciphertext"] = "" }, wantErr: "ciphertext length 0"},
		{name: "bad base64", edit: func(d map[string]any) { credentialDoc(d, "TOKEN")["nonce"] = "!!" }, wantErr: "not a valid store file"},
		{name: "empty file", raw: "", wantErr: "the file is empty"},
		{name: "not JSON", raw: "hello", wantErr: "not a valid store file"},
		{name: "trailing data", raw: "{} {}", wantErr: "unexpected data after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, testOptions(newStepClock()))
			mustPut(t, s, "TOKEN", "v")
			if tt.edit != nil {
				editStoreFile(t, dir, tt.edit)
			} else if err := os.WriteFile(s.Path(), []byte(tt.raw), 0o600); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(s.Path())

			_, err := Open(dir, testPassword, testOptions(newStepClock()))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), s.Path()) {
				t.Errorf("error %q does not name the file", err)
			}
			if after, _ := os.ReadFile(s.Path()); !bytes.Equal(before, after) {
				t.Error("a failed Open changed the file")
			}
		})
	}
}

func TestReadLimited(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, err := readLimited(path, 5); err != nil || string(data) != "12345" {
		t.Errorf("readLimited at the limit = %q, %v", data, err)
	}
	if _, err := readLimited(path, 4); err == nil || !strings.Contains(err.Error(), "larger than 4 bytes") {
		t.Errorf("readLimited above the limit: err = %v", err)
	}
}

func TestPutRejectsBadInput(t *testing.T) {
	const secretish = "do-not-echo-me"
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions(newStepClock()))
	before, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}

	badNames := []string{"", "1ABC", "A-B", "A B", "ä", strings.Repeat("A", 129)}
	for _, name := range badNames {
		if _, err := s.Put(name, "v"); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("Put(name %q) = %v, want ErrInvalidInput", name, err)
		}
		if err := s.Delete(name); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("Delete(name %q) = %v, want ErrInvalidInput", name, err)
		}
	}
	badValues := map[string]string{
		"empty":     "",
		"too long":  strings.Repeat("x", maxValueLen+1),
		"CRLF":      secretish + "\r\nX-Injected: 1",
		"LF":        secretish + "\n",
		"CR":        secretish + "\r",
		"NUL":       secretish + "\x00",
		"other CTL": secretish + "\x1b",
		"DEL":       secretish + "\x7f",
	}
	for label, value := range badValues {
		_, err := s.Put("TOKEN", value)
		if !errors.Is(err, ErrInvalidInput) {
			t.Errorf("Put(%s value) = %v, want ErrInvalidInput", label, err)
			continue
		}
		if strings.Contains(err.Error(), secretish) {
			t.Errorf("Put(%s value) error %q contains the value", label, err)
		}
		if !strings.Contains(err.Error(), `"TOKEN"`) {
			t.Errorf("Put(%s value) error %q does not name the credential", label, err)
		}
	}
	if len(s.List()) != 0 {
		t.Errorf("rejected Puts changed the store: %v", s.List())
	}
	if after, _ := os.ReadFile(s.Path()); !bytes.Equal(before, after) {
		t.Error("rejected Puts changed the file")
	}

	for _, good := range []string{strings.Repeat("x", maxValueLen), "Bearer\tabc", "ünïcödé"} {
		if _, err := s.Put("TOKEN", good); err != nil {
			t.Errorf("Put(valid value of %d bytes) = %v", len(good), err)
		}
	}
	if _, err := Open(dir, testPassword, testOptions(newStepClock())); err != nil {
		t.Errorf("reopening after a 64 KiB value: %v", err)
	}
	mustPut(t, s, strings.Repeat("A", 128), "v") // the longest valid name
}

func TestPermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix permissions")
	}
	dir := filepath.Join(t.TempDir(), "nested", "store")
	s := mustOpen(t, dir, testOptions(newStepClock()))
	checkMode := func(path string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %v, want %v", path, got, want)
		}
	}
	checkMode(dir, 0o700)
	checkMode(s.Path(), 0o600)
	// A file someone loosened is tightened again by the next write.
	if err := os.Chmod(s.Path(), 0o644); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "TOKEN", "v")
	checkMode(s.Path(), 0o600)
}

func TestFailedWriteKeepsState(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions(newStepClock()))
	mustPut(t, s, "KEEP", "old-value")
	listBefore := s.List()

	// A non-empty directory in place of the file makes the rename fail,
	// even for root.
	if err := os.Remove(s.Path()); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.Path(), "blocker"), 0o700); err != nil {
		t.Fatal(err)
	}

	if _, err := s.Put("KEEP", "new-value"); err == nil {
		t.Fatal("Put succeeded although the file cannot be replaced")
	}
	if _, err := s.Put("NEW", "v"); err == nil {
		t.Fatal("Put succeeded although the file cannot be replaced")
	}
	if err := s.Delete("KEEP"); err == nil || errors.Is(err, storebackends.ErrNotFound) {
		t.Fatalf("Delete = %v, want a write error", err)
	}
	if v, _, ok := s.Get("KEEP"); !ok || v != "old-value" {
		t.Errorf("Get(KEEP) = %q, %v after failed writes, want old-value", v, ok)
	}
	if !reflect.DeepEqual(s.List(), listBefore) {
		t.Errorf("List() = %+v after failed writes, want %+v", s.List(), listBefore)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %v, want no leftover temporary files", entries)
	}
}

func TestConcurrentAccess(t *testing.T) {
	s := mustOpen(t, t.TempDir(), testOptions(newStepClock()))
	const writers, puts = 4, 15

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if v, m, ok := s.Get("SHARED"); ok && (v == "" || m.Version == "") {
					t.Error("Get returned a partial credential")
				}
				_ = s.List()
				_ = s.Values()
			}
		}()
	}
	var writersWG sync.WaitGroup
	for w := range writers {
		writersWG.Add(1)
		go func() {
			defer writersWG.Done()
			for i := range puts {
				if _, err := s.Put("SHARED", fmt.Sprintf("w%d-%d", w, i)); err != nil {
					t.Error(err)
				}
				if _, err := s.Put(fmt.Sprintf("OWN_%d", w), fmt.Sprintf("v%d", i)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	writersWG.Wait()
	close(stop)
	wg.Wait()

	if _, m, _ := s.Get("SHARED"); m.Version != fmt.Sprint(writers*puts) {
		t.Errorf("SHARED version = %q, want %d (a Put was lost)", m.Version, writers*puts)
	}
	for w := range writers {
		v, m, _ := s.Get(fmt.Sprintf("OWN_%d", w))
		if m.Version != fmt.Sprint(puts) || v != fmt.Sprintf("v%d", puts-1) {
			t.Errorf("OWN_%d = %q version %q, want v%d version %d", w, v, m.Version, puts-1, puts)
		}
	}
	reopened := mustOpen(t, filepath.Dir(s.Path()), testOptions(newStepClock()))
	if !reflect.DeepEqual(reopened.Values(), s.Values()) {
		t.Error("file and memory disagree after concurrent writes")
	}
}

func TestDefaultKDF(t *testing.T) {
	if testing.Short() {
		t.Skip("argon2id with 64 MiB is slow under -short")
	}
	dir := t.TempDir()
	s, err := Open(dir, testPassword, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "TOKEN", "v")
	var f storeFile
	data, _ := os.ReadFile(s.Path())
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if f.KDF.Algorithm != "argon2id" || f.KDF.Params != DefaultKDF || len(f.KDF.Salt) != saltLen {
		t.Errorf("file KDF = %+v, want argon2id %+v with a %d-byte salt", f.KDF, DefaultKDF, saltLen)
	}
	reopened, err := Open(dir, testPassword, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _, ok := reopened.Get("TOKEN"); !ok || v != "v" {
		t.Errorf("Get after reopen = %q, %v", v, ok)
	}
}

func TestExistingFileKeepsItsKDF(t *testing.T) {
	dir := t.TempDir()
	mustOpen(t, dir, testOptions(newStepClock()))
	opts := testOptions(newStepClock())
	opts.KDF = KDFParams{Time: 2, MemoryKiB: 128, Threads: 1}
	s := mustOpen(t, dir, opts)
	mustPut(t, s, "TOKEN", "v")

	var f storeFile
	data, _ := os.ReadFile(s.Path())
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if f.KDF.Params != cheapKDF {
		t.Errorf("file KDF params = %+v, want the original %+v", f.KDF.Params, cheapKDF)
	}
}

func TestNewStoresUseFreshSalts(t *testing.T) {
	salt := func() string {
		s := mustOpen(t, t.TempDir(), testOptions(newStepClock()))
		var f storeFile
		data, _ := os.ReadFile(s.Path())
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatal(err)
		}
		return string(f.KDF.Salt)
	}
	if salt() == salt() {
		t.Error("two new stores got the same salt")
	}
}
