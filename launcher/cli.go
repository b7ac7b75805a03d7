package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/internal/datadir"
)

const (
	// maxTokenFileBytes caps a token file; a token is a short line.
	maxTokenFileBytes = 64 << 10
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

// MainNamed is Main with the program name used in usage and error messages,
// for embedding the launcher in another command (e.g. "agent-vault vault run").
func MainNamed(progName string, args, env []string, stdin io.Reader, stdout, stderr io.Writer) int {
	getenv := func(name string) string { return lookupEnv(env, name) }
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return ExitSetup
	}

	flags := flag.NewFlagSet(progName, flag.ContinueOnError)
	flags.SetOutput(stderr)
	addr := flags.String("addr", "", "management API base `URL` (default $AGENT_VAULT_ADDR or "+DefaultAddr+")")
	tokenFile := flags.String("token-file", "", "API token `file`, used when $AGENT_VAULT_TOKEN is unset (default $AGENT_VAULT_DATA_DIR/"+agentTokenFile+", the local agent's token);\n"+
		"any kind of token (agent, operator login, admin): the server decides what it may do")
	sessionFile := flags.String("session-token-file", "", "use the session minted elsewhere (an orchestrator) whose token (avs_...) or POST /api/v1/sessions answer (JSON) `file` holds;\n"+
		"nothing is created, renewed or revoked, and --services and --ttl do not apply")
	services := flags.String("services", "", "comma-separated `services` the session may use (default: all the token may use; an empty name is an error)")
	ttl := flags.Duration("ttl", 0, "session `lifetime` (default: the server's default_session_ttl, capped by an agent's max_session_ttl;\n"+
		"the server refuses one above the token's maximum)")
	flags.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s [--addr URL] [--token-file FILE] [--services a,b] [--ttl 1h] [--] command [args...]\n", progName)
		fmt.Fprintf(stderr, "       %s [--addr URL] --session-token-file FILE [--] command [args...]\n\n", progName)
		fmt.Fprintf(stderr, "Runs command with its HTTPS traffic going through the agent-vault proxy.\n\n")
		fmt.Fprintf(stderr, "The session it opens is leased and renewed while command runs: if %s dies, the broker\n", progName)
		fmt.Fprintf(stderr, "ends it within its lease timeout. Variables named like a credential the server holds are\n")
		fmt.Fprintf(stderr, "kept from command; a token that may not list credentials (an agent's) only keeps the\n")
		fmt.Fprintf(stderr, "session's own credential names out (they hold placeholders instead).\n\n")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return ExitSetup // the flag package already reported the error
	}
	if flags.NArg() == 0 {
		fmt.Fprintf(stderr, "%s: no command given\n", progName)
		flags.Usage()
		return ExitSetup
	}
	if flagGiven(flags, "ttl") && *ttl <= 0 {
		return fail(errors.New("--ttl must be positive"))
	}
	external := flagGiven(flags, "session-token-file")
	if external {
		for _, name := range []string{"services", "ttl"} {
			if flagGiven(flags, name) {
				return fail(fmt.Errorf("--%s does not apply with --session-token-file: the session was minted elsewhere, with its own services and lifetime", name))
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
		ProgName: progName,
		Addr:     firstNonEmpty(*addr, getenv("AGENT_VAULT_ADDR"), DefaultAddr),
		Services: serviceList,
		TTL:      *ttl,
		Command:  flags.Args(),
		Env:      env,
		Stdin:    stdin,
		Stdout:   stdout,
		Stderr:   stderr,
	}
	if *addr != "" {
		cfg.AddrSource = "--addr"
	}
	if external {
		sess, err := readSessionFile(*sessionFile)
		if err != nil {
			return fail(err)
		}
		cfg.Session = sess
		// The API token is optional here: it only lists the credential
		// names to keep from the child. The default file is not read,
		// since a sandbox handed a session normally holds no agent token.
		if getenv("AGENT_VAULT_TOKEN") != "" || *tokenFile != "" {
			if cfg.Token, err = apiToken(getenv, *tokenFile); err != nil {
				return fail(err)
			}
		}
	} else {
		token, err := apiToken(getenv, *tokenFile)
		if err != nil {
			return fail(err)
		}
		cfg.Token = token
	}

	code, err := Run(context.Background(), cfg)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
	}
	return code
}

