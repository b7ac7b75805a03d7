package cli

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
)

var (
	t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	t1 = t0.Add(time.Hour)
)

// A secret given on the command line is refused before anything is
// sent, and the refusal never repeats it.
func TestSecretsNeverFromArgv(t *testing.T) {
	const secret = "hunter2-correct-horse"
	for _, args := range [][]string{
		{"credential", "set", "GITHUB_TOKEN", secret},
		{"credential", "set", "GITHUB_TOKEN", "--value", secret},
		{"credential", "set", "GITHUB_TOKEN", "--value=" + secret},
		{"operator", "add", "alice", "--role", "admin", secret},
		{"operator", "add", "alice", "--role", "admin", "--password", secret},
		{"operator", "update", "alice", "--password=" + secret},
		{"credential", secret},
		{"credential", "GITHUB_TOKEN", secret},
		{"credential", "set", "--frob=" + secret, "X"},
		// A value where the name belongs, glued to it or alone.
		{"credential", "set", "GITHUB_TOKEN=" + secret},
		{"credential", "rm", "GITHUB_TOKEN=" + secret},
		// pflag's own errors would quote these.
		{"credential", "list", "-p" + secret},
		{"credential", "list", "-q" + secret},
		{"credential", "list", "--" + secret},
		{"audit", "list", "--limit", secret},
		{"agent", "list", "--json=" + secret},
		// A value where a credential's name belongs.
		{"service", "add", "gh", "--host", "api.github.com", "--auth", "bearer", "--token", secret},
		{"service", "add", "gh", "--host", "api.github.com", "--auth", "basic", "--password", "ghp-" + secret},
		{"service", "add", "gh", "--host", "api.github.com", "--auth", "api-key", "--key", "sk " + secret},
		// An address with a secret in its user, path or query.
		{"agent", "list", "--addr", "http://u:" + secret + "@127.0.0.1:1"},
		{"agent", "list", "--addr", "http://127.0.0.1:1/" + secret + "/?q=" + secret},
		{"agent", "list", "--addr", "u:" + secret + "@127.0.0.1:1/" + secret},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			s := newServer(t)
			r := call{stdin: "from-stdin\n"}.run(t, s, args...)
			r.want(t, ExitUsage)
			r.nowhere(t, secret)
			s.none(t)
		})
	}
	// The refusal says what to do instead.
	r := run(t, newServer(t), "credential", "set", "X", secret)
	r.stderrHas(t, "stdin", "never from the command line")
	r = run(t, newServer(t), "credential", "set", "X="+secret)
	r.stderrHas(t, "invalid credential name (it contains '='; the value is read from stdin, never the command line)")
	r = run(t, newServer(t), "service", "add", "gh", "--host", "api.github.com", "--auth", "bearer", "--token", secret)
	r.stderrHas(t, "--token is not a credential name", "credential set NAME")
	r = run(t, newServer(t), "credential", "list", "-p"+secret)
	r.stderrHas(t, "unknown shorthand flag -p")
	r = run(t, newServer(t), "audit", "list", "--limit", secret)
	r.stderrHas(t, "invalid value for --limit (expected int)")
}

func TestCredentialSetReadsStdin(t *testing.T) {
	for _, tc := range []struct{ stdin, want string }{
		{"s3cret\n", "s3cret"},
		{"s3cret\r\n", "s3cret"},
		{"s3cret", "s3cret"},
		{"line one\nline two\n\n", "line one\nline two\n"},
		{"  spaced  \n", "  spaced  "},
	} {
		s := newServer(t)
		s.answer("PUT /api/v1/credentials/{name}", 200, apiwire.Credential{Name: "API_KEY", Store: "builtin", Version: "3", UpdatedAt: t0})
		r := call{stdin: tc.stdin}.run(t, s, "credential", "set", "API_KEY")
		r.want(t, ExitOK)
		req := s.only(t)
		if req.method != "PUT" || req.path != "/api/v1/credentials/API_KEY" || req.auth != "Bearer "+testToken {
			t.Errorf("request = %+v", req)
		}
		if got := body(t, req)["value"]; got != tc.want {
			t.Errorf("stdin %q stored %q, want %q", tc.stdin, got, tc.want)
		}
		if r.stdout != "" {
			t.Errorf("stdout = %q, want nothing (notes go to stderr)", r.stdout)
		}
		r.stderrHas(t, "credential API_KEY stored (store builtin, version 3)")
		r.nowhere(t, tc.want)
	}
}

