//go:build unix

package launcher

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestDefaultDataDir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, tc := range []struct {
		dataDir, xdg, want string
	}{
		{"/custom/dir", "/xdg", "/custom/dir"},
		{"", "/xdg", "/xdg/agent-vault"},
		{"", "relative/xdg", filepath.Join(home, ".local", "share", "agent-vault")},
		{"", "", filepath.Join(home, ".local", "share", "agent-vault")},
	} {
		t.Setenv("AGENT_VAULT_DATA_DIR", tc.dataDir)
		t.Setenv("XDG_DATA_HOME", tc.xdg)
		if got := dataDir(os.Getenv, os.UserHomeDir); got != tc.want {
			t.Errorf("dataDir(data=%q xdg=%q) = %q, want %q", tc.dataDir, tc.xdg, got, tc.want)
		}
	}
	noHome := func() (string, error) { return "", errors.New("no home") }
	if got := dataDir(func(string) string { return "" }, noHome); got != "" {
		t.Errorf("dataDir without home = %q, want empty", got)
	}
}

func TestAPIToken(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "agent.token"), []byte("  from-data-dir\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	explicit := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(explicit, []byte("\tfrom-flag \r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	xdg := t.TempDir()
	if err := os.MkdirAll(filepath.Join(xdg, "agent-vault"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(xdg, "agent-vault", "agent.token"), []byte("from-xdg"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		env       []string
		tokenFile string
		want      string
	}{
		{"env wins", []string{"AGENT_VAULT_TOKEN= from-env \n", "AGENT_VAULT_DATA_DIR=" + dir}, explicit, "from-env"},
		{"flag", []string{"AGENT_VAULT_DATA_DIR=" + dir}, explicit, "from-flag"},
		{"data dir", []string{"AGENT_VAULT_DATA_DIR=" + dir}, "", "from-data-dir"},
		{"xdg", []string{"XDG_DATA_HOME=" + xdg, "HOME=/nonexistent"}, "", "from-xdg"},
		{"blank env falls back", []string{"AGENT_VAULT_TOKEN=  ", "AGENT_VAULT_DATA_DIR=" + dir}, "", "from-data-dir"},
	} {
		got, err := apiToken(getenvFrom(tc.env), tc.tokenFile)
		if err != nil || got != tc.want {
			t.Errorf("%s: apiToken = %q, %v, want %q", tc.name, got, err, tc.want)
		}
	}
	for name, tc := range map[string]struct{ tokenFile, want string }{
		"missing":   {filepath.Join(dir, "nope"), "nope is not readable (no such file or directory)"},
		"empty":     {empty, "empty is empty"},
		"directory": {dir, "is not readable (not a regular file)"},
	} {
		if _, err := apiToken(getenvFrom(nil), tc.tokenFile); err == nil || !strings.HasPrefix(err.Error(), "no token: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
	// The default file, absent, says how to get one.
	_, err := apiToken(getenvFrom([]string{"AGENT_VAULT_DATA_DIR=" + t.TempDir()}), "")
	if err == nil || !strings.Contains(err.Error(), "agent.token does not exist: start the server with `make run`, which creates it") ||
		!strings.Contains(err.Error(), "agent-vault agent add") {
		t.Errorf("absent default file: %v", err)
	}
}

func getenvFrom(env []string) func(string) string {
	return func(name string) string { return lookupEnv(env, name) }
}

func TestMainMissingToken(t *testing.T) {
	api := newFakeAPI(t)
	marker := filepath.Join(t.TempDir(), "started")
	env := append(baseEnv(), "AGENT_VAULT_DATA_DIR="+t.TempDir())
	var stderr strings.Builder
	code := Main([]string{"--addr", api.srv.URL, "/bin/sh", "-c", `touch "$1"`, "sh", marker}, env, nil, nil, &stderr)
	if code != ExitSetup {
		t.Errorf("Main = %d, want %d", code, ExitSetup)
	}
	if !strings.HasPrefix(stderr.String(), "av-launch: no token: AGENT_VAULT_TOKEN is unset and ") || !strings.Contains(stderr.String(), "make run") {
		t.Errorf("stderr = %q", stderr.String())
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("child ran without a token")
	}
	if creates, _ := api.calls(); len(creates) != 0 {
		t.Error("API called without a token")
	}
}

func TestMainTokenFile(t *testing.T) {
	api := newFakeAPI(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(" "+testAdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	code := Main([]string{"--addr", api.srv.URL, "--token-file", tokenFile, "/bin/sh", "-c", "exit 0"}, baseEnv(), nil, nil, &stderr)
	if code != 0 {
		t.Fatalf("Main = %d; stderr: %s", code, stderr.String())
	}
	if creates, _ := api.calls(); len(creates) != 1 || creates[0].auth != "Bearer "+testAdminToken {
		t.Errorf("creates = %+v", creates)
	}
}

func TestMainUsageErrors(t *testing.T) {
	api := newFakeAPI(t)
	env := append(baseEnv(), "AGENT_VAULT_TOKEN="+testAdminToken, "AGENT_VAULT_ADDR="+api.srv.URL)
	for _, tc := range []struct {
		args     []string
		code     int
		inStderr string
	}{
		{nil, ExitSetup, "no command given"},
		{[]string{"--"}, ExitSetup, "no command given"},
		{[]string{"--ttl", "soon", "true"}, ExitSetup, "invalid value"},
		{[]string{"--ttl", "0", "true"}, ExitSetup, "--ttl must be positive"},
		{[]string{"--bogus", "true"}, ExitSetup, "flag provided but not defined"},
		{[]string{"--addr", "127.0.0.1:14321", "true"}, ExitSetup, `av-launch: --addr "127.0.0.1:14321" has no scheme: use http://host:port`},
		{[]string{"--session-token-file", "/nonexistent", "--services", "a", "true"}, ExitSetup, "--services does not apply with --session-token-file"},
		{[]string{"--ttl", "5m", "--session-token-file", "/nonexistent", "true"}, ExitSetup, "--ttl does not apply with --session-token-file"},
		{[]string{"-h"}, 0, "usage: av-launch"},
	} {
		var stdout, stderr strings.Builder
		code := Main(tc.args, env, nil, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.inStderr) {
			t.Errorf("Main(%q) = %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.inStderr)
		}
		if stdout.Len() != 0 {
			t.Errorf("Main(%q) wrote to stdout: %q", tc.args, stdout.String())
		}
	}
	if creates, _ := api.calls(); len(creates) != 0 {
		t.Errorf("usage errors reached the API: %d calls", len(creates))
	}
}

// An explicitly empty --services (say, from an unset variable) is a usage
// error; only leaving the flag out means every service.
func TestMainEmptyServices(t *testing.T) {
	api := newFakeAPI(t)
	env := append(baseEnv(), "AGENT_VAULT_TOKEN="+testAdminToken, "AGENT_VAULT_ADDR="+api.srv.URL)
	marker := filepath.Join(t.TempDir(), "started")
	const none, hole = "names no service: name at least one, or omit --services for all services", "has an empty name"
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--services", ""}, none},
		{[]string{"--services="}, none},
		{[]string{"-services", " "}, none},
		{[]string{"--services", ","}, none},
		{[]string{"--services", " , ,\t"}, none},
		{[]string{"--services", "a,,b"}, `"a,,b" has an empty name (item 2)`},
		{[]string{"--services", "github,"}, hole},
		{[]string{"--services", "github", "--services", ""}, none}, // the last one counts
	} {
		var stderr strings.Builder
		args := append(tc.flags, "/bin/sh", "-c", `touch "$1"`, "sh", marker)
		code := Main(args, env, nil, nil, &stderr)
		if code != ExitSetup || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("Main(%q) = %d, stderr %q; want %d and %q", tc.flags, code, stderr.String(), ExitSetup, tc.want)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("child ran with an empty --services")
	}
	if creates, _ := api.calls(); len(creates) != 0 {
		t.Errorf("an empty --services reached the API: %+v", creates)
	}
}

func TestMainNamed(t *testing.T) {
	var stderr strings.Builder
	env := append(baseEnv(), "AGENT_VAULT_TOKEN=x")
	if code := MainNamed("agent-vault vault run", nil, env, nil, nil, &stderr); code != ExitSetup {
		t.Errorf("code = %d", code)
	}
	if !strings.HasPrefix(stderr.String(), "agent-vault vault run: no command given") {
		t.Errorf("stderr = %q", stderr.String())
	}
}

func TestSplitServices(t *testing.T) {
	for in, want := range map[string][]string{
		"github":           {"github"},
		" github , openai": {"github", "openai"},
	} {
		if got, err := splitServices(in); err != nil || !slices.Equal(got, want) {
			t.Errorf("splitServices(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", " ", " , ", "a,", ",a", "a,,b", "a, ,b"} {
		if got, err := splitServices(in); err == nil {
			t.Errorf("splitServices(%q) = %q, want an error", in, got)
		}
	}
}