// apiToken returns $AGENT_VAULT_TOKEN, else the trimmed content of
// tokenFile (default: agent.token in the data directory).
func apiToken(getenv func(string) string, tokenFile string) (string, error) {
	if token := strings.TrimSpace(getenv("AGENT_VAULT_TOKEN")); token != "" {
		return token, nil
	}
	explicit := tokenFile != ""
	if !explicit {
		dir := dataDir(getenv, func() (string, error) {
			if home := getenv("HOME"); home != "" {
				return home, nil
			}
			return os.UserHomeDir()
		})
		if dir == "" {
			return "", errors.New("no token: set AGENT_VAULT_TOKEN or use --token-file")
		}
		tokenFile = filepath.Join(dir, agentTokenFile)
	}
	data, err := readSmallFile(tokenFile, maxTokenFileBytes)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return "", fmt.Errorf("no token: AGENT_VAULT_TOKEN is unset and %s does not exist: start the server with `make run`, which creates it for the agent \"local\", or make an agent with `agent-vault agent add NAME` and pass its token in AGENT_VAULT_TOKEN or --token-file", tokenFile)
	}
	if err != nil {
		return "", fmt.Errorf("no token: AGENT_VAULT_TOKEN is unset and %s is not readable (%v)", tokenFile, err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("no token: %s is empty", tokenFile)
	}
	return token, nil
}

// readSessionFile reads a --session-token-file: either a bare session
// token, or the JSON answer of POST /api/v1/sessions. A bare token
// comes back as a Session with only Token set: Run reads the rest from
// GET /api/v1/session. Errors never quote the file.
func readSessionFile(path string) (*apiwire.Session, error) {
	data, err := readSmallFile(path, maxSessionFileBytes)
	if err != nil {
		return nil, fmt.Errorf("session token file %s is not readable (%v)", path, err)
	}
	text := strings.TrimSpace(string(data))
	if strings.HasPrefix(text, "{") {
		var sess apiwire.Session
		if err := json.Unmarshal([]byte(text), &sess); err != nil {
			return nil, fmt.Errorf("session token file %s holds JSON that is not a POST /api/v1/sessions answer", path)
		}
		if sess.Token == "" {
			return nil, fmt.Errorf("session token file %s holds a session without its token", path)
		}
		if !strings.HasPrefix(sess.Token, sessionTokenPrefix) {
			return nil, fmt.Errorf("session token file %s holds a session whose token is not a session token (%s...)", path, sessionTokenPrefix)
		}
		return &sess, nil
	}
	if !strings.HasPrefix(text, sessionTokenPrefix) || strings.ContainsAny(text, " \t\r\n") {
		return nil, fmt.Errorf("session token file %s holds neither a session token (%s...) nor the JSON answer of POST /api/v1/sessions", path, sessionTokenPrefix)
	}
	return &apiwire.Session{Token: text}, nil
}

// readSmallFile reads a regular file of at most limit bytes. Its errors
// drop the operation and path, which the caller names.
func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, unwrapPathError(err)
	}
	defer f.Close()
	if info, err := f.Stat(); err != nil {
		return nil, unwrapPathError(err)
	} else if !info.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, unwrapPathError(err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return data, nil
}

// unwrapPathError drops the operation and path from a *fs.PathError, which
// the caller already names.
func unwrapPathError(err error) error {
	var pathErr *os.PathError
	if errors.As(err, &pathErr) {
		return pathErr.Err
	}
	return err
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
