package e2etest

// Issue 10, a CLI that is ours: agent-vault's own help and version, and
// verbs over the management API (AGENT_VAULT_ADDR, AGENT_VAULT_TOKEN or
// --token-file) with readable tables, --json, and errors that say what
// to do.

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// cliRun is one finished agent-vault command.
type cliRun struct {
	stdout, stderr string
	code           int
}

func (c cliRun) String() string {
	return "exit " + strconv.Itoa(c.code) + "\nstdout: " + c.stdout + "\nstderr: " + c.stderr
}

// runCLI runs bin/agent-vault args with env (plus PATH and a HOME of
// its own) and stdin.
func runCLI(t *testing.T, env []string, stdin string, args ...string) cliRun {
	t.Helper()
	cmd := exec.Command(bin("agent-vault"), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "AGENT_VAULT_DATA_DIR=" + t.TempDir()}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("agent-vault %v did not finish within 60s", args)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return cliRun{stdout: o.String(), stderr: e.String(), code: code}
}

var avtToken = regexp.MustCompile(`avt_[A-Za-z0-9_-]{22,}`)

func TestCLIHelpAndVersion(t *testing.T) {
	help := runCLI(t, nil, "", "--help")
	if help.code != 0 {
		t.Fatalf("agent-vault --help: %s", help)
	}
	out := help.stdout + help.stderr
	first := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) != "" {
			first = line
			break
		}
	}
	if !strings.Contains(first, "agent-vault") || strings.Contains(strings.ToLower(first), "caddy is") {
		t.Errorf("agent-vault --help starts with %q, want agent-vault's own purpose", first)
	}
	// Commands are listed one a line, indented: "  credential   Manages ...".
	listed := func(verb string) int {
		loc := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(verb) + `\s`).FindStringIndex(out)
		if loc == nil {
			return -1
		}
		return loc[0]
	}
	ours, caddys := listed("credential"), listed("reverse-proxy")
	if ours < 0 || caddys >= 0 && caddys < ours {
		t.Errorf("agent-vault --help lists Caddy's verbs (reverse-proxy at %d) before its own (credential at %d):\n%s", caddys, ours, out)
	}
	for _, verb := range []string{"credential", "service", "agent", "session", "request", "operator"} {
		if listed(verb) < 0 {
			t.Errorf("agent-vault --help does not list the command %s", verb)
		}
	}

	v := runCLI(t, nil, "", "version")
	short := runCLI(t, nil, "", "-v")
	if v.code != 0 || short.code != 0 {
		t.Fatalf("agent-vault version: %s\n-v: %s", v, short)
	}
	line := strings.SplitN(strings.TrimSpace(v.stdout), "\n", 2)[0]
	if !strings.HasPrefix(line, "agent-vault ") {
		t.Errorf("agent-vault version prints %q, want \"agent-vault <version>\" first", line)
	}
	if strings.HasPrefix(strings.TrimSpace(v.stdout), "v2.") {
		t.Errorf("agent-vault version prints Caddy's version first: %q", v.stdout)
	}
	if strings.TrimSpace(short.stdout) != strings.TrimSpace(v.stdout) {
		t.Errorf("agent-vault -v %q differs from agent-vault version %q", short.stdout, v.stdout)
	}
}

