package identity

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"unicode"
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
// corrupt row cannot make one login cost much more than a normal one
// (argonSlots bounds how many run at once).
const (
	maxMemory  = 65536 // KiB (64 MiB)
	maxPasses  = 10
	maxLanes   = 8
	saltLen    = 16
	keyLen     = 32
	maxPHCText = 256
)

var b64 = base64.RawStdEncoding.Strict()

// ValidPassword checks a new password: valid UTF-8 without control
// characters (C0, DEL, C1: a tab or newline is more likely a paste
// accident than part of a password, and a NUL is cut short by some
// clients), at least MinPasswordChars characters, at most
// MaxPasswordBytes bytes. Its error is an *InvalidError that never
// repeats the password.
func ValidPassword(pw string) error {
	switch {
	case !utf8.ValidString(pw):
		return &InvalidError{Reason: "the password is not valid UTF-8 text"}
	case len(pw) > MaxPasswordBytes:
		return &InvalidError{Reason: "the password is longer than 1024 bytes"}
	case utf8.RuneCountInString(pw) < MinPasswordChars:
		return &InvalidError{Reason: "the password is shorter than 12 characters"}
	case strings.IndexFunc(pw, unicode.IsControl) >= 0:
		return &InvalidError{Reason: "the password holds a control character (such as a tab, newline or NUL)"}
	}
	return nil
}

// HashPassword is HashPasswordContext without a deadline.
func HashPassword(pw string) (string, error) {
	return HashPasswordContext(context.Background(), pw)
}

// HashPasswordContext checks pw with ValidPassword and returns its
// argon2id hash as a PHC string,
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash> (16-byte random salt,
// 32-byte hash, unpadded standard base64), which is all that is kept.
// Waiting for an argon2id slot ends with ctx (its error).
func HashPasswordContext(ctx context.Context, pw string) (string, error) {
	if err := ValidPassword(pw); err != nil {
		return "", err
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	k := hashParams
	key, err := argonKey(ctx, pw, salt, k, keyLen)
	if err != nil {
		return "", err
	}
	return formatPHC(k, salt, key), nil
}

// ErrBadHash is CheckPassword's error for a stored hash it cannot read
// (malformed, another algorithm, or costs beyond the bounds: memory
// 64 MiB, 10 passes, 8 lanes). The login is failed like a wrong
// password (401, with DummyCheckPassword's work done so that it takes
// as long); the caller should log it, since the operator cannot log in
// until an owner sets a new password. Compare with errors.Is: the
// error says what is wrong, never repeating the hash or the password.
var ErrBadHash = errors.New("the stored password hash is not an argon2id hash this server reads")

// CheckPassword is CheckPasswordContext without a deadline.
func CheckPassword(phc, pw string) (bool, error) {
	return CheckPasswordContext(context.Background(), phc, pw)
}

// CheckPasswordContext reports whether pw matches phc, a hash
// HashPassword made, comparing in constant time. The error is ErrBadHash
// (wrapped) for a phc it cannot read, found before any hashing, or
// ctx's error if ctx ended while waiting for an argon2id slot (the
// server is busy: answer 503, not 401); ok is false with any error. A
// pw longer than MaxPasswordBytes never matches and costs nothing.
//
// A hash made with other parameters than the current ones takes
// another time to check than DummyCheckPassword's: call NeedsRehash
// after a successful login and store a new hash.
func CheckPasswordContext(ctx context.Context, phc, pw string) (bool, error) {
	k, salt, want, err := parsePHC(phc)
	if err != nil {
		if derr := DummyCheckPasswordContext(ctx, pw); derr != nil {
			return false, derr
		}
		return false, err
	}
	if len(pw) > MaxPasswordBytes {
		return false, nil
	}
	got, err := argonKey(ctx, pw, salt, k, uint32(len(want)))
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// NeedsRehash reports whether phc, a stored hash that just matched,
// should be replaced by HashPassword's of the same password: it is not
// of the current parameters and lengths (so its check takes another
// time than a check of an unknown name's), or not readable at all.
func NeedsRehash(phc string) bool {
	k, salt, key, err := parsePHC(phc)
	return err != nil || k != hashParams || len(salt) != saltLen || len(key) != keyLen
}

// dummySalt is DummyCheckPassword's salt; the hash it makes is never
// compared with anything secret.
var dummySalt = make([]byte, saltLen)

// DummyCheckPassword is DummyCheckPasswordContext without a deadline.
func DummyCheckPassword(pw string) {
	_ = DummyCheckPasswordContext(context.Background(), pw)
}

// DummyCheckPasswordContext does the work of one CheckPassword against
// a hash of the current parameters, which always fails. A login for a
// name that does not exist calls it, so the answer's timing does not
// tell which names exist. Its error is ctx's if ctx ended while waiting
// for an argon2id slot.
func DummyCheckPasswordContext(ctx context.Context, pw string) error {
	if len(pw) > MaxPasswordBytes {
		return nil
	}
	got, err := argonKey(ctx, pw, dummySalt, hashParams, keyLen)
	if err != nil {
		return err
	}
	subtle.ConstantTimeCompare(got, make([]byte, keyLen))
	return nil
}

// argonSlots bounds the argon2id computations running at once to the
// CPUs Go uses, so that a burst of logins queues (each waiting under
// its request's context) instead of asking for 19-64 MiB each at once.
var argonSlots = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))

// argonWaiting, if set (by tests), is called when a computation finds
// every slot taken and starts to wait for one.
var argonWaiting func()

// argonKey is argon2id of pw with k, n bytes long, computed in one of
// argonSlots; the error is ctx's if it ended first.
func argonKey(ctx context.Context, pw string, salt []byte, k argonParams, n uint32) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case argonSlots <- struct{}{}:
	default:
		if argonWaiting != nil {
			argonWaiting()
		}
		select {
		case argonSlots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer func() { <-argonSlots }()
	return argon2.IDKey([]byte(pw), salt, k.t, k.m, k.p, n), nil
}

func formatPHC(k argonParams, salt, key []byte) string {
	return "$argon2id$v=19$m=" + strconv.FormatUint(uint64(k.m), 10) +
		",t=" + strconv.FormatUint(uint64(k.t), 10) +
		",p=" + strconv.FormatUint(uint64(k.p), 10) +
		"$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(key)
}

// parsePHC reads a PHC string strictly (canonical numbers and base64,
// so formatPHC gives it back unchanged) and enforces the cost bounds.
func parsePHC(s string) (argonParams, []byte, []byte, error) {
	fail := func(why string) (argonParams, []byte, []byte, error) {
		return argonParams{}, nil, nil, fmt.Errorf("%w: %s", ErrBadHash, why)
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
		return fail("m must be 8*p to 65536")
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
