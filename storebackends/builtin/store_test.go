package builtin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/sealbox"
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

func mustOpen(t *testing.T, r storebackends.Records, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), r, testPassword, opts)
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
	recs := newMemRecords()
	clock := newStepClock()
	s := mustOpen(t, recs, testOptions(clock))
	if got := s.List(); len(got) != 0 {
		t.Fatalf("new store lists %v, want nothing", got)
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
	if len(list) != 2 || list[0].Name != "ALPHA" || list[1] != mzeta {
		t.Fatalf("List() = %+v, want ALPHA then %+v", list, mzeta)
	}
	values := s.Values()
	if !reflect.DeepEqual(values, map[string]string{"ALPHA": "value-a2", "zeta": "value-z"}) {
		t.Errorf("Values() = %v", values)
	}
	values["ALPHA"] = "changed by caller"
	if v, _, _ := s.Get("ALPHA"); v != "value-a2" {
		t.Error("changing the map from Values() changed the store")
	}

	reopened := mustOpen(t, recs, testOptions(clock))
	if !reflect.DeepEqual(reopened.List(), s.List()) || !reflect.DeepEqual(reopened.Values(), s.Values()) {
		t.Errorf("after reopen List() = %+v, want %+v", reopened.List(), s.List())
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
	reopened = mustOpen(t, recs, testOptions(clock))
	if !reflect.DeepEqual(reopened.List(), s.List()) {
		t.Errorf("after delete and reopen List() = %+v, want %+v", reopened.List(), s.List())
	}
}

func TestStoreNameOption(t *testing.T) {
	opts := testOptions(newStepClock())
	opts.StoreName = "team"
	s := mustOpen(t, newMemRecords(), opts)
	if m := mustPut(t, s, "TOKEN", "v"); m.Store != "team" {
		t.Errorf("Meta.Store = %q, want team", m.Store)
	}
	if l := s.List(); l[0].Store != "team" {
		t.Errorf("List()[0].Store = %q, want team", l[0].Store)
	}
}

func TestWrongPassword(t *testing.T) {
	recs := newMemRecords()
	s := mustOpen(t, recs, testOptions(newStepClock()))
	mustPut(t, s, "TOKEN", "v")
	_, err := Open(context.Background(), recs, []byte("not the password"), testOptions(newStepClock()))
	if !errors.Is(err, ErrWrongPassword) || !strings.Contains(err.Error(), `builtin store "builtin"`) {
		t.Fatalf("Open with wrong password = %v, want ErrWrongPassword naming the store", err)
	}
}

func TestOpenRejectsBadArguments(t *testing.T) {
	opts := testOptions(newStepClock())
	ctx := context.Background()
	if _, err := Open(ctx, newMemRecords(), nil, opts); err == nil || !strings.Contains(err.Error(), "password must not be empty") {
		t.Errorf("empty password: %v", err)
	}
	if _, err := Open(ctx, nil, testPassword, opts); err == nil {
		t.Error("nil records accepted")
	}
	for _, kdf := range []KDFParams{
		{Time: 0, MemoryKiB: 64, Threads: 1},
		{Time: 1, MemoryKiB: 64, Threads: 0},
		{Time: 1, MemoryKiB: 4, Threads: 1},
		{Time: 1, MemoryKiB: 4<<20 + 1, Threads: 1},
		{Time: 1000, MemoryKiB: 64, Threads: 1},
	} {
		opts.KDF = kdf
		recs := newMemRecords()
		if _, err := Open(ctx, recs, testPassword, opts); err == nil || !strings.Contains(err.Error(), "invalid KDF options") {
			t.Errorf("KDF %+v: err = %v, want invalid KDF options", kdf, err)
		}
		if recs.header != nil {
			t.Errorf("KDF %+v: a header was created", kdf)
		}
	}
}

func TestNoPlaintextStored(t *testing.T) {
	const canary = "sk-live-CANARY-6d1f0e8a9b7c"
	recs := newMemRecords()
	s := mustOpen(t, recs, testOptions(newStepClock()))
	mustPut(t, s, "API_KEY", canary)
	mustPut(t, s, "OTHER", canary+"-2")
	if err := s.Delete("OTHER"); err != nil {
		t.Fatal(err)
	}
	all, _ := json.Marshal(recs.recs)
	all = append(all, recs.header...)
	if bytes.Contains(all, []byte(canary)) || bytes.Contains(all, []byte(base64Std(canary))) {
		t.Error("the records hold the plaintext value")
	}
	if !bytes.Contains(all, []byte("API_KEY")) {
		t.Error("the records do not name the credential")
	}
}

func base64Std(s string) string {
	b, _ := json.Marshal([]byte(s))
	return strings.Trim(string(b), `"`)
}

// tamperCases edit a stored record; each must make it fail to open.
var tamperCases = []struct {
	name    string
	edit    func(m *memRecords)
	wantErr string
}{
	{"flipped ciphertext byte", func(m *memRecords) {
		m.edit("FIRST", func(r *storebackends.Record) { r.Ciphertext[len(r.Ciphertext)/2] ^= 1 })
	}, `credential "FIRST" does not decrypt`},
	{"flipped nonce byte", func(m *memRecords) {
		m.edit("SECOND", func(r *storebackends.Record) { r.Nonce[3] ^= 1 })
	}, `credential "SECOND" does not decrypt`},
	{"swapped ciphertexts", func(m *memRecords) {
		a, b := m.recs["FIRST"], m.recs["SECOND"]
		a.Nonce, b.Nonce, a.Ciphertext, b.Ciphertext = b.Nonce, a.Nonce, b.Ciphertext, a.Ciphertext
		m.recs["FIRST"], m.recs["SECOND"] = a, b
	}, `credential "FIRST" does not decrypt`},
	{"renamed credential", func(m *memRecords) {
		m.edit("FIRST", func(r *storebackends.Record) { r.Name = "RENAMED" })
	}, `credential "RENAMED" does not decrypt`},
	{"changed version", func(m *memRecords) {
		m.edit("FIRST", func(r *storebackends.Record) { r.Version = 7 })
	}, `credential "FIRST" does not decrypt`},
	{"changed update time", func(m *memRecords) {
		m.edit("SECOND", func(r *storebackends.Record) { r.UpdatedAt = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC) })
	}, `credential "SECOND" does not decrypt`},
	{"version zero", func(m *memRecords) {
		m.edit("FIRST", func(r *storebackends.Record) { r.Version = 0 })
	}, "version must be at least 1"},
	{"empty ciphertext", func(m *memRecords) {
		m.edit("FIRST", func(r *storebackends.Record) { r.Ciphertext = nil })
	}, "ciphertext length 0"},
	{"invalid name", func(m *memRecords) {
		m.edit("FIRST", func(r *storebackends.Record) { r.Name = "BAD-NAME" })
	}, `invalid credential name "BAD-NAME"`},
}

