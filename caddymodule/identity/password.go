package identity

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Password length rules. The minimum counts characters (as the API's
// documentation says "12 characters"), the maximum bytes (it bounds the
// work of a login).
const (
	MinPasswordChars = 12
	MaxPasswordBytes = 1024
)

// argonParams are argon2id's cost parameters.
type argonParams struct {
	m, t uint32 // memory in KiB, passes
	p    uint8  // lanes
}

// defaultParams are what HashPassword uses: OWASP's argon2id minimum
// (19 MiB, 2 passes, 1 lane), some 20-50 ms a hash.
var defaultParams = argonParams{m: 19456, t: 2, p: 1}

// hashParams are the parameters of new hashes and of
// DummyCheckPassword; tests lower them to stay fast.
var hashParams = defaultParams

// Bounds on what a stored hash may ask for, so that a hostile or
// corrupt row cannot make one login cost a gigabyte or minutes.
const (
	maxMemory  = 262144 // KiB (256 MiB)
	maxPasses  = 10
	maxLanes   = 8
	saltLen    = 16
	keyLen     = 32
	maxPHCText = 256
)

var b64 = base64.RawStdEncoding.Strict()

// ValidPassword checks a new password: valid UTF-8, at least
// MinPasswordChars characters, at most MaxPasswordBytes bytes. Its
// error is an *InvalidError that never repeats the password.
func ValidPassword(pw string) error {
	switch {
	case !utf8.ValidString(pw):
		return &InvalidError{Reason: "the password is not valid UTF-8 text"}
	case len(pw) > MaxPasswordBytes:
		return &InvalidError{Reason: "the password is longer than 1024 bytes"}
	case utf8.RuneCountInString(pw) < MinPasswordChars:
		return &InvalidError{Reason: "the password is shorter than 12 characters"}
	}
	return nil
}

// HashPassword checks pw with ValidPassword and returns its argon2id
// hash as a PHC string,
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash> (16-byte random salt,
// 32-byte hash, unpadded standard base64), which is all that is kept.
func HashPassword(pw string) (string, error) {
	if err := ValidPassword(pw); err != nil {
		return "", err
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	k := hashParams
	return formatPHC(k, salt, argonKey(pw, salt, k, keyLen)), nil
}

// CheckPassword reports whether pw matches phc, a hash HashPassword
// made, comparing in constant time. A malformed phc, or one whose costs
// exceed the bounds (memory 256 MiB, 10 passes, 8 lanes), is an error
// found before any hashing (DummyCheckPassword's work is done instead,
// so the answer takes as long); the error never repeats phc or pw. A pw
// longer than MaxPasswordBytes never matches and costs nothing.
func CheckPassword(phc, pw string) (bool, error) {
	k, salt, want, err := parsePHC(phc)
	if err != nil {
		DummyCheckPassword(pw)
		return false, err
	}
	if len(pw) > MaxPasswordBytes {
		return false, nil
	}
	got := argonKey(pw, salt, k, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// dummySalt is DummyCheckPassword's salt; the hash it makes is never
// compared with anything secret.
var dummySalt = make([]byte, saltLen)

// DummyCheckPassword does the work of one CheckPassword against a hash
// of the current parameters and always fails. A login for a name that
// does not exist calls it, so the answer's timing does not tell which
// names exist.
func DummyCheckPassword(pw string) {
	if len(pw) > MaxPasswordBytes {
		return
	}
	got := argonKey(pw, dummySalt, hashParams, keyLen)
	subtle.ConstantTimeCompare(got, make([]byte, keyLen))
}

// argonKey is argon2id of pw with k, n bytes long.
func argonKey(pw string, salt []byte, k argonParams, n uint32) []byte {
	return argon2.IDKey([]byte(pw), salt, k.t, k.m, k.p, n)
}

func formatPHC(k argonParams, salt, key []byte) string {
	return "$argon2id$v=19$m=" + strconv.FormatUint(uint64(k.m), 10) +
		",t=" + strconv.FormatUint(uint64(k.t), 10) +
		",p=" + strconv.FormatUint(uint64(k.p), 10) +
		"$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(key)
}

var errPHC = errors.New("the stored password hash is not an argon2id hash this server reads")

// parsePHC reads a PHC string strictly (canonical numbers and base64,
// so formatPHC gives it back unchanged) and enforces the cost bounds.
func parsePHC(s string) (argonParams, []byte, []byte, error) {
	fail := func(why string) (argonParams, []byte, []byte, error) {
		return argonParams{}, nil, nil, errors.New(errPHC.Error() + ": " + why)
	}
	if len(s) > maxPHCText {
		return fail("too long")
	}
	// base64 decoding skips newlines: refuse them (and any other byte
	// a PHC string never holds) first.
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return fail("a space, control or non-ASCII character")
		}
	}
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v=19" {
		return fail("want $argon2id$v=19$m=...,t=...,p=...$salt$hash")
	}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return fail("want the parameters m=...,t=...,p=...")
	}
	var v [3]uint64
	for i, name := range []string{"m=", "t=", "p="} {
		n, ok := canonicalUint(params[i], name)
		if !ok {
			return fail("want the parameters m=...,t=...,p=... in decimal")
		}
		v[i] = n
	}
	switch {
	case v[2] < 1 || v[2] > maxLanes:
		return fail("p must be 1 to 8")
	case v[1] < 1 || v[1] > maxPasses:
		return fail("t must be 1 to 10")
	case v[0] < 8*v[2] || v[0] > maxMemory:
		return fail("m must be 8*p to 262144")
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 || len(salt) > 64 {
		return fail("the salt must be 8 to 64 bytes of unpadded base64")
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return fail("the hash must be 16 to 64 bytes of unpadded base64")
	}
	return argonParams{m: uint32(v[0]), t: uint32(v[1]), p: uint8(v[2])}, salt, key, nil
}

// canonicalUint reads prefix followed by a decimal number without sign
// or leading zeros, of at most 10 digits.
func canonicalUint(s, prefix string) (uint64, bool) {
	d, ok := strings.CutPrefix(s, prefix)
	if !ok || d == "" || len(d) > 10 || (d[0] == '0' && len(d) > 1) {
		return 0, false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(d, 10, 64)
	return n, err == nil
}
