package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/internal/datadir"
)

const (
	// maxSessionFileBytes caps a --session-token-file, which may hold a
	// whole POST /api/v1/sessions answer (a CA chain included).
	maxSessionFileBytes = 1 << 20
	// agentTokenFile is the token file av-launch reads by default, in the
	// data directory: the server writes the local agent's token there.
	agentTokenFile = "agent.token"
)

// Main is the av-launch command line: it parses args (without the program
// name), runs the command and returns the exit code. env is the launcher's
// environment (normally os.Environ()).
func Main(args, env []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return MainNamed(DefaultProgName, args, env, stdin, stdout, stderr)
}

// usageText is the top of -h, after the usage lines.
const usageText = `Runs command with its HTTPS traffic going through the agent-vault proxy.

The token is --token-file's content, else $AGENT_VAULT_TOKEN (a warning
if both are set), else <data dir>/agent.token, the local agent's, which
is used only when the management API is on loopback (127.0.0.0/8, ::1,
localhost). Plain http:// to any other host is refused unless
AGENT_VAULT_INSECURE_HTTP=1.

The session it opens is leased and renewed while command runs; a server
that does not lease it is refused (the session is revoked, exit 2). If
%[1]s dies, even by SIGKILL, the broker ends the session within its
lease timeout (session_lease_timeout, default 30s), so the proxy token
of whatever still runs is dead by then. On Linux the kernel kills
command itself with %[1]s (Pdeathsig), but not the processes command
started, nor a command that execs a setuid or file-capability program
(which clears Pdeathsig); command keeps %[1]s's process group, for the
terminal's job control.

--confine (Linux, no root needed) puts command and every process it
starts in their own user, mount and network namespaces and a Landlock
domain, with no capabilities: TCP reaches only the proxy (forwarded to
the child's own loopback), everything else, UDP and DNS included, fails
at once; the data dir, token files, master password file and Caddy's
storage read as empty; processes outside cannot be traced or read
through /proc (nor signalled, from Linux 6.12). A kernel that cannot do it is refused (exit 2)
unless --confine=best-effort.

Variables named like any credential the server holds are kept from
command (the session's answer lists the names, never the values).
`