func TestCredentialSetRefusesNoValue(t *testing.T) {
	for _, stdin := range []string{"", "\n", "\r\n"} {
		s := newServer(t)
		r := call{stdin: stdin}.run(t, s, "credential", "set", "API_KEY")
		r.want(t, ExitUsage)
		r.stderrHas(t, "no value of API_KEY on stdin")
		s.none(t)
	}
	// A name the server would refuse: refused before the value is read.
	s := newServer(t)
	term := &fakeTerminal{answers: []string{"v"}}
	r := call{terminal: term}.run(t, s, "credential", "set", "bad-name")
	r.want(t, ExitUsage)
	r.stderrHas(t, "invalid credential name: use letters, digits and '_'")
	if strings.Contains(r.stderr, "bad-name") {
		t.Errorf("the refused name is repeated: %s", r.stderr)
	}
	if len(term.prompts) != 0 {
		t.Error("asked for the value of an invalid name")
	}
	s.none(t)
	s = newServer(t)
	r = call{stdin: "\xff\xfe\n"}.run(t, s, "credential", "set", "API_KEY")
	r.want(t, ExitUsage)
	r.stderrHas(t, "not valid UTF-8")
	s.none(t)
	s = newServer(t)
	r = call{stdin: strings.Repeat("x", maxSecretBytes+1)}.run(t, s, "credential", "set", "API_KEY")
	r.want(t, ExitUsage)
	s.none(t)
}

func TestCredentialSetPrompts(t *testing.T) {
	s := newServer(t)
	s.answer("PUT /api/v1/credentials/{name}", 201, apiwire.Credential{Name: "API_KEY", Store: "builtin", Version: "1"})
	term := &fakeTerminal{answers: []string{"typed-secret"}}
	r := call{terminal: term, stdin: "not this"}.run(t, s, "credential", "set", "API_KEY")
	r.want(t, ExitOK)
	if got := body(t, s.only(t))["value"]; got != "typed-secret" {
		t.Errorf("stored %q, want the typed value", got)
	}
	if len(term.prompts) != 1 || !strings.Contains(term.prompts[0], "API_KEY") {
		t.Errorf("prompts = %q", term.prompts)
	}
	// Nothing typed: nothing stored.
	s = newServer(t)
	r = call{terminal: &fakeTerminal{answers: []string{""}}}.run(t, s, "credential", "set", "API_KEY")
	r.want(t, ExitUsage)
	s.none(t)
}

func TestCredentialListAndRm(t *testing.T) {
	s := newServer(t)
	creds := []apiwire.Credential{
		{Name: "A_TOKEN", Store: "builtin", Version: "3", UpdatedAt: t0},
		{Name: "B_KEY", Store: "vault", Version: "hmac:ab", UpdatedAt: t1, Source: "secret/agents#b", SyncedAt: &t1},
	}
	s.answer("GET /api/v1/credentials", 200, apiwire.CredentialList{Credentials: creds})
	s.answer("DELETE /api/v1/credentials/{name}", 204, nil)

	r := run(t, s, "credential", "list")
	r.want(t, ExitOK)
	want := "NAME     STORE    VERSION  UPDATED               SOURCE\n" +
		"A_TOKEN  builtin  3        2030-01-02T03:04:05Z  -\n" +
		"B_KEY    vault    hmac:ab  2030-01-02T04:04:05Z  secret/agents#b\n"
	r.stdoutIs(t, want)

	r = run(t, s, "credential", "list", "--json")
	r.want(t, ExitOK)
	var list apiwire.CredentialList
	decodeStrict(t, r.stdout, &list)
	if !reflect.DeepEqual(list.Credentials, creds) {
		t.Errorf("--json = %+v, want %+v", list.Credentials, creds)
	}

	r = run(t, s, "credential", "rm", "A_TOKEN")
	r.want(t, ExitOK)
	r.stderrHas(t, "credential A_TOKEN deleted")
	if last := s.requests()[2]; last.method != "DELETE" || last.path != "/api/v1/credentials/A_TOKEN" {
		t.Errorf("rm sent %+v", last)
	}
	// --quiet: nothing at all.
	if r = run(t, s, "--quiet", "credential", "rm", "A_TOKEN"); r.stderr != "" || r.stdout != "" {
		t.Errorf("--quiet printed %q / %q", r.stdout, r.stderr)
	}
}

// Server text in a table cannot drive the terminal or break the columns.
func TestTableCellsArePrintable(t *testing.T) {
	s := newServer(t)
	s.answer("GET /api/v1/credentials", 200, apiwire.CredentialList{Credentials: []apiwire.Credential{
		{Name: "EVIL\x1b[2J\x1b]0;pwned\x07", Store: "a\tb\nc", Version: "1"},
	}})
	r := run(t, s, "credential", "list")
	r.want(t, ExitOK)
	if strings.ContainsAny(r.stdout, "\x1b\x07\t") || strings.Count(r.stdout, "\n") != 2 {
		t.Errorf("control characters reached the table: %q", r.stdout)
	}
	// An empty list says so, on stderr.
	s = newServer(t)
	s.answer("GET /api/v1/agents", 200, apiwire.AgentList{Agents: []apiwire.Agent{}})
	r = run(t, s, "agent", "list")
	r.want(t, ExitOK)
	if r.stdout != "" || !strings.Contains(r.stderr, "no agents") {
		t.Errorf("empty list: %q / %q", r.stdout, r.stderr)
	}
}

