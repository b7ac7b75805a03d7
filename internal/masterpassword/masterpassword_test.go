package masterpassword

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("from file\r\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AV_TEST_PW", "from env")
	t.Setenv("AV_TEST_BRACES", "pass{and3}word")
	repl := caddy.NewReplacer()
	for _, tc := range []struct {
		name, value, file, want string
		err                     error
	}{
		{name: "value", value: "{env.AV_TEST_PW}", want: "from env"},
		{name: "file wins", value: "{env.AV_TEST_PW}", file: file, want: "from file"},
		{name: "neither", err: ErrMissing},
		{name: "unset env", value: "{env.AV_TEST_UNSET}", err: ErrMissing},
		{name: "unset file env, value set", value: "{env.AV_TEST_PW}", file: "{env.AV_TEST_UNSET}", want: "from env"},
		{name: "braces through env", value: "{env.AV_TEST_BRACES}", want: "pass{and3}word"},
	} {
		got, err := Resolve(repl, tc.value, tc.file)
		if !errors.Is(err, tc.err) || string(got) != tc.want {
			t.Errorf("%s: got %q, %v; want %q, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
	if _, err := Resolve(repl, "", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "master_password_file") {
		t.Errorf("missing file: %v", err)
	}
}

// A literal password with braces is taken for a placeholder; the error
// must not quote it, not even the part in braces.
func TestResolveNeverQuotesThePassword(t *testing.T) {
	repl := caddy.NewReplacer()
	_, err := Resolve(repl, "my-secret{and3}zq", "")
	if err == nil || errors.Is(err, ErrMissing) {
		t.Fatalf("err = %v, want an unknown-placeholder error", err)
	}
	for _, part := range []string{"and3", "my-secret", "zq"} {
		if strings.Contains(err.Error(), part) {
			t.Errorf("error %q quotes the password (%q)", err, part)
		}
	}
	if !strings.Contains(err.Error(), "master_password holds an unknown {placeholder}") {
		t.Errorf("error %q does not say what is wrong", err)
	}
	_, err = Resolve(repl, "", "/run/secrets/{nope}")
	if err == nil || !strings.Contains(err.Error(), "master_password_file holds an unknown {placeholder}") || strings.Contains(err.Error(), "nope") {
		t.Errorf("file placeholder: %v", err)
	}
}

// An empty (or blank) password file while master_password is set: the
// file wins, so the error says the file is empty and the value unused,
// never "no password is set".
func TestResolveEmptyFileSaysWhich(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	blank := filepath.Join(dir, "blank")
	os.WriteFile(empty, nil, 0o600)
	os.WriteFile(blank, []byte(" \t\n"), 0o600)
	t.Setenv("AV_TEST_PW", "from env")
	repl := caddy.NewReplacer()
	for _, tc := range []struct {
		file, value string
		says        []string
	}{
		{empty, "{env.AV_TEST_PW}", []string{"master_password_file " + empty + " is empty", "master_password is set too, but the file takes precedence"}},
		{blank, "{env.AV_TEST_PW}", []string{"holds only whitespace", "takes precedence"}},
		{empty, "", []string{"master_password_file " + empty + " is empty"}},
	} {
		pw, err := Resolve(repl, tc.value, tc.file)
		if err == nil || errors.Is(err, ErrMissing) || pw != nil {
			t.Errorf("%s, value %q: %q, %v; want an error naming the file", tc.file, tc.value, pw, err)
			continue
		}
		for _, s := range tc.says {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q lacks %q", tc.file, err, s)
			}
		}
		if strings.Contains(err.Error(), "from env") {
			t.Errorf("error quotes the value: %q", err)
		}
	}
	if _, err := Resolve(repl, "", empty); err != nil && strings.Contains(err.Error(), "set too") {
		t.Errorf("no value set, yet the error says one is: %v", err)
	}
}

func TestResolveBoundsTheFile(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, []byte(strings.Repeat("x", MaxFileBytes+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Resolve(caddy.NewReplacer(), "", big); err == nil || !strings.Contains(err.Error(), "larger than 65536 bytes") {
		t.Errorf("big file: %v", err)
	}
	exact := filepath.Join(t.TempDir(), "exact")
	os.WriteFile(exact, []byte(strings.Repeat("y", MaxFileBytes)), 0o600)
	if pw, err := Resolve(caddy.NewReplacer(), "", exact); err != nil || len(pw) != MaxFileBytes {
		t.Errorf("a file of exactly the bound: %d bytes, %v", len(pw), err)
	}
}

func TestResolveRefusesWhitespace(t *testing.T) {
	t.Setenv("AV_TEST_BLANK", "  \t ")
	_, err := Resolve(caddy.NewReplacer(), "{env.AV_TEST_BLANK}", "")
	if err == nil || errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "master_password is only whitespace") {
		t.Errorf("whitespace password: %v", err)
	}
}
