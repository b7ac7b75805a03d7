//go:build unix

package agentvault

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// agentVaultBinary builds caddymodule/cmd/agent-vault once per run, with
// a version stamped in as `make build` does.
func agentVaultBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a binary")
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "agent-vault-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "agent-vault")
		out, err := exec.Command("go", "build", "-ldflags", "-X github.com/agentvault/caddy-agent-vault.Version=v9.8.7-test",
			"-o", binPath, "./caddymodule/cmd/agent-vault").CombinedOutput()
		if err != nil {
			binErr = errors.New(string(out))
		}
	})
	if binErr != nil {
		t.Fatalf("building agent-vault: %v", binErr)
	}
	return binPath
}

// runBinary runs the binary with env added to a clean environment.
func runBinary(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(agentVaultBinary(t), args...)
	home := t.TempDir()
	cmd.Env = append([]string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "AGENT_VAULT_DATA_DIR=" + filepath.Join(home, "data")}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestBinaryHelp(t *testing.T) {
	out, _, code := runBinary(t, nil, "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	if !strings.HasPrefix(out, "agent-vault is a credential broker for AI agents.") {
		t.Errorf("--help starts with %q", strings.SplitN(out, "\n", 2)[0])
	}
	own, caddyGroup := strings.Index(out, "\nagent-vault commands:\n"), strings.Index(out, "\nCaddy commands:\n")
	if own < 0 || caddyGroup < own {
		t.Fatalf("--help lists no agent-vault group before Caddy's:\n%s", out)
	}
	ours, theirs := out[own:caddyGroup], out[caddyGroup:]
	for _, verb := range ownVerbs() {
		if !regexp.MustCompile(`\n  ` + verb + ` +\S`).MatchString(ours) {
			t.Errorf("%s is not in the agent-vault group:\n%s", verb, ours)
		}
	}
	// Caddy's verbs, those registered by later packages included, come after.
	for _, verb := range []string{"run", "stop", "reload", "adapt", "validate", "version", "file-server", "reverse-proxy"} {
		if !regexp.MustCompile(`\n  ` + verb + ` +\S`).MatchString(theirs) {
			t.Errorf("%s is not in Caddy's group:\n%s", verb, theirs)
		}
	}
	if strings.Contains(out, "Additional Commands") || strings.Contains(out, "$ caddy") {
		t.Errorf("--help has ungrouped commands or Caddy's examples:\n%s", out)
	}
	// The same text with no arguments and from `help`.
	for _, args := range [][]string{nil, {"help"}} {
		if got, _, _ := runBinary(t, nil, args...); got != out {
			t.Errorf("%v prints another help", args)
		}
	}
}

func TestBinaryVersion(t *testing.T) {
	want := regexp.MustCompile(`^agent-vault v9\.8\.7-test \(caddy v2\.\d+\.\d+[^)]*\)\n$`)
	for _, arg := range []string{"version", "--version", "-v"} {
		out, _, code := runBinary(t, nil, arg)
		if code != 0 || !want.MatchString(out) {
			t.Errorf("%s: exit %d, %q", arg, code, out)
		}
	}
}

// Caddy's verbs keep working; ours exit with their own codes.
func TestBinaryVerbs(t *testing.T) {
	out, _, code := runBinary(t, nil, "list-modules")
	if code != 0 || !strings.Contains(out, "agent_vault") || !strings.Contains(out, "http.handlers.reverse_proxy") {
		t.Errorf("list-modules: exit %d\n%s", code, out)
	}
	out, _, code = runBinary(t, nil, "credential", "--help")
	if code != 0 || !strings.Contains(out, "agent-vault credential [command]") {
		t.Errorf("credential --help: exit %d\n%s", code, out)
	}
	if help, _, _ := runBinary(t, nil, "help", "credential"); help != out {
		t.Errorf("help credential differs from credential --help:\n%s", help)
	}
	_, errOut, code := runBinary(t, []string{"AGENT_VAULT_TOKEN=x"}, "credential", "set", "NAME", "the-secret-value")
	if code != 2 || strings.Contains(errOut, "the-secret-value") || !strings.Contains(errOut, "never from the command line") {
		t.Errorf("credential set with a value: exit %d, %s", code, errOut)
	}
	_, errOut, code = runBinary(t, []string{"AGENT_VAULT_TOKEN=x", "AGENT_VAULT_ADDR=127.0.0.1:1"}, "agent", "list")
	if code != 2 || !strings.Contains(errOut, "has no scheme") {
		t.Errorf("agent list with a bad address: exit %d, %s", code, errOut)
	}
}

// Without a master password, `server` and `run` say so first, before
// any of Caddy's log lines, and fail.
func TestBinaryMasterPasswordFirst(t *testing.T) {
	cfg, err := filepath.Abs("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"server"}, {"run", "--config", cfg, "--adapter", "caddyfile"}} {
		_, errOut, code := runBinary(t, []string{"AGENT_VAULT_API_ADDR=127.0.0.1:1", "AGENT_VAULT_PROXY_ADDR=127.0.0.1:2"}, args...)
		if code == 0 {
			t.Errorf("%v started without a master password", args)
		}
		if !strings.HasPrefix(errOut, "Error: no master password:") || strings.Contains(errOut, `{"level"`) {
			t.Errorf("%v: stderr does not start with the master password message:\n%s", args, errOut)
		}
	}
}

// `environ` prints the environment with the secret variables' values
// hidden (those an --envfile sets too); `run --environ` is refused while
// one is set, before anything is printed or started.
func TestBinaryEnvironHidesSecrets(t *testing.T) {
	const pw, tok, vault = "master-pw-value-Q1", "admin-token-value-Q2", "vault-token-value-Q3"
	envfile := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(envfile, []byte("export VAULT_TOKEN="+vault+"\nPLAIN_FROM_FILE=shown\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"AGENT_VAULT_MASTER_PASSWORD=" + pw, "AGENT_VAULT_ADMIN_TOKEN=" + tok, "PLAIN_VAR=visible"}
	out, errOut, code := runBinary(t, env, "environ", "--envfile", envfile)
	if code != 0 {
		t.Fatalf("environ: exit %d\n%s", code, errOut)
	}
	for _, secret := range []string{pw, tok, vault} {
		if strings.Contains(out+errOut, secret) {
			t.Errorf("environ printed a secret value %q:\n%s", secret, out)
		}
	}
	for _, line := range []string{"AGENT_VAULT_MASTER_PASSWORD=[hidden]", "AGENT_VAULT_ADMIN_TOKEN=[hidden]", "VAULT_TOKEN=[hidden]", "PLAIN_VAR=visible", "PLAIN_FROM_FILE=shown"} {
		if !strings.Contains(out, "\n"+line+"\n") {
			t.Errorf("environ lacks %q:\n%s", line, out)
		}
	}

	cfg, err := filepath.Abs("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  []string
		args []string
	}{
		{env, []string{"run", "--environ", "--config", cfg, "--adapter", "caddyfile"}},
		{env, []string{"run", "-e", "--config", cfg, "--adapter", "caddyfile"}},
		{nil, []string{"run", "--environ", "--envfile", envfile, "--config", cfg, "--adapter", "caddyfile"}},
	} {
		out, errOut, code := runBinary(t, append([]string{"AGENT_VAULT_API_ADDR=127.0.0.1:1", "AGENT_VAULT_PROXY_ADDR=127.0.0.1:2"}, tc.env...), tc.args...)
		if code == 0 {
			t.Errorf("%v with secrets set: exit 0", tc.args)
		}
		for _, secret := range []string{pw, tok, vault} {
			if strings.Contains(out+errOut, secret) {
				t.Errorf("%v printed a secret value:\n%s\n%s", tc.args, out, errOut)
			}
		}
		if !strings.HasPrefix(errOut, "Error: run --environ would print the values of ") || !strings.Contains(errOut, "AGENT_VAULT_MASTER_PASSWORD_FILE") {
			t.Errorf("%v: stderr %q", tc.args, errOut)
		}
	}
}