func TestCLIVerbs(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	drainHits(t, up)
	s := startServer(t, ca, serverOpts{})
	addr := "AGENT_VAULT_ADDR=http://" + s.apiAddr
	env := []string{addr, "AGENT_VAULT_TOKEN=" + s.adminToken()}
	ok := func(stdin string, args ...string) cliRun {
		t.Helper()
		r := runCLI(t, env, stdin, args...)
		if r.code != 0 {
			t.Fatalf("agent-vault %s: %s", strings.Join(args, " "), r)
		}
		return r
	}
	const value = "ghp_cliValueFromStdin0123456789abc"

	// credential set reads stdin; argv never carries the value.
	ok(value, "credential", "set", "GITHUB_TOKEN")
	if r := runCLI(t, env, "", "credential", "set", "ARGV_TOKEN", "value-in-argv-0123"); r.code == 0 {
		t.Errorf("credential set NAME VALUE (value in argv) succeeded; the value must come from stdin: %s", r)
	}
	var creds apiwire.CredentialList
	s.must(s.admin(), "GET", "/api/v1/credentials", nil, 200, &creds)
	if slices.ContainsFunc(creds.Credentials, func(c apiwire.Credential) bool { return c.Name == "ARGV_TOKEN" }) {
		t.Error("credential set stored a value given in argv")
	}
	list := ok("", "credential", "list")
	mustContain(t, "credential list", list.stdout, "GITHUB_TOKEN")
	mustNotContain(t, "credential list", list.stdout+list.stderr, value)
	js := ok("", "credential", "list", "--json")
	var cl apiwire.CredentialList
	if err := json.Unmarshal([]byte(js.stdout), &cl); err != nil || len(cl.Credentials) != 1 || cl.Credentials[0].Name != "GITHUB_TOKEN" {
		t.Errorf("credential list --json: %v %q", err, js.stdout)
	}

	// service add with flags and from a file.
	ok("", "service", "add", "github", "--host", up.hostPort(), "--auth", "bearer", "--token", "GITHUB_TOKEN")
	svcFile := filepath.Join(t.TempDir(), "npm.json")
	os.WriteFile(svcFile, []byte(`{"name":"npm","host":"registry.npm.example","auth":{"type":"passthrough"}}`), 0o600)
	ok("", "service", "add", "npm", "--file", svcFile)
	var sl apiwire.ServiceList
	s.must(s.admin(), "GET", "/api/v1/services", nil, 200, &sl)
	i := slices.IndexFunc(sl.Services, func(x apiwire.Service) bool { return x.Name == "github" })
	if i < 0 || sl.Services[i].Host != up.hostPort() || sl.Services[i].Auth.Type != "bearer" || sl.Services[i].Auth.Token != "GITHUB_TOKEN" {
		t.Fatalf("service add github: %+v", sl)
	}
	if !slices.ContainsFunc(sl.Services, func(x apiwire.Service) bool { return x.Name == "npm" && x.Host == "registry.npm.example" }) {
		t.Errorf("service add --file: %+v", sl)
	}
	svcs := ok("", "service", "list")
	mustContain(t, "service list", svcs.stdout, "github")
	mustContain(t, "service list", svcs.stdout, up.hostPort())
	var slj apiwire.ServiceList
	if err := json.Unmarshal([]byte(ok("", "service", "list", "--json").stdout), &slj); err != nil || len(slj.Services) != 2 {
		t.Errorf("service list --json: %v %+v", err, slj)
	}
	// The value stored is exactly what stdin held: the upstream gets it.
	sess := s.newSession(t, []string{"github"}, "5m")
	if !injected(sess.agentClient(t), up, value) {
		t.Errorf("the upstream did not get the value credential set read from stdin (got %q)", up.last(t).Header.Get("Authorization"))
	}

	// agent add prints the token once; list never; rotate; rm.
	add := ok("", "agent", "add", "ci-bot", "--services", "github")
	tok := avtToken.FindString(add.stdout)
	if tok == "" {
		t.Fatalf("agent add printed no avt_ token: %s", add)
	}
	s.must(bearer(tok), "GET", "/api/v1/sessions", nil, 200, nil)
	al := ok("", "agent", "list")
	mustContain(t, "agent list", al.stdout, "ci-bot")
	mustContain(t, "agent list", al.stdout, "github")
	mustNotContain(t, "agent list", al.stdout, tok)
	var alj apiwire.AgentList
	if err := json.Unmarshal([]byte(ok("", "agent", "list", "--json").stdout), &alj); err != nil ||
		!slices.ContainsFunc(alj.Agents, func(a apiwire.Agent) bool { return a.Name == "ci-bot" }) {
		t.Errorf("agent list --json: %v %+v", err, alj)
	}
	rot := ok("", "agent", "rotate", "ci-bot")
	tok2 := avtToken.FindString(rot.stdout)
	if tok2 == "" || tok2 == tok {
		t.Fatalf("agent rotate printed no new token: %s", rot)
	}
	if r := s.call(bearer(tok), "GET", "/api/v1/sessions", nil); r.status != 401 {
		t.Errorf("the token before agent rotate: %s, want 401", r)
	}
	s.must(bearer(tok2), "GET", "/api/v1/sessions", nil, 200, nil)

	// session list|revoke, request list|approve|deny with the agent's work.
	agentSess := s.mintSession(bearer(tok2), apiwire.SessionRequest{TTL: "10m"})
	sll := ok("", "session", "list")
	mustContain(t, "session list", sll.stdout, agentSess.ID)
	mustNotContain(t, "session list", sll.stdout, agentSess.Token)
	ok("", "session", "revoke", agentSess.ID)
	if se, _ := s.sessionInfo(agentSess.ID); se.Status != apiwire.SessionRevoked {
		t.Errorf("session revoke: the session is %q", se.Status)
	}
	var r1, r2 apiwire.AccessRequest
	s.must(bearer(tok2), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "npm"}, 201, &r1)
	s.must(bearer(tok2), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "asked.example"}, 201, &r2)
	rl := ok("", "request", "list")
	mustContain(t, "request list", rl.stdout, r1.ID)
	mustContain(t, "request list", rl.stdout, "npm")
	ok("", "request", "approve", r1.ID)
	ok("", "request", "deny", r2.ID)
	var reqs apiwire.AccessRequestList
	s.must(s.admin(), "GET", "/api/v1/requests", nil, 200, &reqs)
	for _, r := range reqs.Requests {
		if want := map[string]string{r1.ID: apiwire.RequestApproved, r2.ID: apiwire.RequestDenied}[r.ID]; want != "" && r.Status != want {
			t.Errorf("request %s is %s, want %s", r.ID, r.Status, want)
		}
	}
	ok("", "agent", "rm", "ci-bot")
	if r := s.call(s.admin(), "GET", "/api/v1/agents/ci-bot", nil); r.status != 404 {
		t.Errorf("agent rm: GET the agent = %s, want 404", r)
	}

	// operator add (password from stdin) | list | rm.
	ok("operator-password-0123", "operator", "add", "vera", "--role", "viewer")
	s.login("vera", "operator-password-0123")
	ol := ok("", "operator", "list")
	mustContain(t, "operator list", ol.stdout, "vera")
	mustContain(t, "operator list", ol.stdout, "viewer")
	mustNotContain(t, "operator list", ol.stdout, "operator-password-0123")
	ok("", "operator", "rm", "vera")
	if r := s.call(cred{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "vera", Password: "operator-password-0123"}); r.status != 401 {
		t.Errorf("login after operator rm: %s, want 401", r)
	}

	// credential rm.
	ok("", "credential", "rm", "GITHUB_TOKEN")
	s.must(s.admin(), "GET", "/api/v1/credentials", nil, 200, &creds)
	if len(creds.Credentials) != 0 {
		t.Errorf("credential rm left %+v", creds)
	}
	ok("", "service", "rm", "npm")

	// --token-file instead of AGENT_VAULT_TOKEN.
	tf := writeSecretFile(t, "token", s.adminToken()+"\n")
	if r := runCLI(t, []string{addr}, "", "service", "list", "--token-file", tf); r.code != 0 || !strings.Contains(r.stdout, "github") {
		t.Errorf("service list --token-file: %s", r)
	}

	// The server's own words, unchanged.
	for _, c := range []struct {
		args         []string
		method, path string
		body         any
		envToken     string
	}{
		{[]string{"credential", "rm", "NOSUCH"}, "DELETE", "/api/v1/credentials/NOSUCH", nil, s.adminToken()},
		{[]string{"agent", "add", "bad-bot", "--services", "nosuch"}, "POST", "/api/v1/agents", apiwire.AgentCreateRequest{Name: "bad-bot", Services: []string{"nosuch"}}, s.adminToken()},
		{[]string{"agent", "list"}, "GET", "/api/v1/agents", nil, wordsBotToken(s)},
	} {
		apiWords := s.call(bearer(c.envToken), c.method, c.path, c.body).errText()
		r := runCLI(t, []string{addr, "AGENT_VAULT_TOKEN=" + c.envToken}, "", c.args...)
		if r.code == 0 {
			t.Errorf("agent-vault %v: exit 0, want an error", c.args)
		}
		mustContain(t, "agent-vault "+strings.Join(c.args, " "), r.stderr, apiWords)
		mustNotContain(t, "agent-vault "+strings.Join(c.args, " "), r.stdout+r.stderr, c.envToken)
	}
}