// Every list's --json is the apiwire value the server sent, unchanged.
func TestListJSONIsTheWireType(t *testing.T) {
	agents := apiwire.AgentList{Agents: []apiwire.Agent{{Name: "ci", Services: []string{"github"}, MaxSessionTTL: "1h0m0s", CreatedAt: t0, UpdatedAt: t1}}}
	sessions := apiwire.SessionList{Sessions: []apiwire.SessionInfo{{ID: "s1", Services: []string{"github"}, CreatedAt: t0, ExpiresAt: t1,
		Status: apiwire.SessionActive, Requests: 4, LastUsed: &t1, Agent: "ci", LeaseExpiresAt: &t1}}}
	reqs := apiwire.AccessRequestList{Requests: []apiwire.AccessRequest{{ID: "req_1", Agent: "ci", Host: "api.stripe.com", Reason: "billing",
		Status: apiwire.RequestDenied, CreatedAt: t0, DecidedAt: &t1, DecidedBy: "alice", DecisionReason: "no"}}}
	ops := apiwire.OperatorList{Operators: []apiwire.Operator{{Name: "alice", Role: "owner", CreatedAt: t0, UpdatedAt: t1}}}
	svcs := apiwire.ServiceList{Services: []apiwire.Service{{Name: "github", Host: "api.github.com", Auth: services.Auth{Type: "bearer", Token: "GITHUB_TOKEN"}}}}
	audit := apiwire.AuditList{Entries: []apiwire.AuditEntry{{ID: "a1", Time: t0, Actor: "alice", ActorKind: "operator", Action: "agent.create",
		Target: "ci", Client: "127.0.0.1", Detail: "services github"}}, NextBefore: "123_a1"}
	for _, tc := range []struct {
		args    []string
		pattern string
		sent    any
		into    any
	}{
		{[]string{"agent", "list"}, "GET /api/v1/agents", agents, &apiwire.AgentList{}},
		{[]string{"session", "list"}, "GET /api/v1/sessions", sessions, &apiwire.SessionList{}},
		{[]string{"request", "list"}, "GET /api/v1/requests", reqs, &apiwire.AccessRequestList{}},
		{[]string{"operator", "list"}, "GET /api/v1/operators", ops, &apiwire.OperatorList{}},
		{[]string{"service", "list"}, "GET /api/v1/services", svcs, &apiwire.ServiceList{}},
		{[]string{"audit", "list"}, "GET /api/v1/audit", audit, &apiwire.AuditList{}},
	} {
		t.Run(tc.args[0], func(t *testing.T) {
			s := newServer(t)
			s.answer(tc.pattern, 200, tc.sent)
			r := run(t, s, append(tc.args, "--json")...)
			r.want(t, ExitOK)
			decodeStrict(t, r.stdout, tc.into)
			if got := reflect.ValueOf(tc.into).Elem().Interface(); !reflect.DeepEqual(got, tc.sent) {
				t.Errorf("--json = %+v\nwant %+v", got, tc.sent)
			}
			// And the table shows the rows.
			r = run(t, s, tc.args...)
			r.want(t, ExitOK)
			if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 {
				t.Errorf("table has %d lines, want a header and a row:\n%s", len(lines), r.stdout)
			}
		})
	}
}

func TestTables(t *testing.T) {
	s := newServer(t)
	s.answer("GET /api/v1/sessions", 200, apiwire.SessionList{Sessions: []apiwire.SessionInfo{
		{ID: "s1", Services: []string{"github", "npm"}, CreatedAt: t0, ExpiresAt: t1, Status: "active", Requests: 4, Agent: "ci"},
	}})
	s.answer("GET /api/v1/requests", 200, apiwire.AccessRequestList{Requests: []apiwire.AccessRequest{
		{ID: "req_1", Agent: "ci", Service: "stripe", Status: "pending", CreatedAt: t0},
		{ID: "req_2", Agent: "ci", Host: "api.x.com", Status: "denied", CreatedAt: t0, DecidedAt: &t1, DecidedBy: "alice", DecisionReason: "not now"},
	}})
	r := run(t, s, "session", "list")
	r.want(t, ExitOK)
	want := "ID  AGENT  SERVICES    STATUS  CREATED               EXPIRES               LEASE UNTIL  REQUESTS  LAST USED\n" +
		"s1  ci     github,npm  active  2030-01-02T03:04:05Z  2030-01-02T04:04:05Z  -            4         -\n"
	r.stdoutIs(t, want)
	r = run(t, s, "request", "list")
	r.want(t, ExitOK)
	want = "ID     AGENT  WANTS           REASON  STATUS   CREATED               DECIDED\n" +
		"req_1  ci     service stripe  -       pending  2030-01-02T03:04:05Z  -\n" +
		"req_2  ci     host api.x.com  -       denied   2030-01-02T03:04:05Z  2030-01-02T04:04:05Z by alice: not now\n"
	r.stdoutIs(t, want)
}

