package identity

import (
	"context"
	"errors"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

const goodPassword = "correct horse battery"

var phcPattern = regexp.MustCompile(`^\$argon2id\$v=19\$m=8,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)

func TestPasswordRoundTrip(t *testing.T) {
	phc, err := HashPassword(goodPassword)
	if err != nil {
		t.Fatal(err)
	}
	if !phcPattern.MatchString(phc) {
		t.Fatalf("hash %q is not the PHC format", phc)
	}
	if again, _ := HashPassword(goodPassword); again == phc {
		t.Fatal("two hashes of one password are equal: no random salt")
	}
	for pw, want := range map[string]bool{
		goodPassword:                       true,
		"correct horse batterY":            false,
		"correct horse battery ":           false,
		"":                                 false,
		strings.Repeat("x", 2000):          false,
		goodPassword[:len(goodPassword)-1]: false,
	} {
		ok, err := CheckPassword(phc, pw)
		if err != nil || ok != want {
			t.Errorf("CheckPassword(%.20q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
}

// TestDefaultParams checks the parameters new hashes get in production,
// with one real (some 30 ms) hash.
func TestDefaultParams(t *testing.T) {
	if defaultParams != (argonParams{m: 19456, t: 2, p: 1}) {
		t.Fatalf("default parameters %+v", defaultParams)
	}
	saved := hashParams
	hashParams = defaultParams
	defer func() { hashParams = saved }()
	phc, err := HashPassword(goodPassword)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(phc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q", phc)
	}
	if ok, err := CheckPassword(phc, goodPassword); !ok || err != nil {
		t.Fatalf("check: %v %v", ok, err)
	}
}

// TestCheckOtherParams: a hash made with other (in-bounds) parameters
// or lengths still verifies, so the defaults can change later.
func TestCheckOtherParams(t *testing.T) {
	k := argonParams{m: 32, t: 3, p: 2}
	salt := []byte("0123456789abcdefXYZ")
	for _, n := range []uint32{16, 32, 64} {
		key, err := argonKey(context.Background(), goodPassword, salt, k, n)
		if err != nil {
			t.Fatal(err)
		}
		phc := formatPHC(k, salt, key)
		if ok, err := CheckPassword(phc, goodPassword); !ok || err != nil {
			t.Errorf("%s: %v %v", phc, ok, err)
		}
		if !NeedsRehash(phc) {
			t.Errorf("%s: another hash's parameters need no rehash", phc)
		}
		if ok, _ := CheckPassword(phc, "wrong password!"); ok {
			t.Errorf("%s: a wrong password matched", phc)
		}
	}
}

func TestValidPassword(t *testing.T) {
	for _, pw := range []string{"twelve chars", strings.Repeat("é", 12), strings.Repeat("x", 1024), "emoji 🔑 and ünïcödé"} {
		if err := ValidPassword(pw); err != nil {
			t.Errorf("ValidPassword(%.20q): %v", pw, err)
		}
		if _, err := HashPassword(pw); err != nil {
			t.Errorf("HashPassword(%.20q): %v", pw, err)
		}
	}
	for pw, want := range map[string]string{
		"eleven char":               "shorter than 12 characters",
		"":                          "shorter than 12 characters",
		strings.Repeat("€", 11):     "shorter than 12 characters", // 33 bytes, 11 characters
		strings.Repeat("x", 1025):   "longer than 1024 bytes",
		strings.Repeat("€", 342):    "longer than 1024 bytes",
		"qzqz start \xff\xfe tail":  "not valid UTF-8",
		"qzqz twelve chars\x00":     "control character",
		"qzqz\ttwelve chars":        "control character",
		"qzqz twelve chars\n":       "control character",
		"qzqz twelve \x1b[31mchars": "control character",
		"qzqz twelve \u0085chars":   "control character", // C1 NEL
		"qzqz twelve \x7fchars":     "control character",
	} {
		err := ValidPassword(pw)
		var ie *InvalidError
		if !errors.As(err, &ie) || !strings.Contains(ie.Reason, want) {
			t.Errorf("ValidPassword(%.20q) = %v, want %q", pw, err, want)
		}
		if _, err2 := HashPassword(pw); err2 == nil || err2.Error() != err.Error() {
			t.Errorf("HashPassword(%.20q) = %v, want %v", pw, err2, err)
		}
		if len(pw) > 3 && strings.Contains(err.Error(), pw[:4]) {
			t.Errorf("the error %q repeats the password", err)
		}
	}
}

// hostilePHC are stored hashes CheckPassword must refuse; the first
// ones would cost gigabytes or minutes if they were obeyed.
var hostilePHC = []string{
	"$argon2id$v=19$m=65537,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=262144,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=4294967295,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=99999999999,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=8,t=11,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=8,t=4294967296,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=256,t=1,p=9$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=256,t=1,p=256$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=8,t=0,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=8,t=1,p=0$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=7,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=15,t=1,p=2$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=08,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=+8,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$t=1,m=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=8,t=1,p=1,k=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=8,t=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2i$v=19$m=8,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=16$m=8,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$m=8,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=8,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg==$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=8,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZh$" + strings.Repeat("A", 43),  // non-canonical last bits
	"$argon2id$v=19$m=8,t=1,p=1$MDEy$" + strings.Repeat("A", 43),                    // 3-byte salt
	"$argon2id$v=19$m=8,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$AAAA",                        // 3-byte hash
	"$argon2id$v=19$m=8,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 200), // too long
	"$argon2id$v=19$m=8,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 42) + "!",
	"$argon2id$v=19$m=8,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43) + "$",
	"argon2id$v=19$m=8,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
	"$argon2id$v=19$m=8,t=1,p=1$MDEyMzQ1Njc4\nOWFiY2RlZg$" + strings.Repeat("A", 43), // base64 would skip the newline
	"$argon2id$v=19$m=8,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 42) + "\r",
	"", "$", "$$$$$", "plaintext-password", strings.Repeat("$argon2id", 100000),
}

func TestCheckPasswordHostile(t *testing.T) {
	for _, phc := range hostilePHC {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		ok, err := CheckPassword(phc, goodPassword)
		runtime.ReadMemStats(&after)
		if ok || !errors.Is(err, ErrBadHash) {
			t.Errorf("CheckPassword(%.80q) = %v, %v; want a refusal with ErrBadHash", phc, ok, err)
			continue
		}
		if !NeedsRehash(phc) {
			t.Errorf("NeedsRehash(%.80q) = false", phc)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2<<20 && len(phc) < 1000 {
			t.Errorf("CheckPassword(%.80q) allocated %d bytes before refusing", phc, alloc)
		}
		if strings.Contains(err.Error(), "MDEy") || strings.Contains(err.Error(), "AAAA") || strings.Contains(err.Error(), goodPassword) {
			t.Errorf("error %q repeats the hash or password", err)
		}
	}
}

func TestDummyCheckPassword(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	DummyCheckPassword(goodPassword)
	runtime.ReadMemStats(&after)
	// argon2id with hashParams.m KiB: the work was done.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc < uint64(hashParams.m)*1024 {
		t.Errorf("DummyCheckPassword allocated %d bytes: no argon2id ran", alloc)
	}
}

func FuzzParsePHC(f *testing.F) {
	good, err := HashPassword(goodPassword)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("$argon2id$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43))
	for _, s := range hostilePHC[:len(hostilePHC)-1] {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, salt, key, err := parsePHC(s)
		if err != nil {
			if !errors.Is(err, ErrBadHash) || !strings.HasPrefix(err.Error(), ErrBadHash.Error()+": ") {
				t.Fatalf("error %q", err)
			}
			return
		}
		if k.m < 8*uint32(k.p) || k.m > maxMemory || k.t < 1 || k.t > maxPasses || k.p < 1 || k.p > maxLanes {
			t.Fatalf("%q: parameters %+v out of bounds", s, k)
		}
		if len(salt) < 8 || len(salt) > 64 || len(key) < 16 || len(key) > 64 {
			t.Fatalf("%q: salt %d key %d bytes", s, len(salt), len(key))
		}
		if back := formatPHC(k, salt, key); back != s {
			t.Fatalf("%q reads back as %q", s, back)
		}
	})
}

// TestBadHashTiming: a stored hash the server cannot read costs the
// dummy's work all the same, so it answers like a wrong password.
func TestBadHashTiming(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ok, err := CheckPassword("$argon2id$v=19$m=8,t=1,p=1$MDEy$AAAA", goodPassword)
	runtime.ReadMemStats(&after)
	if ok || !errors.Is(err, ErrBadHash) {
		t.Fatalf("%v %v", ok, err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc < uint64(hashParams.m)*1024 {
		t.Errorf("a bad hash allocated %d bytes: the dummy work was skipped", alloc)
	}
}

func TestNeedsRehash(t *testing.T) {
	phc, err := HashPassword(goodPassword)
	if err != nil {
		t.Fatal(err)
	}
	if NeedsRehash(phc) {
		t.Errorf("a current hash %s needs a rehash", phc)
	}
	salt := []byte("0123456789abcdef")
	for _, tc := range []struct {
		k    argonParams
		salt []byte
		n    uint32
	}{
		{argonParams{m: hashParams.m * 2, t: hashParams.t, p: hashParams.p}, salt, keyLen},
		{argonParams{m: hashParams.m, t: hashParams.t + 1, p: hashParams.p}, salt, keyLen},
		{argonParams{m: 16, t: hashParams.t, p: 2}, salt, keyLen},
		{hashParams, salt[:8], keyLen},
		{hashParams, salt, 16},
	} {
		key, err := argonKey(context.Background(), goodPassword, tc.salt, tc.k, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		if phc := formatPHC(tc.k, tc.salt, key); !NeedsRehash(phc) {
			t.Errorf("%s needs no rehash", phc)
		}
	}
	if !NeedsRehash("") || !NeedsRehash("plaintext") {
		t.Error("an unreadable hash needs no rehash")
	}
}

// fillArgonSlots takes every argon2id slot, as that many logins in
// progress would, and returns how to give them back.
func fillArgonSlots(t *testing.T) func() {
	t.Helper()
	for range cap(argonSlots) {
		select {
		case argonSlots <- struct{}{}:
		default:
			t.Fatal("an argon2id slot is already taken")
		}
	}
	return func() {
		for range cap(argonSlots) {
			<-argonSlots
		}
	}
}

// TestArgonSlots: no more argon2id runs at once than there are slots;
// one waiting gives up when its context ends, with the context's error.
func TestArgonSlots(t *testing.T) {
	if want := max(1, runtime.GOMAXPROCS(0)); cap(argonSlots) != want {
		t.Fatalf("%d slots, want %d", cap(argonSlots), want)
	}
	phc, err := HashPassword(goodPassword)
	if err != nil {
		t.Fatal(err)
	}
	release := fillArgonSlots(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if ok, err := CheckPasswordContext(ctx, phc, goodPassword); ok || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("CheckPasswordContext with every slot taken: %v %v", ok, err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := DummyCheckPasswordContext(cctx, goodPassword); !errors.Is(err, context.Canceled) {
		t.Errorf("DummyCheckPasswordContext: %v", err)
	}
	if ok, err := CheckPasswordContext(cctx, "bad", goodPassword); ok || !errors.Is(err, context.Canceled) {
		t.Errorf("a bad hash whose dummy could not run: %v %v, want the context's error (the server is busy)", ok, err)
	}
	if _, err := HashPasswordContext(cctx, goodPassword); !errors.Is(err, context.Canceled) {
		t.Errorf("HashPasswordContext: %v", err)
	}
	// A waiting check goes on once a slot is free.
	waiting := make(chan struct{})
	argonWaiting = func() { close(waiting) }
	defer func() { argonWaiting = nil }()
	done := make(chan error, 1)
	go func() {
		ok, err := CheckPasswordContext(context.Background(), phc, goodPassword)
		if err == nil && !ok {
			err = errors.New("no match")
		}
		done <- err
	}()
	// It is waiting for a slot (so it cannot have run), and has not
	// answered.
	<-waiting
	select {
	case err := <-done:
		t.Fatalf("a check ran with every slot taken: %v", err)
	default:
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(argonSlots) != 0 {
		t.Errorf("%d slots still taken", len(argonSlots))
	}
}