// wordsBotToken is a fresh agent token, for an error the server words
// for agents.
func wordsBotToken(s *server) string {
	return s.createAgent("words-bot", []string{"github"}, "").Token
}

// Errors that say what to do.
func TestCLIErrors(t *testing.T) {
	// No scheme in AGENT_VAULT_ADDR.
	r := runCLI(t, []string{"AGENT_VAULT_ADDR=127.0.0.1:14321", "AGENT_VAULT_TOKEN=x"}, "", "credential", "list")
	if r.code == 0 || !strings.Contains(r.stderr, "AGENT_VAULT_ADDR") || !strings.Contains(r.stderr, "http://") {
		t.Errorf("AGENT_VAULT_ADDR without a scheme: %s; want an error naming AGENT_VAULT_ADDR and http://", r)
	}
	// Nothing listening: say how to start the server.
	down := freePort(t)
	r = runCLI(t, []string{"AGENT_VAULT_ADDR=http://" + down, "AGENT_VAULT_TOKEN=x"}, "", "credential", "list")
	if r.code == 0 || !strings.Contains(r.stderr, down) {
		t.Errorf("server not running: %s; want an error naming %s", r, down)
	}
	if !strings.Contains(r.stderr, "agent-vault run") && !strings.Contains(r.stderr, "make run") && !strings.Contains(r.stderr, "agent-vault server") {
		t.Errorf("server not running: %q does not say how to start it", r.stderr)
	}
	// No token at all.
	r = runCLI(t, []string{"AGENT_VAULT_ADDR=http://" + down}, "", "credential", "list")
	if r.code == 0 || !strings.Contains(r.stderr, "AGENT_VAULT_TOKEN") {
		t.Errorf("no token: %s; want an error naming AGENT_VAULT_TOKEN", r)
	}
	// An unknown verb or missing argument is a usage error, not a crash.
	for _, args := range [][]string{{"credential", "set"}, {"agent", "rotate"}, {"service", "add", "x"}} {
		r := runCLI(t, []string{"AGENT_VAULT_ADDR=http://" + down, "AGENT_VAULT_TOKEN=x"}, "", args...)
		if r.code == 0 || strings.Contains(r.stderr, "panic") || strings.TrimSpace(r.stderr) == "" {
			t.Errorf("agent-vault %v: %s; want a usage error", args, r)
		}
	}
}