// MainNamed is Main with the program name used in usage and error messages,
// for embedding the launcher in another command (e.g. "agent-vault vault run").
func MainNamed(progName string, args, env []string, stdin io.Reader, stdout, stderr io.Writer) int {
	getenv := func(name string) string { return lookupEnv(env, name) }
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return ExitSetup
	}
	warn := func(msg string) { fmt.Fprintf(stderr, "%s: warning: %s\n", progName, msg) }

	flags := flag.NewFlagSet(progName, flag.ContinueOnError)
	addr := flags.String("addr", "", "management API base `URL` (default $AGENT_VAULT_ADDR or "+DefaultAddr+"); given empty is an error")
	tokenFile := flags.String("token-file", "", "API token `file`; wins over $AGENT_VAULT_TOKEN (default: that variable, else $AGENT_VAULT_DATA_DIR/"+agentTokenFile+",\n"+
		"the local agent's token, used only for a management API on loopback); any kind of token\n(agent, operator login, admin): the server decides what it may do; given empty is an error")
	sessionFile := flags.String("session-token-file", "", "use the session minted elsewhere (an orchestrator) whose token (avs_...) or POST /api/v1/sessions answer (JSON) `file` holds\n"+
		"(- for stdin, at most 1 MiB, so the session need not touch disk; command's stdin is then at its end);\n"+
		"nothing is created, renewed or revoked, no API token is used, and --token-file, --services and --ttl do not apply")
	services := flags.String("services", "", "comma-separated `services` the session may use (default: all the token may use; an empty or invalid name is an error)")
	ttl := flags.Duration("ttl", 0, "session `lifetime` (default: the server's default_session_ttl, capped by an agent's max_session_ttl;\n"+
		"the server refuses one above the token's maximum)")
	confine, err := ParseConfineMode(getenv(ConfineEnv))
	if err != nil {
		return fail(fmt.Errorf("$%s: %v", ConfineEnv, err))
	}
	flags.Var(confineFlag{&confine}, "confine", "confine command and all it starts (Linux): TCP only to the proxy, no UDP/DNS, the broker's files hidden;\n"+
		"refuses to start where the kernel cannot (--confine=best-effort runs with what it offers and says what is missing,\n"+
		"--confine=false turns off $"+ConfineEnv+"=1|best-effort)")
	var confineHide pathList
	flags.Var(&confineHide, "confine-hide", "under --confine, hide this `path` (file or directory) too; repeatable")
	usage := func() {
		fmt.Fprintf(stderr, "usage: %s [--addr URL] [--token-file FILE] [--services a,b] [--ttl 1h] [--confine[=best-effort]] [--] command [args...]\n", progName)
		fmt.Fprintf(stderr, "       %s [--addr URL] --session-token-file FILE|- [--confine[=best-effort]] [--] command [args...]\n\n", progName)
		fmt.Fprintf(stderr, usageText+"\n", progName)
		flags.SetOutput(stderr)
		flags.PrintDefaults()
		flags.SetOutput(io.Discard)
	}
	// The flag package's own messages quote what it refused, which may
	// be a secret typed in the wrong place (-pSecret): it stays silent,
	// and flagProblem says what went wrong without the text.
	flags.SetOutput(io.Discard)
	flags.Usage = func() {}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return 0
		}
		fmt.Fprintf(stderr, "%s: %s\n", progName, flagProblem(err, flags))
		usage()
		return ExitSetup
	}
	if flags.NArg() == 0 {
		fmt.Fprintf(stderr, "%s: no command given\n", progName)
		usage()
		return ExitSetup
	}
	for _, name := range []string{"addr", "session-token-file"} {
		if flagGiven(flags, name) && flags.Lookup(name).Value.String() == "" {
			return fail(fmt.Errorf("--%s is empty (an unset variable?): give a value, or leave --%s out", name, name))
		}
	}
	if flagGiven(flags, "ttl") && *ttl <= 0 {
		return fail(errors.New("--ttl must be positive"))
	}
	external := flagGiven(flags, "session-token-file")
	if external {
		for _, name := range []string{"token-file", "services", "ttl"} {
			if flagGiven(flags, name) {
				return fail(fmt.Errorf("--%s does not apply with --session-token-file: the session was minted elsewhere, with its own services and lifetime, and no API token is used", name))
			}
		}
	}
	// Only an absent flag means all services: --services "$UNSET" or a
	// list with a hole in it must not quietly widen the session.
	var serviceList []string
	if flagGiven(flags, "services") {
		var err error
		if serviceList, err = splitServices(*services); err != nil {
			return fail(err)
		}
	}

	cfg := Config{
		ProgName:     progName,
		Addr:         firstNonEmpty(*addr, getenv("AGENT_VAULT_ADDR"), DefaultAddr),
		Services:     serviceList,
		TTL:          *ttl,
		Command:      flags.Args(),
		Env:          env,
		Stdin:        stdin,
		Stdout:       stdout,
		Stderr:       stderr,
		InsecureHTTP: getenv(apiclient.InsecureHTTPEnv) == "1",
		Confine:      confine,
		ConfineHide:  confineHide,
	}
	if len(confineHide) > 0 && confine == ConfineOff {
		return fail(errors.New("--confine-hide applies only with --confine"))
	}
	for _, f := range []string{*tokenFile, *sessionFile} {
		if f != "" && f != "-" {
			abs, err := filepath.Abs(f)
			if err != nil {
				return fail(fmt.Errorf("token file %s: %v", f, err))
			}
			cfg.secretFiles = append(cfg.secretFiles, abs)
		}
	}
	if *addr != "" {
		cfg.AddrSource = "--addr"
	}
	// The address first: whether the default token file may be sent
	// depends on where.
	check, err := apiclient.New(cfg.Addr, "", apiclient.WithAddrSource(cfg.AddrSource), apiclient.WithInsecureHTTP(cfg.InsecureHTTP))
	if err != nil {
		return fail(err)
	}
	if external {
		sess, warnings, err := readSessionFile(*sessionFile, stdin)
		for _, w := range warnings {
			warn(w)
		}
		if err != nil {
			return fail(err)
		}
		cfg.Session = sess
	} else {
		tok, err := apiclient.ResolveToken(apiclient.TokenSpec{
			Flag:        "--token-file",
			File:        *tokenFile,
			FileGiven:   flagGiven(flags, "token-file"),
			Env:         getenv(apiclient.TokenEnv),
			DefaultFile: defaultTokenFile(getenv),
			DefaultHint: "start the server with `make run`, which creates it for the agent \"local\", or make an agent with `agent-vault agent add NAME` and pass its token in AGENT_VAULT_TOKEN or --token-file",
			Addr:        check.Addr(),
		})
		if err != nil {
			return fail(err)
		}
		for _, w := range tok.Warnings {
			warn(w)
		}
		cfg.Token = tok.Value
	}

	code, err := Run(context.Background(), cfg)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
	}
	return code
}