func TestTamperedRecordsAreRefused(t *testing.T) {
	const secretA, secretB = "secret-value-AAAA", "secret-value-BBBB"
	for _, tt := range tamperCases {
		t.Run(tt.name, func(t *testing.T) {
			// A constant clock gives both credentials the same version and
			// time, so only the name tells their ciphertexts apart.
			opts := testOptions(newStepClock())
			fixed := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
			opts.Now = func() time.Time { return fixed }
			recs := newMemRecords()
			s := mustOpen(t, recs, opts)
			mustPut(t, s, "FIRST", secretA)
			mustPut(t, s, "SECOND", secretB)
			tt.edit(recs)

			_, err := Open(context.Background(), recs, testPassword, testOptions(newStepClock()))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Open of a tampered store: err = %v, want %q", err, tt.wantErr)
			}
			// An open store that reloads stops serving the bad record
			// (fail closed) and keeps serving the good ones.
			changed := 0
			s.SetOnChange(func() { changed++ })
			err = s.Reload(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Reload of a tampered store: err = %v, want %q", err, tt.wantErr)
			}
			if changed != 1 {
				t.Errorf("onChange ran %d times, want 1", changed)
			}
			for name, v := range s.Values() {
				if want := map[string]string{"FIRST": secretA, "SECOND": secretB}[name]; v != want {
					t.Errorf("after Reload %s = %q: a tampered record is served", name, v)
				}
			}
			for _, e := range []error{err} {
				if strings.Contains(e.Error(), secretA) || strings.Contains(e.Error(), secretB) {
					t.Errorf("error %q reveals a value", e)
				}
			}
		})
	}
}

