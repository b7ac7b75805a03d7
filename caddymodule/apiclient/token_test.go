//go:build unix

package apiclient

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func writeFile(t *testing.T, path, content string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return path
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// --token-file > AGENT_VAULT_TOKEN > the data dir's file, the last only
// for a management API on loopback; a flag given empty is an error.
func TestResolveToken(t *testing.T) {
	dir := t.TempDir()
	flagFile := writeFile(t, filepath.Join(dir, "flag.token"), " from-flag\n", 0o600)
	defFile := writeFile(t, filepath.Join(dir, "agent.token"), "from-default\n", 0o600)
	local, remote := mustURL(t, "http://127.0.0.1:14321"), mustURL(t, "https://vault.example:443")
	spec := func(mod func(*TokenSpec)) TokenSpec {
		s := TokenSpec{Flag: "--token-file", DefaultFile: defFile, DefaultHint: "start the server", Addr: local}
		mod(&s)
		return s
	}
	for _, tc := range []struct {
		name       string
		spec       TokenSpec
		want, from string
		warns      int
	}{
		{"flag", spec(func(s *TokenSpec) { s.File, s.FileGiven = flagFile, true }), "from-flag", "--token-file " + flagFile, 0},
		{"flag beats env, with a warning", spec(func(s *TokenSpec) { s.File, s.FileGiven, s.Env = flagFile, true, "from-env" }), "from-flag", "--token-file " + flagFile, 1},
		{"env", spec(func(s *TokenSpec) { s.Env = " from-env " }), "from-env", "AGENT_VAULT_TOKEN", 0},
		{"env, remote", spec(func(s *TokenSpec) { s.Env, s.Addr = "from-env", remote }), "from-env", "AGENT_VAULT_TOKEN", 0},
		{"flag, remote", spec(func(s *TokenSpec) { s.File, s.FileGiven, s.Addr = flagFile, true, remote }), "from-flag", "--token-file " + flagFile, 0},
		{"default", spec(func(s *TokenSpec) {}), "from-default", defFile, 0},
		{"blank env is unset", spec(func(s *TokenSpec) { s.Env = "  " }), "from-default", defFile, 0},
		{"default, localhost", spec(func(s *TokenSpec) { s.Addr = mustURL(t, "http://localhost:1") }), "from-default", defFile, 0},
	} {
		got, err := ResolveToken(tc.spec)
		if err != nil || got.Value != tc.want || got.Source != tc.from || len(got.Warnings) != tc.warns {
			t.Errorf("%s: %+v, %v; want %q from %q with %d warnings", tc.name, got, err, tc.want, tc.from, tc.warns)
		}
	}
	got, _ := ResolveToken(spec(func(s *TokenSpec) { s.File, s.FileGiven, s.Env = flagFile, true, "from-env" }))
	if len(got.Warnings) != 1 || got.Warnings[0] != "both --token-file and AGENT_VAULT_TOKEN are set: using --token-file" {
		t.Errorf("warnings = %q", got.Warnings)
	}

	for _, tc := range []struct {
		name string
		spec TokenSpec
		says string
	}{
		{"flag given empty", spec(func(s *TokenSpec) { s.FileGiven = true }), "--token-file is empty (an unset variable?)"},
		{"flag given empty, env set", spec(func(s *TokenSpec) { s.FileGiven, s.Env = true, "from-env" }), "--token-file is empty"},
		{"default, remote", spec(func(s *TokenSpec) { s.Addr = remote }), "no token: the management API https://vault.example:443 is not on loopback, so the data dir's token file is not sent there by default: set AGENT_VAULT_TOKEN or pass --token-file"},
		{"default missing", spec(func(s *TokenSpec) { s.DefaultFile = filepath.Join(dir, "nope") }), "no token: AGENT_VAULT_TOKEN is unset and " + filepath.Join(dir, "nope") + " does not exist: start the server"},
		{"no data dir", spec(func(s *TokenSpec) { s.DefaultFile = "" }), "no token: set AGENT_VAULT_TOKEN or pass --token-file"},
		{"flag missing", spec(func(s *TokenSpec) { s.File, s.FileGiven = filepath.Join(dir, "nope"), true }), "the token file " + filepath.Join(dir, "nope") + " is not readable (no such file or directory)"},
		{"flag empty file", spec(func(s *TokenSpec) { s.File, s.FileGiven = writeFile(t, filepath.Join(dir, "e"), "\n", 0o600), true }), "is empty"},
		{"flag directory", spec(func(s *TokenSpec) { s.File, s.FileGiven = dir, true }), "is not readable (not a regular file)"},
	} {
		if got, err := ResolveToken(tc.spec); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %+v, %v; want an error saying %q", tc.name, got, err, tc.says)
		}
	}
}

// A FIFO (or any non-regular file) is refused before it is opened:
// reading one would hang until a writer came.
func TestReadSecretFileRefusesFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := ReadSecretFile(fifo, 100)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || err.Error() != "not a regular file" {
			t.Errorf("FIFO: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading a FIFO hung")
	}
	for _, p := range []string{"/dev/null", t.TempDir()} {
		if _, _, err := ReadSecretFile(p, 100); err == nil || err.Error() != "not a regular file" {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	ok := writeFile(t, filepath.Join(dir, "ok"), "secret", 0o600)
	data, warnings, err := ReadSecretFile(ok, 6)
	if err != nil || string(data) != "secret" || len(warnings) != 0 {
		t.Errorf("ok: %q, %q, %v", data, warnings, err)
	}
	if _, _, err := ReadSecretFile(ok, 5); err == nil || !strings.Contains(err.Error(), "larger than 5 bytes") {
		t.Errorf("over the bound: %v", err)
	}
	// A symlink to a regular file is fine (mounted secrets are symlinks).
	link := filepath.Join(dir, "link")
	if err := os.Symlink(ok, link); err != nil {
		t.Fatal(err)
	}
	if data, _, err := ReadSecretFile(link, 100); err != nil || string(data) != "secret" {
		t.Errorf("symlink: %q, %v", data, err)
	}
	// Readable by others: read, with a warning as ssh gives.
	shared := writeFile(t, filepath.Join(dir, "shared"), "secret", 0o644)
	data, warnings, err = ReadSecretFile(shared, 100)
	if err != nil || string(data) != "secret" || len(warnings) != 1 || warnings[0] != shared+" is accessible by others (mode 0644): chmod 600 it" {
		t.Errorf("shared: %q, %q, %v", data, warnings, err)
	}
	if os.Getuid() == 0 {
		other := writeFile(t, filepath.Join(dir, "other"), "secret", 0o600)
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		_, warnings, err := ReadSecretFile(other, 100)
		if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], "is owned by uid 65534, not by you (uid 0)") {
			t.Errorf("another user's file: %q, %v", warnings, err)
		}
	}
}

// The token file's warnings reach the resolved token.
func TestResolveTokenWarnsOfASharedFile(t *testing.T) {
	f := writeFile(t, filepath.Join(t.TempDir(), "tok"), "tok\n", 0o640)
	got, err := ResolveToken(TokenSpec{Flag: "--token-file", File: f, FileGiven: true})
	if err != nil || len(got.Warnings) != 1 || !strings.Contains(got.Warnings[0], "mode 0640") {
		t.Errorf("%+v, %v", got, err)
	}
}
