//go:build unix

package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// sentTokens lists the bearer token of every request s received.
func sentTokens(s *server) []string {
	var out []string
	for _, r := range s.requests() {
		out = append(out, strings.TrimPrefix(r.auth, "Bearer "))
	}
	return out
}

// --token-file > AGENT_VAULT_TOKEN > admin.token, as av-launch does; both
// set is worth a warning. Given empty, --token-file and --addr are usage
// errors, never the default.
func TestTokenPrecedenceAndEmptyFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tok")
	os.WriteFile(file, []byte("from-file-token\n"), 0o600)
	data := t.TempDir()
	os.WriteFile(filepath.Join(data, "admin.token"), []byte("admin-file-token\n"), 0o600)
	s := newServer(t)
	s.answer("GET /api/v1/agents", 200, apiwire.AgentList{Agents: []apiwire.Agent{}})

	r := call{env: map[string]string{"AGENT_VAULT_DATA_DIR": data}}.run(t, s, "agent", "list", "--token-file", file)
	r.want(t, ExitOK)
	r.stderrHas(t, "warning: both --token-file and AGENT_VAULT_TOKEN are set: using --token-file")
	r = call{env: map[string]string{"AGENT_VAULT_TOKEN": "", "AGENT_VAULT_DATA_DIR": data}}.run(t, s, "agent", "list", "--token-file", file)
	r.want(t, ExitOK)
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("a warning without AGENT_VAULT_TOKEN: %s", r.stderr)
	}
	call{env: map[string]string{"AGENT_VAULT_DATA_DIR": data}}.run(t, s, "agent", "list").want(t, ExitOK)
	call{env: map[string]string{"AGENT_VAULT_TOKEN": "", "AGENT_VAULT_DATA_DIR": data}}.run(t, s, "agent", "list").want(t, ExitOK)
	if got, want := sentTokens(s), []string{"from-file-token", "from-file-token", testToken, "admin-file-token"}; !reflect.DeepEqual(got, want) {
		t.Errorf("tokens sent %q, want %q", got, want)
	}

	s = newServer(t)
	for _, tc := range []struct {
		env  map[string]string
		args []string
		says string
	}{
		{map[string]string{"AGENT_VAULT_DATA_DIR": data}, []string{"--token-file", ""}, "agent-vault: --token-file is empty (an unset variable?)"},
		{map[string]string{"AGENT_VAULT_DATA_DIR": data}, []string{"--token-file="}, "--token-file is empty"},
		{nil, []string{"--addr", ""}, "agent-vault: --addr is empty (an unset variable?)"},
		{nil, []string{"--addr="}, "--addr is empty"},
	} {
		r := call{env: tc.env}.run(t, s, append([]string{"agent", "list"}, tc.args...)...)
		r.want(t, ExitUsage)
		r.stderrHas(t, tc.says)
	}
	s.none(t)
}

// The data dir's admin.token goes only to a server on loopback; plain
// http:// elsewhere needs AGENT_VAULT_INSECURE_HTTP=1. Both are refused
// before any I/O (these tests reach loopback only).
func TestRemoteServerNeedsAnExplicitToken(t *testing.T) {
	data := t.TempDir()
	os.WriteFile(filepath.Join(data, "admin.token"), []byte("admin-file-token\n"), 0o600)
	env := map[string]string{"AGENT_VAULT_TOKEN": "", "AGENT_VAULT_DATA_DIR": data}
	for _, tc := range []struct {
		addr, insecure, says string
	}{
		{"https://vault.example:14321", "", "no token: the management API https://vault.example:14321 is not on loopback, so the data dir's token file is not sent there by default: set AGENT_VAULT_TOKEN or pass --token-file"},
		{"http://vault.example:14321/x", "", `--addr "http://vault.example:14321" is plain http:// to a host that is not loopback: the token would cross the network in clear; use https://, or set AGENT_VAULT_INSECURE_HTTP=1 if that network is trusted`},
		{"http://vault.example:14321", "1", "is not on loopback, so the data dir's token file is not sent there"},
	} {
		e := map[string]string{"AGENT_VAULT_INSECURE_HTTP": tc.insecure}
		for k, v := range env {
			e[k] = v
		}
		r := call{env: e}.run(t, nil, "agent", "list", "--addr", tc.addr)
		r.want(t, ExitUsage)
		r.stderrHas(t, tc.says)
		r.nowhere(t, "admin-file-token")
	}
}