// flagProblem rewrites a flag parsing error without the text the flag
// package quotes: an undefined flag is named only if it reads like a
// flag name, and a value that does not parse is never repeated.
func flagProblem(err error, flags *flag.FlagSet) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		if looksLikeFlagName(strings.TrimPrefix(name, "-")) {
			return "flag provided but not defined: -" + name
		}
		return "flag provided but not defined (see -h)"
	}
	if rest, ok := strings.CutPrefix(msg, "invalid value "); ok {
		// invalid value "<value>" for flag -<name>: <cause>
		if i := strings.LastIndex(rest, " for flag -"); i >= 0 {
			name, _, _ := strings.Cut(rest[i+len(" for flag -"):], ":")
			if f := flags.Lookup(name); f != nil {
				return fmt.Sprintf("invalid value for flag -%s (see -h)", f.Name)
			}
		}
		return "invalid value for a flag (see -h)"
	}
	if strings.HasPrefix(msg, "invalid boolean value") || strings.HasPrefix(msg, "invalid boolean flag") {
		return "invalid value for a flag (see -h)"
	}
	if strings.HasPrefix(msg, "bad flag syntax") {
		return "bad flag syntax (see -h)"
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok && flags.Lookup(name) != nil {
		return msg
	}
	return "bad flags (see -h)"
}

// looksLikeFlagName reports whether s could be a flag's name: at most
// 16 lower case letters and dashes. Anything else may be a secret.
func looksLikeFlagName(s string) bool {
	if s == "" || len(s) > 16 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && c != '-' {
			return false
		}
	}
	return true
}

// defaultTokenFile is agent.token in the data directory, "" without one.
func defaultTokenFile(getenv func(string) string) string {
	dir := dataDir(getenv, func() (string, error) {
		if home := getenv("HOME"); home != "" {
			return home, nil
		}
		return os.UserHomeDir()
	})
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, agentTokenFile)
}

// readSessionFile reads a --session-token-file ("-": stdin): either a
// bare session token, or the JSON answer of POST /api/v1/sessions. A
// bare token comes back as a Session with only Token set: Run reads the
// rest from GET /api/v1/session. Errors never quote the content.
func readSessionFile(path string, stdin io.Reader) (*apiwire.Session, []string, error) {
	var data []byte
	var warnings []string
	var err error
	name := path
	if path == "-" {
		name = "on stdin"
		data, err = readSessionStdin(stdin)
	} else {
		name = "file " + path
		data, warnings, err = apiclient.ReadSecretFile(path, maxSessionFileBytes)
	}
	if err != nil {
		return nil, warnings, fmt.Errorf("session token %s is not readable (%v)", name, err)
	}
	sess, err := parseSessionFile(data, name)
	clear(data)
	return sess, warnings, err
}