// The server's refusal is printed in its own words with the status, and
// exits 1.
func TestServerRefusalExitsOne(t *testing.T) {
	const words = `role viewer may not PUT /api/v1/credentials/X: needs admin ("quoted" & <kept>)`
	s := newServer(t)
	s.answer("PUT /api/v1/credentials/{name}", 403, apiwire.Error{Error: words})
	r := call{stdin: "v"}.run(t, s, "credential", "set", "X")
	r.want(t, ExitFailed)
	r.stderrHas(t, "agent-vault: "+words+" (HTTP 403)")

	// A 401 says where the token came from.
	s = newServer(t)
	s.answer("GET /api/v1/agents", 401, apiwire.Error{Error: "unknown token"})
	r = run(t, s, "agent", "list")
	r.want(t, ExitFailed)
	r.stderrHas(t, "unknown token (HTTP 401)", "AGENT_VAULT_TOKEN")

	// A server that echoes the token has it redacted, the words around kept.
	s = newServer(t)
	s.answer("GET /api/v1/agents", 400, apiwire.Error{Error: "bad token " + testToken + " for tokens"})
	r = run(t, s, "agent", "list")
	r.want(t, ExitFailed)
	r.nowhere(t, testToken)
	r.stderrHas(t, "bad token [redacted] for tokens (HTTP 400)")
}

func TestServerNotReachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close()
	r := call{env: map[string]string{"AGENT_VAULT_ADDR": addr}}.run(t, nil, "agent", "list")
	r.want(t, ExitFailed)
	r.stderrHas(t, "not reachable", "make run", "agent-vault server")
}

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		says string
	}{
		{"no scheme", map[string]string{"AGENT_VAULT_ADDR": "127.0.0.1:14321"}, []string{"agent", "list"}, "AGENT_VAULT_ADDR \"127.0.0.1:14321\" has no scheme"},
		{"addr flag no scheme", nil, []string{"agent", "list", "--addr", "localhost:1"}, "--addr \"localhost:1\" has no scheme"},
		{"unknown flag", nil, []string{"agent", "list", "--frob"}, "unknown flag: --frob"},
		{"missing arg", nil, []string{"agent", "rm"}, "agent rm: missing NAME"},
		{"extra arg", nil, []string{"agent", "rm", "a", "b"}, "agent rm: too many arguments"},
		{"no subcommand", nil, []string{"agent"}, "agent needs a subcommand"},
		{"unknown subcommand", nil, []string{"agent", "frob"}, `agent has no subcommand "frob"`},
		{"empty services", nil, []string{"agent", "add", "ci", "--services", ""}, "--services is empty"},
		{"blank service", nil, []string{"agent", "add", "ci", "--services", "a,,b"}, "empty entry"},
		{"no services", nil, []string{"agent", "add", "ci"}, "needs --services"},
		{"bad ttl", nil, []string{"agent", "add", "ci", "--services", "a", "--max-ttl", "soon"}, "not a positive duration"},
		{"update nothing", nil, []string{"agent", "update", "ci"}, "needs --services or --max-ttl"},
		{"bad status", nil, []string{"request", "list", "--status", "maybe"}, "want pending, approved or denied"},
		{"bad role", nil, []string{"operator", "add", "alice", "--role", "god"}, `unknown role "god": use viewer, admin or owner`},
		{"bad operator name", nil, []string{"operator", "add", "Alice!", "--role", "admin"}, `invalid operator name "Alice!"`},
		{"bad agent name", nil, []string{"agent", "add", "CI Bot", "--services", "*"}, `invalid agent name "CI Bot"`},
		{"no role", nil, []string{"operator", "add", "alice"}, "needs --role"},
		{"bad limit", nil, []string{"audit", "list", "--limit", "5000"}, "want 1 to 1000"},
		{"service no host", nil, []string{"service", "add", "x", "--auth", "bearer", "--token", "T"}, "needs --host and --auth"},
		{"service invalid", nil, []string{"service", "add", "x", "--host", "api.x.com", "--auth", "bearer"}, `requires field "token"`},
		{"service bad name", nil, []string{"service", "add", "X!", "--host", "api.x.com", "--auth", "passthrough"}, "invalid service name"},
		{"service file and flags", nil, []string{"service", "add", "x", "--file", "f.json", "--host", "h"}, "--host cannot go with it"},
		{"custom header", nil, []string{"service", "add", "x", "--host", "h.com", "--auth", "custom", "--custom-header", "novalue"}, "'Name: template'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t)
			c := call{env: tc.env}
			r := c.run(t, s, tc.args...)
			r.want(t, ExitUsage)
			r.stderrHas(t, tc.says)
			s.none(t)
		})
	}
}

func TestTokenSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tok")
	if err := os.WriteFile(file, []byte("  from-file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newServer(t)
	s.answer("GET /api/v1/agents", 200, apiwire.AgentList{Agents: []apiwire.Agent{}})

	// --token-file wins over AGENT_VAULT_TOKEN.
	run(t, s, "agent", "list", "--token-file", file).want(t, ExitOK)
	// AGENT_VAULT_TOKEN without the flag.
	run(t, s, "agent", "list").want(t, ExitOK)
	// Neither: the data dir's admin.token.
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "admin.token"), []byte("admin-file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	call{env: map[string]string{"AGENT_VAULT_TOKEN": "", "AGENT_VAULT_DATA_DIR": data}}.run(t, s, "agent", "list").want(t, ExitOK)
	var auths []string
	for _, r := range s.requests() {
		auths = append(auths, r.auth)
	}
	if want := []string{"Bearer from-file-token", "Bearer " + testToken, "Bearer admin-file-token"}; !reflect.DeepEqual(auths, want) {
		t.Errorf("tokens sent %q, want %q", auths, want)
	}

	// No token anywhere: a usage error that says where it looked.
	s = newServer(t)
	r := call{env: map[string]string{"AGENT_VAULT_TOKEN": "", "AGENT_VAULT_DATA_DIR": t.TempDir()}}.run(t, s, "agent", "list")
	r.want(t, ExitUsage)
	r.stderrHas(t, "AGENT_VAULT_TOKEN is unset", "admin.token does not exist")
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	r = run(t, s, "agent", "list", "--token-file", empty)
	r.want(t, ExitUsage)
	r.stderrHas(t, "is empty")
	r = run(t, s, "agent", "list", "--token-file", filepath.Join(dir, "missing"))
	r.want(t, ExitUsage)
	r.stderrHas(t, "the token file "+filepath.Join(dir, "missing")+" is not readable (no such file or directory)")
	s.none(t)
}

func TestAgentAddPrintsTheTokenAlone(t *testing.T) {
	const token = "avt_bmV3LXRva2VuLWZvci1jaS1ib3QtMDEyMzQ1Njc4OQ"
	created := apiwire.Agent{Name: "ci", Token: token, Services: []string{"github", "npm"}, MaxSessionTTL: "1h0m0s", CreatedAt: t0, UpdatedAt: t0}
	s := newServer(t)
	s.answer("POST /api/v1/agents", 201, created)

	r := run(t, s, "agent", "add", "ci", "--services", "github, npm", "--max-ttl", "1h")
	r.want(t, ExitOK)
	if r.stdout != token+"\n" {
		t.Errorf("stdout = %q, want the token alone on its line", r.stdout)
	}
	r.stderrHas(t, "agent ci created (services github,npm, max session ttl 1h0m0s)", "shown this once")
	if b := body(t, s.only(t)); !reflect.DeepEqual(b, map[string]any{"name": "ci", "services": []any{"github", "npm"}, "max_session_ttl": "1h"}) {
		t.Errorf("sent %v", b)
	}

	// --quiet: the token and nothing else.
	r = run(t, s, "agent", "add", "ci", "--services", "*", "--quiet")
	r.want(t, ExitOK)
	if r.stdout != token+"\n" || r.stderr != "" {
		t.Errorf("--quiet printed %q / %q", r.stdout, r.stderr)
	}

	// --json: the server's answer, token included.
	r = run(t, s, "agent", "add", "ci", "--services", "*", "--json")
	r.want(t, ExitOK)
	var got apiwire.Agent
	decodeStrict(t, r.stdout, &got)
	if !reflect.DeepEqual(got, created) {
		t.Errorf("--json = %+v", got)
	}

	// --out: a 0600 file, nothing on stdout.
	out := filepath.Join(t.TempDir(), "ci.token")
	r = run(t, s, "agent", "add", "ci", "--services", "*", "--out", out)
	r.want(t, ExitOK)
	data, err := os.ReadFile(out)
	if err != nil || string(data) != token+"\n" {
		t.Errorf("--out file = %q, %v", data, err)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("--out mode %v, want 0600", fi.Mode().Perm())
	}
	r.nowhere(t, token)
}

func TestAgentRotateToAFile(t *testing.T) {
	const token = "avt_cm90YXRlZC10b2tlbi1mb3ItbG9jYWwtMDEyMzQ1Njc"
	s := newServer(t)
	s.answer("POST /api/v1/agents/{name}/rotate", 200, apiwire.Agent{Name: "local", Token: token, Services: []string{"*"}})

	// `agent rotate local > agent.token`: stdout is the file.
	path := filepath.Join(t.TempDir(), "agent.token")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	code := Main([]string{"agent", "rotate", "local"}, Env{
		Getenv: func(k string) string {
			return map[string]string{"AGENT_VAULT_ADDR": s.srv.URL, "AGENT_VAULT_TOKEN": testToken}[k]
		},
		Stdout: f, Stderr: &stderr,
	})
	f.Close()
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if data, _ := os.ReadFile(path); string(data) != token+"\n" {
		t.Errorf("the file holds %q, want just the token", data)
	}
	if req := s.only(t); req.method != "POST" || req.path != "/api/v1/agents/local/rotate" {
		t.Errorf("sent %+v", req)
	}
	// The file was created 0644: say so.
	if !strings.Contains(stderr.String(), "others may read (mode 0644)") || !strings.Contains(stderr.String(), "old one no longer works") {
		t.Errorf("stderr = %s", stderr.String())
	}

	// An answer without a usable token is an error, never a blank line.
	s = newServer(t)
	s.answer("POST /api/v1/agents/{name}/rotate", 200, apiwire.Agent{Name: "local", Token: "bad token\x1b"})
	r := run(t, s, "agent", "rotate", "local")
	r.want(t, ExitFailed)
	if r.stdout != "" {
		t.Errorf("stdout = %q", r.stdout)
	}
}

func TestAgentUpdateAndRm(t *testing.T) {
	s := newServer(t)
	s.answer("PATCH /api/v1/agents/{name}", 200, apiwire.Agent{Name: "ci", Services: []string{"github"}, MaxSessionTTL: "30m0s", RevokedSessions: []string{"s1", "s2"}})
	s.answer("DELETE /api/v1/agents/{name}", 204, nil)
	r := run(t, s, "agent", "update", "ci", "--services", "github", "--max-ttl", "30m")
	r.want(t, ExitOK)
	r.stderrHas(t, "agent ci updated", "sessions ended, no longer within its limits: s1,s2")
	if b := body(t, s.requests()[0]); !reflect.DeepEqual(b, map[string]any{"services": []any{"github"}, "max_session_ttl": "30m"}) {
		t.Errorf("PATCH body %v", b)
	}
	// Only what is given is sent.
	run(t, s, "agent", "update", "ci", "--max-ttl", "2h").want(t, ExitOK)
	if b := body(t, s.requests()[1]); !reflect.DeepEqual(b, map[string]any{"max_session_ttl": "2h"}) {
		t.Errorf("PATCH body %v", b)
	}
	r = run(t, s, "agent", "rm", "ci")
	r.want(t, ExitOK)
	r.stderrHas(t, "agent ci deleted")
	if req := s.requests()[2]; req.method != "DELETE" || req.path != "/api/v1/agents/ci" {
		t.Errorf("sent %+v", req)
	}
}

func TestServiceAdd(t *testing.T) {
	s := newServer(t)
	s.mux.HandleFunc("PUT /api/v1/services/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		var svc apiwire.Service
		_ = json.NewDecoder(bytes.NewReader(s.requests()[len(s.requests())-1].body)).Decode(&svc)
		_ = json.NewEncoder(w).Encode(apiwire.ServicePutResponse{Service: svc, Warnings: []string{"credential GITHUB_TOKEN is not in any store yet"}})
	})
	r := run(t, s, "service", "add", "github", "--host", "api.github.com", "--auth", "bearer", "--token", "GITHUB_TOKEN")
	r.want(t, ExitOK)
	r.stderrHas(t, "warning: credential GITHUB_TOKEN is not in any store yet", "service github stored: api.github.com, auth bearer")
	want := map[string]any{"name": "github", "host": "api.github.com", "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}}
	if b := body(t, s.requests()[0]); !reflect.DeepEqual(b, want) {
		t.Errorf("PUT body %v", b)
	}

	// Every auth type's flags.
	run(t, s, "service", "add", "openai", "--host", "api.openai.com", "--auth", "api-key", "--key", "OPENAI_KEY",
		"--header", "Authorization", "--prefix", "Bearer ", "--allow-upgrade", "h2c").want(t, ExitOK)
	want = map[string]any{"name": "openai", "host": "api.openai.com", "allow_upgrades": []any{"h2c"},
		"auth": map[string]any{"type": "api-key", "key": "OPENAI_KEY", "header": "Authorization", "prefix": "Bearer "}}
	if b := body(t, s.requests()[1]); !reflect.DeepEqual(b, want) {
		t.Errorf("PUT body %v", b)
	}
	run(t, s, "service", "add", "x", "--host", "x.com", "--auth", "custom", "--custom-header", "X-Key: {{ K }}",
		"--custom-header", "X-Other={{ O }}-suffix").want(t, ExitOK)
	if a := body(t, s.requests()[2])["auth"]; !reflect.DeepEqual(a, map[string]any{"type": "custom",
		"headers": map[string]any{"X-Key": "{{ K }}", "X-Other": "{{ O }}-suffix"}}) {
		t.Errorf("custom auth %v", a)
	}
	run(t, s, "service", "add", "q", "--host", "q.com", "--auth", "query", "--key", "K", "--param", "api_key").want(t, ExitOK)
	run(t, s, "service", "add", "b", "--host", "b.com", "--auth", "basic", "--username", "me", "--password", "B_PW", "--allow-cleartext").want(t, ExitOK)
	if b := body(t, s.requests()[4]); b["allow_cleartext"] != true || !reflect.DeepEqual(b["auth"], map[string]any{"type": "basic", "username": "me", "password": "B_PW"}) {
		t.Errorf("basic body %v", b)
	}

	// --file, with and without NAME.
	file := filepath.Join(t.TempDir(), "svc.json")
	os.WriteFile(file, []byte(`{"name":"internal","host":"*.corp.example","auth":{"type":"passthrough"}}`), 0o600)
	run(t, s, "service", "add", "--file", file).want(t, ExitOK)
	if req := s.requests()[5]; req.path != "/api/v1/services/internal" {
		t.Errorf("--file PUT %s", req.path)
	}
	r = call{stdin: `{"host":"h.example","auth":{"type":"passthrough"}}`}.run(t, s, "service", "add", "named", "--file", "-")
	r.want(t, ExitOK)
	if req := s.requests()[6]; req.path != "/api/v1/services/named" || body(t, req)["name"] != "named" {
		t.Errorf("--file - PUT %s %s", req.path, req.body)
	}
	// --no-intercept: a passthrough relayed unread.
	run(t, s, "service", "add", "npm", "--host", "registry.npmjs.org", "--auth", "passthrough", "--no-intercept").want(t, ExitOK)
	if b := body(t, s.requests()[7]); b["intercept"] != false {
		t.Errorf("--no-intercept body %v", b)
	}

	// A bad file is refused before anything is sent.
	n := len(s.requests())
	r = run(t, s, "service", "add", "gh", "--host", "api.github.com", "--auth", "bearer", "--token", "GITHUB_TOKEN", "--no-intercept")
	r.want(t, ExitUsage)
	r.stderrHas(t, `only auth type "passthrough" may use it`)
	for content, says := range map[string]string{
		`{"name":"a","host":"h.com","auth":{"type":"passthrough"},"hots":"x"}`: `unknown field "hots"`,
		`{"name":"a",`: "the JSON ends early",
		`{"name":"a","host":"h.com","auth":{"type":"bearer"}}`:          `requires field "token"`,
		`{"name":"other","host":"h.com","auth":{"type":"passthrough"}}`: `names service "other" but the command line names "a"`,
		`{"host":"h.com","auth":{"type":"passthrough"}} {}`:             "more than one JSON value",
	} {
		os.WriteFile(file, []byte(content), 0o600)
		r := run(t, s, "service", "add", "a", "--file", file)
		r.want(t, ExitUsage)
		r.stderrHas(t, says)
	}
	os.WriteFile(file, []byte(`{"host":"h.com","auth":{"type":"passthrough"}}`), 0o600)
	run(t, s, "service", "add", "--file", file).stderrHas(t, `has no "name"`)
	if len(s.requests()) != n {
		t.Error("a refused definition was sent")
	}
}

func TestServiceListAndRm(t *testing.T) {
	s := newServer(t)
	s.answer("GET /api/v1/services", 200, apiwire.ServiceList{Services: []apiwire.Service{
		{Name: "github", Host: "api.github.com", Auth: services.Auth{Type: "bearer", Token: "GITHUB_TOKEN"}},
		{Name: "b", Host: "b.com", Auth: services.Auth{Type: "basic", Username: "{{ U }}", Password: "P"}},
	}})
	s.answer("DELETE /api/v1/services/{name}", 404, apiwire.Error{Error: "no service named gone"})
	r := run(t, s, "service", "list")
	r.want(t, ExitOK)
	want := "NAME    HOST            AUTH    CREDENTIALS\n" +
		"github  api.github.com  bearer  GITHUB_TOKEN\n" +
		"b       b.com           basic   P,U\n"
	r.stdoutIs(t, want)
	r = run(t, s, "service", "rm", "gone")
	r.want(t, ExitFailed)
	r.stderrHas(t, "no service named gone (HTTP 404)")
}

func TestSessionRevoke(t *testing.T) {
	s := newServer(t)
	s.answer("DELETE /api/v1/sessions/{id}", 204, nil)
	r := run(t, s, "session", "revoke", "s_123")
	r.want(t, ExitOK)
	r.stderrHas(t, "session s_123 revoked")
	if req := s.only(t); req.method != "DELETE" || req.path != "/api/v1/sessions/s_123" {
		t.Errorf("sent %+v", req)
	}
	// An id that cannot be a path segment is refused before I/O.
	s = newServer(t)
	run(t, s, "session", "revoke", "../agents").want(t, ExitFailed)
	s.none(t)
}

func TestRequestApproveDeny(t *testing.T) {
	s := newServer(t)
	s.answer("GET /api/v1/requests", 200, apiwire.AccessRequestList{Requests: []apiwire.AccessRequest{}})
	s.answer("POST /api/v1/requests/{id}/approve", 200, apiwire.AccessRequest{ID: "req_1", Agent: "ci", Host: "api.stripe.com", Status: "approved"})
	s.answer("POST /api/v1/requests/{id}/deny", 200, apiwire.AccessRequest{ID: "req_2", Agent: "ci", Service: "npm", Status: "denied"})

	r := run(t, s, "request", "list", "--status", "pending")
	r.want(t, ExitOK)
	r.stderrHas(t, "no pending access requests")
	if q := s.requests()[0].query; q != "status=pending" {
		t.Errorf("query %q", q)
	}

	file := filepath.Join(t.TempDir(), "stripe.json")
	os.WriteFile(file, []byte(`{"name":"stripe","host":"api.stripe.com","auth":{"type":"bearer","token":"STRIPE_KEY"}}`), 0o600)
	r = run(t, s, "request", "approve", "req_1", "--service-file", file)
	r.want(t, ExitOK)
	r.stderrHas(t, "request req_1 approved: agent ci may use the new service stripe (host api.stripe.com)")
	if b := body(t, s.requests()[1]); !reflect.DeepEqual(b, map[string]any{"service": map[string]any{"name": "stripe", "host": "api.stripe.com",
		"auth": map[string]any{"type": "bearer", "token": "STRIPE_KEY"}}}) {
		t.Errorf("approve body %v", b)
	}
	// Without a file: an empty body.
	run(t, s, "request", "approve", "req_1").want(t, ExitOK)
	if b := body(t, s.requests()[2]); len(b) != 0 {
		t.Errorf("approve body %v, want {}", b)
	}
	r = run(t, s, "request", "deny", "req_2", "--reason", "use the mirror", "--json")
	r.want(t, ExitOK)
	var q apiwire.AccessRequest
	decodeStrict(t, r.stdout, &q)
	if q.ID != "req_2" || q.Status != "denied" {
		t.Errorf("--json = %+v", q)
	}
	if b := body(t, s.requests()[3]); b["reason"] != "use the mirror" {
		t.Errorf("deny body %v", b)
	}
	// An invalid service file: nothing sent.
	n := len(s.requests())
	os.WriteFile(file, []byte(`{"name":"stripe","host":"api.stripe.com","auth":{"type":"bearer"}}`), 0o600)
	run(t, s, "request", "approve", "req_1", "--service-file", file).want(t, ExitUsage)
	if len(s.requests()) != n {
		t.Error("an invalid service was sent")
	}
}

func TestOperatorAdd(t *testing.T) {
	const pw = "correct horse battery staple"
	s := newServer(t)
	s.answer("POST /api/v1/operators", 201, apiwire.Operator{Name: "alice", Role: "admin", CreatedAt: t0, UpdatedAt: t0})
	r := call{stdin: pw + "\n"}.run(t, s, "operator", "add", "alice", "--role", "admin")
	r.want(t, ExitOK)
	r.stderrHas(t, "operator alice created with role admin")
	r.nowhere(t, pw)
	if b := body(t, s.only(t)); !reflect.DeepEqual(b, map[string]any{"name": "alice", "password": pw, "role": "admin"}) {
		t.Errorf("sent %v", b)
	}

	// At a terminal the password is asked twice; a mismatch sends nothing.
	term := &fakeTerminal{answers: []string{pw, pw}}
	call{terminal: term}.run(t, s, "operator", "add", "alice", "--role", "admin").want(t, ExitOK)
	if len(term.prompts) != 2 {
		t.Errorf("prompts %q", term.prompts)
	}
	s = newServer(t)
	r = call{terminal: &fakeTerminal{answers: []string{pw, pw + "x"}}}.run(t, s, "operator", "add", "alice", "--role", "admin")
	r.want(t, ExitUsage)
	r.stderrHas(t, "differ")
	s.none(t)
	// A password the server would refuse is refused here, unrepeated.
	r = call{stdin: "short pw\n"}.run(t, s, "operator", "add", "alice", "--role", "admin")
	r.want(t, ExitUsage)
	r.stderrHas(t, "shorter than 12 characters")
	r.nowhere(t, "short pw")
	s.none(t)
}

func TestOperatorUpdateAndRm(t *testing.T) {
	const pw = "a new long password"
	s := newServer(t)
	s.answer("PATCH /api/v1/operators/{name}", 200, apiwire.Operator{Name: "alice", Role: "viewer"})
	s.answer("DELETE /api/v1/operators/{name}", 204, nil)
	run(t, s, "operator", "update", "alice", "--role", "viewer").want(t, ExitOK)
	if b := body(t, s.requests()[0]); !reflect.DeepEqual(b, map[string]any{"role": "viewer"}) {
		t.Errorf("sent %v", b)
	}
	r := call{stdin: pw}.run(t, s, "operator", "update", "alice", "--new-password")
	r.want(t, ExitOK)
	r.stderrHas(t, "logins ended")
	if b := body(t, s.requests()[1]); !reflect.DeepEqual(b, map[string]any{"password": pw}) {
		t.Errorf("sent %v", b)
	}
	run(t, s, "operator", "rm", "alice").want(t, ExitOK)
	if req := s.requests()[2]; req.method != "DELETE" || req.path != "/api/v1/operators/alice" {
		t.Errorf("sent %+v", req)
	}
}

func TestAuditList(t *testing.T) {
	s := newServer(t)
	s.answer("GET /api/v1/audit", 200, apiwire.AuditList{Entries: []apiwire.AuditEntry{
		{ID: "a1", Time: t0, Actor: "alice", ActorKind: "operator", Action: "credential.put", Target: "GITHUB_TOKEN", Client: "127.0.0.1", Detail: "store builtin version 3"},
	}, NextBefore: "1893553445000000000_a1"})
	r := run(t, s, "audit", "list", "--actor", "alice", "--limit", "1")
	r.want(t, ExitOK)
	want := "TIME                  ACTOR  KIND      ACTION          TARGET        CLIENT     DETAIL\n" +
		"2030-01-02T03:04:05Z  alice  operator  credential.put  GITHUB_TOKEN  127.0.0.1  store builtin version 3\n"
	r.stdoutIs(t, want)
	r.stderrHas(t, "older entries: agent-vault audit list --before 1893553445000000000_a1")
	if q := s.only(t).query; q != "actor=alice&limit=1" {
		t.Errorf("query %q", q)
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"credential", "--help"}, {"agent", "add", "--help"}, {"help", "service"}} {
		r := run(t, nil, args...)
		r.want(t, ExitOK)
		if !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%v: no usage in %q", args, r.stdout)
		}
	}
	// Every verb is there.
	r := run(t, nil, "--help")
	for _, v := range Verbs() {
		if !strings.Contains(r.stdout, "\n  "+v+" ") {
			t.Errorf("--help does not list %s:\n%s", v, r.stdout)
		}
	}
}