func TestBadHeadersAreRefused(t *testing.T) {
	editHeader := func(f func(doc map[string]any)) func([]byte) []byte {
		return func(data []byte) []byte {
			var doc map[string]any
			json.Unmarshal(data, &doc)
			f(doc)
			out, _ := json.Marshal(doc)
			return out
		}
	}
	setKDF := func(field string, v any) func([]byte) []byte {
		return editHeader(func(d map[string]any) { d["kdf"].(map[string]any)["params"].(map[string]any)[field] = v })
	}
	tests := []struct {
		name     string
		edit     func([]byte) []byte
		wantErr  string
		wrongPwd bool
	}{
		{"newer format", editHeader(func(d map[string]any) { d["format_version"] = 2 }), "unsupported format version 2", false},
		{"other KDF", editHeader(func(d map[string]any) { d["kdf"].(map[string]any)["algorithm"] = "scrypt" }), `unsupported key derivation algorithm "scrypt"`, false},
		{"memory above 4 GiB", setKDF("memory_kib", 4<<20+1), "above the limit", false},
		{"time zero", setKDF("time", 0), "time must be at least 1", false},
		{"threads overflow", setKDF("threads", 256), "not a valid store header", false},
		{"changed KDF time", setKDF("time", 2), "", true},
		{"short salt", editHeader(func(d map[string]any) { d["kdf"].(map[string]any)["salt"] = "AAAA" }), "salt is 3 bytes", false},
		{"no check record", editHeader(func(d map[string]any) { delete(d, "check") }), "password check record", false},
		{"unknown field", editHeader(func(d map[string]any) { d["extra"] = true }), "unknown field", false},
		{"trailing data", func(b []byte) []byte { return append(b, " {}"...) }, "unexpected data after", false},
		{"not JSON", func([]byte) []byte { return []byte("hello") }, "not a valid store header", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs := newMemRecords()
			mustOpen(t, recs, testOptions(newStepClock()))
			recs.header = tt.edit(recs.header)
			before := bytes.Clone(recs.header)
			_, err := Open(context.Background(), recs, testPassword, testOptions(newStepClock()))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || (tt.wrongPwd && !errors.Is(err, ErrWrongPassword)) {
				t.Fatalf("err = %v, want %q (wrong password: %v)", err, tt.wantErr, tt.wrongPwd)
			}
			if !bytes.Equal(before, recs.header) {
				t.Error("a failed Open changed the header")
			}
		})
	}
}

func TestPutRejectsBadInput(t *testing.T) {
	const secretish = "do-not-echo-me"
	recs := newMemRecords()
	s := mustOpen(t, recs, testOptions(newStepClock()))
	for _, name := range []string{"", "1ABC", "A-B", "A B", "ä", strings.Repeat("A", 129)} {
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
		if strings.Contains(err.Error(), secretish) || !strings.Contains(err.Error(), `"TOKEN"`) {
			t.Errorf("Put(%s value) error %q must name the credential, never the value", label, err)
		}
	}
	if len(s.List()) != 0 || recs.puts != 0 {
		t.Errorf("rejected Puts changed the store: %v", s.List())
	}
	for _, good := range []string{strings.Repeat("x", maxValueLen), "Bearer\tabc", "ünïcödé"} {
		if _, err := s.Put("TOKEN", good); err != nil {
			t.Errorf("Put(valid value of %d bytes) = %v", len(good), err)
		}
	}
	mustOpen(t, recs, testOptions(newStepClock())) // a 64 KiB value reopens
	mustPut(t, s, strings.Repeat("A", 128), "v")   // the longest valid name
}

func TestFailedWriteKeepsState(t *testing.T) {
	recs := newMemRecords()
	s := mustOpen(t, recs, testOptions(newStepClock()))
	mustPut(t, s, "KEEP", "old-value")
	listBefore := s.List()
	recs.failErr = errors.New("state sqlite: database is locked")
	if _, err := s.Put("KEEP", "new-value"); err == nil || !strings.Contains(err.Error(), "database is locked") {
		t.Fatalf("Put = %v, want the database's error", err)
	}
	if _, err := s.Put("NEW", "v"); err == nil {
		t.Fatal("Put succeeded although the database fails")
	}
	if err := s.Delete("KEEP"); err == nil || errors.Is(err, storebackends.ErrNotFound) {
		t.Fatalf("Delete = %v, want a write error", err)
	}
	if v, _, ok := s.Get("KEEP"); !ok || v != "old-value" || !reflect.DeepEqual(s.List(), listBefore) {
		t.Errorf("Get(KEEP) = %q, %v after failed writes, want old-value", v, ok)
	}
	if err := s.Reload(context.Background()); err == nil {
		t.Error("Reload hid the database's error")
	}
	if v, _, _ := s.Get("KEEP"); v != "old-value" {
		t.Error("a failed Reload changed the store")
	}
}