// A token file others may read gets a warning (as ssh gives); a FIFO is
// refused before it is opened, so it cannot hang the command.
func TestTokenFileChecks(t *testing.T) {
	s := newServer(t)
	s.answer("GET /api/v1/agents", 200, apiwire.AgentList{Agents: []apiwire.Agent{}})
	shared := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(shared, []byte("shared-token\n"), 0o644)
	os.Chmod(shared, 0o644)
	r := call{env: map[string]string{"AGENT_VAULT_TOKEN": ""}}.run(t, s, "agent", "list", "--token-file", shared)
	r.want(t, ExitOK)
	r.stderrHas(t, "warning: "+shared+" is accessible by others (mode 0644): chmod 600 it")

	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan result, 1)
	go func() { done <- call{}.run(t, s, "agent", "list", "--token-file", fifo) }()
	select {
	case r := <-done:
		r.want(t, ExitUsage)
		r.stderrHas(t, "the token file "+fifo+" is not readable (not a regular file)")
	case <-time.After(20 * time.Second):
		t.Fatal("a FIFO token file hung the command")
	}
}

// --services names are checked here, as the server would: exit 2, no
// request.
func TestAgentServicesAreNames(t *testing.T) {
	s := newServer(t)
	for _, tc := range []struct {
		list, says string
	}{
		{"git hub", `"git hub" (entry 1) is not a service name`},
		{"github,*", "'*' means every service and goes alone"},
		{"GitHub", `"GitHub" (entry 1) is not a service name`},
		{"github,-x", `"-x" (entry 2) is not a service name`},
	} {
		for _, verb := range [][]string{{"agent", "add", "ci"}, {"agent", "update", "ci"}} {
			r := run(t, s, append(verb, "--services", tc.list)...)
			r.want(t, ExitUsage)
			r.stderrHas(t, tc.says)
		}
	}
	s.none(t)
}

// --json escapes what a terminal would act on (C1 controls, bidi
// overrides) and stays the same JSON value.
func TestJSONEscapesTerminalControls(t *testing.T) {
	name := "evil\u009b31m\u202egnp.exe\u2066x\u2069\u200e\u007f"
	s := newServer(t)
	s.answer("GET /api/v1/agents", 200, apiwire.AgentList{Agents: []apiwire.Agent{{Name: name, Services: []string{"a\u200fb"}}}})
	r := run(t, s, "agent", "list", "--json")
	r.want(t, ExitOK)
	for _, raw := range []string{"\u009b", "\u202e", "\u2066", "\u2069", "\u200e", "\u200f", "\u007f"} {
		if strings.Contains(r.stdout, raw) {
			t.Errorf("--json holds %U raw: %q", []rune(raw)[0], r.stdout)
		}
	}
	for _, esc := range []string{`\u009b`, `\u202e`, `\u2066`, `\u2069`, `\u200e`, `\u200f`, `\u007f`} {
		if !strings.Contains(r.stdout, esc) {
			t.Errorf("--json lacks %s: %q", esc, r.stdout)
		}
	}
	var got apiwire.AgentList
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got.Agents) != 1 || got.Agents[0].Name != name || got.Agents[0].Services[0] != "a\u200fb" {
		t.Errorf("--json does not decode to the same value: %+v, %v", got, err)
	}
	if out := escapeJSON([]byte(`{"a":"plain é ü"}`)); string(out) != `{"a":"plain é ü"}` {
		t.Errorf("escapeJSON changed plain text: %s", out)
	}
}

// agent add/rotate --json to a file others may read warn as the plain
// output does: the token is in that JSON.
func TestAgentJSONToASharedFileWarns(t *testing.T) {
	const token = "avt_am9zb24tdG9rZW4tdG8tYS1zaGFyZWQtZmlsZQ"
	s := newServer(t)
	s.answer("POST /api/v1/agents", 201, apiwire.Agent{Name: "ci", Token: token, Services: []string{"*"}})
	s.answer("POST /api/v1/agents/{name}/rotate", 200, apiwire.Agent{Name: "ci", Token: token, Services: []string{"*"}})
	for _, args := range [][]string{{"agent", "add", "ci", "--services", "*", "--json"}, {"agent", "rotate", "ci", "--json"}} {
		path := filepath.Join(t.TempDir(), "out.json")
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, 0o644)
		var stderr strings.Builder
		code := Main(args, Env{
			Getenv: func(k string) string {
				return map[string]string{"AGENT_VAULT_ADDR": s.srv.URL, "AGENT_VAULT_TOKEN": testToken}[k]
			},
			Stdout: f, Stderr: &stderr,
		})
		f.Close()
		if code != ExitOK {
			t.Fatalf("%q: exit %d: %s", args, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "others may read (mode 0644)") {
			t.Errorf("%q: no warning: %q", args, stderr.String())
		}
		if data, _ := os.ReadFile(path); !strings.Contains(string(data), token) {
			t.Errorf("%q: the JSON lacks the token: %s", args, data)
		}
	}
}