// readSessionStdin reads all of stdin, at most maxSessionFileBytes; a
// terminal is refused (the session is to be piped in).
func readSessionStdin(stdin io.Reader) ([]byte, error) {
	if stdin == nil {
		return nil, errors.New("no stdin")
	}
	if f, ok := stdin.(*os.File); ok {
		if info, err := f.Stat(); err == nil && info.Mode()&os.ModeCharDevice != 0 {
			return nil, errors.New("stdin is a terminal: pipe the session in")
		}
	}
	data, err := io.ReadAll(io.LimitReader(stdin, maxSessionFileBytes+1))
	if err != nil {
		clear(data)
		return nil, err
	}
	if len(data) > maxSessionFileBytes {
		clear(data)
		return nil, fmt.Errorf("larger than %d bytes", maxSessionFileBytes)
	}
	return data, nil
}

// parseSessionFile parses what a session token file holds; name says
// where it came from ("file F", "on stdin").
func parseSessionFile(data []byte, name string) (*apiwire.Session, error) {
	text := strings.TrimSpace(string(data))
	if strings.HasPrefix(text, "{") {
		var sess apiwire.Session
		if err := json.Unmarshal([]byte(text), &sess); err != nil {
			return nil, fmt.Errorf("session token %s holds JSON that is not a POST /api/v1/sessions answer", name)
		}
		if sess.Token == "" {
			return nil, fmt.Errorf("session token %s holds a session without its token", name)
		}
		if !strings.HasPrefix(sess.Token, sessionTokenPrefix) {
			return nil, fmt.Errorf("session token %s holds a session whose token is not a session token (%s...)", name, sessionTokenPrefix)
		}
		return &sess, nil
	}
	if !strings.HasPrefix(text, sessionTokenPrefix) || strings.ContainsAny(text, " \t\r\n") {
		return nil, fmt.Errorf("session token %s holds neither a session token (%s...) nor the JSON answer of POST /api/v1/sessions", name, sessionTokenPrefix)
	}
	return &apiwire.Session{Token: text}, nil
}

// dataDir is the agent-vault data directory: $AGENT_VAULT_DATA_DIR if
// set, else $XDG_DATA_HOME/agent-vault (XDG_DATA_HOME is ignored unless
// absolute, as the XDG spec says), else ~/.local/share/agent-vault. It
// returns "" if none applies (no home directory). The server uses the
// same rule (internal/datadir), so both find the same agent.token.
func dataDir(getenv func(string) string, home func() (string, error)) string {
	return datadir.Default(func(name string) string {
		if name == "HOME" {
			h, _ := home()
			return h
		}
		return getenv(name)
	})
}

// flagGiven reports whether the named flag was set on the command line.
func flagGiven(flags *flag.FlagSet, name string) bool {
	given := false
	flags.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// splitServices splits a comma-separated list of service names, trimming
// spaces around each. An empty list or an empty name in it is an error:
// a hole in the list (an unset variable, a stray comma) must not go
// unnoticed, let alone widen the session.
func splitServices(list string) ([]string, error) {
	var out []string
	hole := 0
	for i, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			if hole == 0 {
				hole = i + 1
			}
			continue
		}
		out = append(out, s)
	}
	switch {
	case out == nil:
		return nil, fmt.Errorf("--services %q names no service: name at least one, or omit --services for all services", apiclient.Printable(list, 64))
	case hole > 0:
		return nil, fmt.Errorf("--services %q has an empty name (item %d): check for a stray comma or an unset variable", apiclient.Printable(list, 200), hole)
	}
	// Checked here as the server would: a typo such as "*" or "git hub"
	// costs no request (and no session to clean up).
	for i, name := range out {
		if !services.IsValidName(name) {
			return nil, fmt.Errorf("--services: %q (item %d) is not a service name: use 1-64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit (omit --services for all services)", apiclient.Printable(name, 64), i+1)
		}
	}
	return out, nil
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
