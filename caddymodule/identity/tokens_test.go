package identity

import (
	"errors"
	"strings"
	"testing"
)

func TestNewToken(t *testing.T) {
	for kind, prefix := range map[Kind]string{KindAgent: "avt_", KindOperator: "avo_", KindSession: "avs_", KindLoginCookie: "avc_"} {
		seen := map[string]bool{}
		for range 100 {
			tok, hash, err := NewToken(kind)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(tok, prefix) || len(tok) != len(prefix)+43 {
				t.Fatalf("%v: token %q: want %s and 43 base64url characters", kind, tok, prefix)
			}
			if KindOf(tok) != kind || hash != HashToken(tok) {
				t.Fatalf("%v: KindOf %v, hash mismatch %v", kind, KindOf(tok), hash != HashToken(tok))
			}
			got, err := ParseBearer("Bearer " + tok)
			switch {
			case kind == KindLoginCookie && (err == nil || got != ""):
				t.Fatalf("a login cookie's secret passed as a bearer: %q", got)
			case kind != KindLoginCookie && (err != nil || got != tok):
				t.Fatalf("%v: ParseBearer of a new token: %q, %v", kind, got, err)
			}
			if seen[tok] {
				t.Fatal("a token repeated")
			}
			seen[tok] = true
		}
	}
	if _, _, err := NewToken(KindOther); err == nil {
		t.Error("NewToken(KindOther) made a token")
	}
	if SessionTokenPrefix != "avs_" {
		t.Errorf("session prefix %q", SessionTokenPrefix)
	}
}

func TestKindOf(t *testing.T) {
	for tok, want := range map[string]Kind{
		"avt_x": KindAgent, "avo_x": KindOperator, "avs_x": KindSession, "avc_x": KindLoginCookie,
		"ava_0123": KindOther, "": KindOther, "AVT_x": KindOther, "avt": KindOther, "xavt_": KindOther,
	} {
		if got := KindOf(tok); got != want {
			t.Errorf("KindOf(%q) = %v, want %v", tok, got, want)
		}
	}
}

func TestParseBearer(t *testing.T) {
	long := strings.Repeat("a", MaxTokenLength)
	for h, want := range map[string]string{
		"Bearer avt_abc":     "avt_abc",
		"bearer avt_abc":     "avt_abc",
		"BEARER    avt_abc":  "avt_abc",
		"Bearer " + long:     long,
		"Bearer !~\"$%&'()*": "!~\"$%&'()*",
	} {
		got, err := ParseBearer(h)
		if err != nil || got != want {
			t.Errorf("ParseBearer(%.40q) = %q, %v; want %q", h, got, err, want)
		}
	}
	const secret = "s3cr3t-value"
	for _, h := range []string{
		"Bearer",
		"Bearer ",
		"Bearer    ",
		"Bearer" + secret,
		"Bearer\t" + secret,
		"Basic " + secret,
		"Bearer " + secret + " ",
		"Bearer " + secret + " x",
		" Bearer " + secret,
		"Bearer " + secret + "\x00",
		"Bearer " + secret + "\x7f",
		"Bearer " + secret + "é",
		"Bearer " + secret + strings.Repeat("x", MaxTokenLength),
		"Bear",
		secret,
		"Bearer avc_" + secret, // a login cookie's secret is never a bearer
	} {
		got, err := ParseBearer(h)
		var ue *UnauthenticatedError
		if err == nil || got != "" || !errors.As(err, &ue) || ue.HTTPStatus() != 401 {
			t.Errorf("ParseBearer(%.40q) = %q, %v; want an *UnauthenticatedError", h, got, err)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("ParseBearer(%.40q): error %q repeats the token", h, err)
		}
	}
	if _, err := ParseBearer(""); err != ErrNoToken {
		t.Errorf("empty header: %v, want ErrNoToken", err)
	}
}