func TestConcurrentAccess(t *testing.T) {
	recs := newMemRecords()
	s := mustOpen(t, recs, testOptions(newStepClock()))
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
				_ = s.Reload(context.Background())
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
	if reopened := mustOpen(t, recs, testOptions(newStepClock())); !reflect.DeepEqual(reopened.Values(), s.Values()) {
		t.Error("records and memory disagree after concurrent writes")
	}
}

// headerOf decodes the stored header.
func headerOf(t *testing.T, recs *memRecords) header {
	t.Helper()
	var h header
	if err := json.Unmarshal(recs.header, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestDefaultKDF(t *testing.T) {
	if testing.Short() {
		t.Skip("argon2id with 64 MiB is slow under -short")
	}
	recs := newMemRecords()
	s, err := Open(context.Background(), recs, testPassword, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "TOKEN", "v")
	if h := headerOf(t, recs); h.KDF.Algorithm != "argon2id" || h.KDF.Params != DefaultKDF || len(h.KDF.Salt) != saltLen {
		t.Errorf("header KDF = %+v, want argon2id %+v with a %d-byte salt", h.KDF, DefaultKDF, saltLen)
	}
}

func TestExistingHeaderKeepsItsKDF(t *testing.T) {
	recs := newMemRecords()
	mustOpen(t, recs, testOptions(newStepClock()))
	opts := testOptions(newStepClock())
	opts.KDF = KDFParams{Time: 2, MemoryKiB: 128, Threads: 1}
	mustPut(t, mustOpen(t, recs, opts), "TOKEN", "v")
	if h := headerOf(t, recs); h.KDF.Params != cheapKDF {
		t.Errorf("header KDF params = %+v, want the original %+v", h.KDF.Params, cheapKDF)
	}
}

func TestNewStoresUseFreshSalts(t *testing.T) {
	salt := func() string {
		recs := newMemRecords()
		mustOpen(t, recs, testOptions(newStepClock()))
		return string(headerOf(t, recs).KDF.Salt)
	}
	if salt() == salt() {
		t.Error("two new stores got the same salt")
	}
}

// TestTwoBrokersCreateOneHeader starts two stores on an empty database
// at once: both see no header, both make one, the first stored wins and
// the other opens the winner's (same password) or refuses (another).
func TestTwoBrokersCreateOneHeader(t *testing.T) {
	for _, samePassword := range []bool{true, false} {
		recs := newMemRecords()
		var arrived sync.WaitGroup
		arrived.Add(2)
		recs.beforeCreate = func() { arrived.Done(); arrived.Wait() }
		passwords := [][]byte{testPassword, testPassword}
		if !samePassword {
			passwords[1] = []byte("another password")
		}
		stores := make([]*Store, 2)
		errs := make([]error, 2)
		var done sync.WaitGroup
		for i := range 2 {
			done.Add(1)
			go func() {
				defer done.Done()
				stores[i], errs[i] = Open(context.Background(), recs, passwords[i], testOptions(newStepClock()))
			}()
		}
		done.Wait()
		if samePassword {
			if errs[0] != nil || errs[1] != nil {
				t.Fatalf("Open errors %v, %v", errs[0], errs[1])
			}
			mustPut(t, stores[0], "FROM_A", "a")
			if err := stores[1].Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			if v, _, _ := stores[1].Get("FROM_A"); v != "a" {
				t.Fatal("the two brokers do not share one key")
			}
			continue
		}
		failed := 0
		for _, err := range errs {
			if err != nil {
				failed++
				if !errors.Is(err, ErrWrongPassword) {
					t.Errorf("the loser's error = %v, want ErrWrongPassword", err)
				}
			}
		}
		if failed != 1 {
			t.Errorf("%d of the two Opens failed, want exactly the loser", failed)
		}
	}
}

func TestPutConflictRereadsAndRetries(t *testing.T) {
	recs := newMemRecords()
	a := mustOpen(t, recs, testOptions(newStepClock()))
	b := mustOpen(t, recs, testOptions(newStepClock()))
	mustPut(t, a, "X", "from-a")
	// b has not seen X: its Put conflicts, re-reads and wins as version 2.
	if m := mustPut(t, b, "X", "from-b"); m.Version != "2" {
		t.Fatalf("b's Put version %s, want 2", m.Version)
	}
	recs.conflicts = 2
	_, err := b.Put("X", "again")
	if !errors.Is(err, storebackends.ErrConflict) {
		t.Fatalf("Put after two conflicts = %v, want ErrConflict", err)
	}
	if v, _, _ := b.Get("X"); v != "from-b" {
		t.Error("a failed Put changed the store")
	}
}

func TestReloadFollowsAnotherBroker(t *testing.T) {
	recs := newMemRecords()
	a := mustOpen(t, recs, testOptions(newStepClock()))
	b := mustOpen(t, recs, testOptions(newStepClock()))
	mustPut(t, a, "GONE", "g")
	mustPut(t, a, "KEPT", "k")
	var changes atomic.Int32
	b.SetOnChange(func() { changes.Add(1) })
	if err := b.Reload(context.Background()); err != nil || changes.Load() != 1 {
		t.Fatalf("Reload = %v, onChange ran %d times", err, changes.Load())
	}
	mustPut(t, a, "KEPT", "k2")
	if err := a.Delete("GONE"); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := b.Values(); !reflect.DeepEqual(got, map[string]string{"KEPT": "k2"}) || changes.Load() != 2 {
		t.Fatalf("after Reload b serves %v (onChange %d)", got, changes.Load())
	}
	if err := b.Reload(context.Background()); err != nil || changes.Load() != 2 {
		t.Errorf("a Reload with no change ran onChange (%d)", changes.Load())
	}
	// b deleting what a already deleted stops serving it and says so.
	mustPut(t, b, "BOTH", "x")
	if err := a.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete("BOTH"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete("BOTH"); !errors.Is(err, storebackends.ErrNotFound) {
		t.Errorf("Delete of a name another broker deleted = %v, want ErrNotFound", err)
	}
	if _, _, ok := b.Get("BOTH"); ok {
		t.Error("b still serves a deleted credential")
	}
}

// writeOldFile writes a credentials.json as earlier releases did, from
// the format's own types.
func writeOldFile(t *testing.T, path string, password []byte, values map[string]string) {
	t.Helper()
	h, box, err := newHeader(password, cheapKDF, sealbox.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	f := storeFile{header: h, Credentials: map[string]credentialRecord{}}
	clock := newStepClock()
	for name, v := range values {
		rec := credentialRecord{Version: 1, UpdatedAt: clock.Now()}
		rec.sealedRecord = seal(box, []byte(v), credentialAD(name, rec))
		f.Credentials[name] = rec
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReadFileImportsVerbatim(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	writeOldFile(t, path, testPassword, map[string]string{"API_KEY": "sk-1", "OTHER": "o"})
	hdr, records, err := ReadFile(path, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 2 || records[0].Name != "API_KEY" || records[0].Version != 1 {
		t.Fatalf("records = %+v", records)
	}
	recs := newMemRecords()
	if err := recs.Import(context.Background(), hdr, records); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, recs, testOptions(newStepClock()))
	if got := s.Values(); !reflect.DeepEqual(got, map[string]string{"API_KEY": "sk-1", "OTHER": "o"}) {
		t.Fatalf("imported store serves %v", got)
	}
	if _, _, err := ReadFile(path, []byte("wrong")); !errors.Is(err, ErrWrongPassword) || !strings.Contains(err.Error(), path) {
		t.Errorf("wrong password: %v", err)
	}
	if _, _, err := ReadFile(filepath.Join(t.TempDir(), "none"), testPassword); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestReadFileOfAPreviousRelease reads the fuzz corpus's valid store,
// written by the release before the state database.
func TestReadFileOfAPreviousRelease(t *testing.T) {
	data := corpusBytes(t, "valid_store")
	path := filepath.Join(t.TempDir(), FileName)
	os.WriteFile(path, data, 0o600)
	_, records, err := ReadFile(path, testPassword)
	if err != nil || len(records) == 0 {
		t.Fatalf("ReadFile = %d records, %v", len(records), err)
	}
}

func TestReadFileRefusesTamperingAndUnknownFiles(t *testing.T) {
	edits := map[string]struct {
		edit    func(doc map[string]any)
		raw     string
		wantErr string
	}{
		"flipped ciphertext": {edit: func(d map[string]any) {
			c := d["credentials"].(map[string]any)["TOKEN"].(map[string]any)
			c["ciphertext"] = flipB64(c["ciphertext"].(string))
		}, wantErr: `credential "TOKEN" does not decrypt`},
		"renamed": {edit: func(d map[string]any) {
			c := d["credentials"].(map[string]any)
			c["RENAMED"] = c["TOKEN"]
			delete(c, "TOKEN")
		}, wantErr: `credential "RENAMED" does not decrypt`},
		"changed version": {edit: func(d map[string]any) {
			d["credentials"].(map[string]any)["TOKEN"].(map[string]any)["version"] = 7
		}, wantErr: "does not decrypt"},
		"changed salt": {edit: func(d map[string]any) {
			k := d["kdf"].(map[string]any)
			k["salt"] = flipB64(k["salt"].(string))
		}, wantErr: "master password does not open"},
		"newer format":  {edit: func(d map[string]any) { d["format_version"] = 2 }, wantErr: "unsupported format version 2"},
		"unknown field": {edit: func(d map[string]any) { d["extra"] = 1 }, wantErr: "unknown field"},
		"bad name": {edit: func(d map[string]any) {
			c := d["credentials"].(map[string]any)
			c["BAD-NAME"] = c["TOKEN"]
		}, wantErr: `invalid credential name "BAD-NAME"`},
		"huge memory": {edit: func(d map[string]any) {
			d["kdf"].(map[string]any)["params"].(map[string]any)["memory_kib"] = 4<<20 + 1
		}, wantErr: "above the limit"},
		"empty file":    {raw: "", wantErr: "the file is empty"},
		"not JSON":      {raw: "hello", wantErr: "not a valid store file"},
		"trailing data": {raw: "{} {}", wantErr: "unexpected data after"},
	}
	for name, tt := range edits {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			writeOldFile(t, path, testPassword, map[string]string{"TOKEN": "secret-token-value"})
			data := []byte(tt.raw)
			if tt.edit != nil {
				orig, _ := os.ReadFile(path)
				var doc map[string]any
				json.Unmarshal(orig, &doc)
				tt.edit(doc)
				data, _ = json.Marshal(doc)
			}
			os.WriteFile(path, data, 0o600)
			_, _, err := ReadFile(path, testPassword)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want %q naming the file", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "secret-token-value") {
				t.Fatal("the error reveals the value")
			}
		})
	}
}

func flipB64(s string) string {
	var b []byte
	json.Unmarshal([]byte(`"`+s+`"`), &b)
	b[len(b)/2] ^= 1
	out, _ := json.Marshal(b)
	return strings.Trim(string(out), `"`)
}

func TestModuleImportsAnOldFileOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	writeOldFile(t, path, testPassword, map[string]string{"API_KEY": "sk-imported"})
	fixed := time.Unix(1_760_000_000, 0)
	recs := newMemRecords()
	m := &Module{password: bytes.Clone(testPassword), now: func() time.Time { return fixed }}
	if err := m.OpenRecords(recs, dir); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := m.Get("API_KEY"); v != "sk-imported" {
		t.Fatalf("imported value = %q", v)
	}
	if _, err := os.Stat(path + ".imported-1760000000"); err != nil {
		t.Fatalf("the old file was not renamed: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("the old file is still in place")
	}
	// A store the database already holds is never replaced by a file.
	writeOldFile(t, path, testPassword, map[string]string{"API_KEY": "sk-other"})
	again := &Module{password: bytes.Clone(testPassword)}
	if err := again.OpenRecords(recs, dir); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := again.Get("API_KEY"); v != "sk-imported" {
		t.Fatalf("a second file replaced the store: %q", v)
	}
	if _, err := os.Stat(path); err != nil {
		t.Error("a file that was not imported was moved")
	}
	// A file that does not open with the password stops the start.
	fresh := newMemRecords()
	bad := &Module{password: []byte("wrong password")}
	if err := bad.OpenRecords(fresh, dir); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("import with the wrong password = %v", err)
	}
	if fresh.header != nil {
		t.Error("a failed import created a store")
	}
}
