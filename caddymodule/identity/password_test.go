package identity

import (
	"errors"
	"regexp"
	"runtime"
	"strings"
	"testing"
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
		phc := formatPHC(k, salt, argonKey(goodPassword, salt, k, n))
		if ok, err := CheckPassword(phc, goodPassword); !ok || err != nil {
			t.Errorf("%s: %v %v", phc, ok, err)
		}
		if ok, _ := CheckPassword(phc, "wrong password!"); ok {
			t.Errorf("%s: a wrong password matched", phc)
		}
	}
}

func TestValidPassword(t *testing.T) {
	for _, pw := range []string{"twelve chars", strings.Repeat("é", 12), strings.Repeat("x", 1024), "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b"} {
		if err := ValidPassword(pw); err != nil {
			t.Errorf("ValidPassword(%.20q): %v", pw, err)
		}
		if _, err := HashPassword(pw); err != nil {
			t.Errorf("HashPassword(%.20q): %v", pw, err)
		}
	}
	for pw, want := range map[string]string{
		"eleven char":              "shorter than 12 characters",
		"":                         "shorter than 12 characters",
		strings.Repeat("€", 11):    "shorter than 12 characters", // 33 bytes, 11 characters
		strings.Repeat("x", 1025):  "longer than 1024 bytes",
		strings.Repeat("€", 342):   "longer than 1024 bytes",
		"qzqz start \xff\xfe tail": "not valid UTF-8",
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
	"$argon2id$v=19$m=262145,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + strings.Repeat("A", 43),
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
		if ok || err == nil {
			t.Errorf("CheckPassword(%.80q) = %v, %v; want a refusal", phc, ok, err)
			continue
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
			if !strings.HasPrefix(err.Error(), errPHC.Error()) {
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
