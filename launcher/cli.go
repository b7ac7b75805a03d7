package launcher

import (
	"github.com/agentvault/caddy-agent-vault/internal/datadir"

	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// maxTokenFileBytes caps the admin token file; a token is a short line.
const maxTokenFileBytes = 64 << 10

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
	tokenFile := flags.String("token-file", "", "admin token `file`, used when $AGENT_VAULT_TOKEN is unset (default $AGENT_VAULT_DATA_DIR/admin.token)")
	services := flags.String("services", "", "comma-separated `services` the session may use (default all; given but empty is an error)")
	ttl := flags.Duration("ttl", DefaultTTL, "session lifetime")
	flags.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s [--addr URL] [--token-file FILE] [--services a,b] [--ttl 1h] [--] command [args...]\n\n", progName)
		fmt.Fprintf(stderr, "Runs command with its HTTPS traffic going through the agent-vault proxy.\n\n")
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
	if *ttl <= 0 {
		return fail(errors.New("--ttl must be positive"))
	}
	// Only an absent flag means all services: --services "$UNSET" must not
	// quietly widen the session to everything.
	var serviceList []string
	if flagGiven(flags, "services") {
		if serviceList = splitServices(*services); serviceList == nil {
			return fail(fmt.Errorf("--services %q names no service: name at least one, or omit --services for all services", *services))
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
	token, err := adminToken(getenv, *tokenFile)
	if err != nil {
		return fail(err)
	}
	cfg.AdminToken = token

	code, err := Run(context.Background(), cfg)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
	}
	return code
}

// adminToken returns $AGENT_VAULT_TOKEN, else the trimmed content of
// tokenFile (default: admin.token in the data directory).
func adminToken(getenv func(string) string, tokenFile string) (string, error) {
	if token := strings.TrimSpace(getenv("AGENT_VAULT_TOKEN")); token != "" {
		return token, nil
	}
	if tokenFile == "" {
		dir := dataDir(getenv, func() (string, error) {
			if home := getenv("HOME"); home != "" {
				return home, nil
			}
			return os.UserHomeDir()
		})
		if dir == "" {
			return "", errors.New("no admin token: set AGENT_VAULT_TOKEN or use --token-file")
		}
		tokenFile = filepath.Join(dir, "admin.token")
	}
	f, err := os.Open(tokenFile)
	if err != nil {
		return "", fmt.Errorf("no admin token: AGENT_VAULT_TOKEN is unset and %s is not readable (%v)", tokenFile, unwrapPathError(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes))
	if err != nil {
		return "", fmt.Errorf("reading admin token file %s: %v", tokenFile, unwrapPathError(err))
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("no admin token: %s is empty", tokenFile)
	}
	return token, nil
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
// same rule (internal/datadir), so both find the same admin.token.
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

// splitServices splits a comma-separated list, dropping blanks; nil if
// none remain.
func splitServices(list string) []string {
	var out []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