// bearerErrors are every text ParseBearer may fail with: none repeats
// its input.
var bearerErrors = map[string]bool{
	ErrNoToken.Error(): true,
	"the Authorization header is not a Bearer token: send Authorization: Bearer <token>": true,
	"the bearer token is empty":                                                               true,
	"the bearer token is longer than 512 bytes":                                               true,
	"the bearer token holds a space, control or non-ASCII character":                          true,
	"a login cookie's secret is not a bearer token: send the login's token (avo_...) instead": true,
}

func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{
		"Bearer avt_abc", "bearer  avs_x", "Bearer", "Bearer ", "Basic abc", "Bearer a b", "Bearer \x00",
		"Bearer " + strings.Repeat("z", 513), "BeArEr ~", "Bearer\tx", "", "Bearer avc_x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, err := ParseBearer(h)
		if err != nil {
			if tok != "" {
				t.Fatalf("error %v with token %q", err, tok)
			}
			if !bearerErrors[err.Error()] {
				t.Fatalf("error text %q is not one of the fixed texts", err)
			}
			return
		}
		if tok == "" || len(tok) > MaxTokenLength || !strings.HasSuffix(h, tok) || KindOf(tok) == KindLoginCookie {
			t.Fatalf("ParseBearer(%q) = %q", h, tok)
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] <= ' ' || tok[i] >= 0x7f {
				t.Fatalf("token %q holds byte %#x", tok, tok[i])
			}
		}
		if again, err := ParseBearer("Bearer " + tok); err != nil || again != tok {
			t.Fatalf("Bearer %q does not round-trip: %q, %v", tok, again, err)
		}
	})
}

// TestErrNoTokenValue: the sentinel is a value no caller can change for
// another; errors.As still finds an *UnauthenticatedError.
func TestErrNoTokenValue(t *testing.T) {
	var ue *UnauthenticatedError
	if !errors.As(ErrNoToken, &ue) || ue.Reason != ErrNoToken.Error() || ue.HTTPStatus() != 401 {
		t.Fatalf("errors.As: %v", ue)
	}
	ue.Reason = "changed"
	if ErrNoToken.Error() != "no credentials: send Authorization: Bearer <token>" {
		t.Fatalf("ErrNoToken changed through errors.As: %q", ErrNoToken)
	}
	var coded interface{ HTTPStatus() int }
	if !errors.As(ErrNoToken, &coded) || coded.HTTPStatus() != 401 {
		t.Error("no status")
	}
	if _, err := ParseBearer(""); !errors.Is(err, ErrNoToken) {
		t.Errorf("ParseBearer: %v", err)
	}
}

func TestValidAdminToken(t *testing.T) {
	for _, tok := range []string{"ava_" + strings.Repeat("0f", 32), "0123456789abcdef", strings.Repeat("x", 512), "!#$%&'()*+,-./~{}|"} {
		if err := ValidAdminToken(tok); err != nil {
			t.Errorf("ValidAdminToken(%.20q): %v", tok, err)
		}
	}
	for tok, want := range map[string]string{
		"":                       "is 0 bytes long: use at least 16",
		"short-secret-15":        "is 15 bytes long: use at least 16",
		strings.Repeat("s", 513): "longer than 512 bytes",
		"secret with a space":    "space, control or non-ASCII",
		"secretsecretsecret\n":   "space, control or non-ASCII",
		"secretsecretsecret\x00": "space, control or non-ASCII",
		"secretsecretsecrét":     "space, control or non-ASCII",
		"avt_secretsecretsecret": "starts with avt_, the prefix of agent tokens",
		"avo_secretsecretsecret": "starts with avo_, the prefix of operator login tokens",
		"avs_secretsecretsecret": "starts with avs_, the prefix of session tokens",
	} {
		err := ValidAdminToken(tok)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidAdminToken(%.20q) = %v, want %q", tok, err, want)
			continue
		}
		if len(tok) > 4 && strings.Contains(err.Error(), tok[4:]) {
			t.Errorf("error %q repeats the token", err)
		}
	}
}
