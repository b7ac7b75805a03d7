// Package cli is agent-vault's management command line: the verbs
// credential, service, agent, session, request, operator, audit and
// activity, which talk to the management API of a running server.
//
// Each verb is a Caddy command of the agent-vault binary (register.go);
// Main runs one in-process, which is how the tests drive it.
//
// Conventions every verb follows:
//   - The server is --addr, else $AGENT_VAULT_ADDR, default
//     http://127.0.0.1:14321; plain http:// to a host that is not
//     loopback is refused unless AGENT_VAULT_INSECURE_HTTP=1. The token
//     is --token-file's content, else $AGENT_VAULT_TOKEN (a warning if
//     both are set), else <data dir>/admin.token, which is used only
//     for a server on loopback (127.0.0.0/8, ::1, localhost). A flag
//     given empty (an unset variable) is a usage error, never the
//     default. A token file others may read gets a warning, as ssh
//     gives.
//   - A secret (credential value, operator password) is read from stdin,
//     or from a no-echo prompt when stdin is a terminal; never from the
//     command line, where shell history and ps would keep it.
//   - Output is an aligned table (or a short confirmation) by default and
//     the apiwire types, as the server sent them, with --json (activity
//     prints one entry a line, so that a page and --follow read alike). Tokens the
//     server hands out (agent add, agent rotate) go to stdout alone on
//     their line; notes go to stderr.
//   - Exit 0 on success, 1 when the server refused or failed (its own
//     words are printed unchanged) or could not be reached, 2 for a usage
//     error (bad flags or arguments, no token, a malformed address).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
	"github.com/agentvault/caddy-agent-vault/internal/datadir"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitFailed = 1 // the server refused or failed, or was not reachable
	ExitUsage  = 2 // bad flags, arguments or environment
)

// progName prefixes every message.
const progName = "agent-vault"

// Env is what one run of the command line reads and writes.
type Env struct {
	// Getenv reads the environment (os.Getenv).
	Getenv func(string) string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Terminal is the terminal stdin is, for no-echo prompts; nil when
	// stdin is not a terminal (a pipe, a file), which is then read as is.
	Terminal Terminal
	// Transport, if set, replaces the HTTP transport (tests).
	Transport http.RoundTripper
	// Context is the run's context (nil: context.Background()); a
	// command ends when it is done (tests end activity --follow so).
	Context context.Context
	// After is the clock of the waits (nil: time.After); tests make
	// them instant.
	After func(time.Duration) <-chan time.Time
}

// Terminal reads secrets without echoing them.
type Terminal interface {
	// ReadSecret shows prompt and reads one line without echo.
	ReadSecret(prompt string) ([]byte, error)
}

// usageError is a mistake in how the command was called: exit 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Main runs the command line args (a verb and its arguments, without the
// program name: ["credential", "set", "GITHUB_TOKEN"]) and returns the
// exit code.
func Main(args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	if env.Stdout == nil {
		env.Stdout = io.Discard
	}
	if env.Stderr == nil {
		env.Stderr = io.Discard
	}
	r := &runner{env: env}
	root := r.rootCommand()
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	ctx := env.Context
	if ctx == nil {
		ctx = context.Background()
	}
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(env.Stderr, "%s: %s\n", progName, r.describe(err))
	if errors.As(err, new(usageError)) {
		return ExitUsage
	}
	return ExitFailed
}

// runner holds one run's environment and its global flags.
type runner struct {
	env       Env
	addr      string
	tokenFile string
	json      bool
	quiet     bool
	// globals are the flags above, to tell a flag given empty (an
	// error) from one not given (the default).
	globals *pflag.FlagSet
	// tokenSource names where the token came from, for the hint of a 401.
	tokenSource string
}

// rootCommand is the tree of every verb under a root named agent-vault.
func (r *runner) rootCommand() *cobra.Command {
	// Main is always called with a verb; the root only groups them.
	root := group(progName, "agent-vault's management command line", "")
	root.SilenceErrors = true // Main prints them, once
	root.SilenceUsage = true
	root.CompletionOptions = cobra.CompletionOptions{DisableDefaultCmd: true}
	root.DisableSuggestions = true
	fl := root.PersistentFlags()
	fl.StringVar(&r.addr, "addr", "", "management API `URL` (default $AGENT_VAULT_ADDR, else "+apiclient.DefaultAddr+"; plain http:// only to loopback unless AGENT_VAULT_INSECURE_HTTP=1)")
	fl.StringVar(&r.tokenFile, "token-file", "", "`file` holding the token; wins over $AGENT_VAULT_TOKEN (default: that variable, else <data dir>/admin.token for a server on loopback)")
	fl.BoolVar(&r.json, "json", false, "print the server's JSON answer instead of a table")
	fl.BoolVarP(&r.quiet, "quiet", "q", false, "print only what was asked for (tables, tokens), no confirmations or notes")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{flagProblem(err)} })
	r.globals = fl
	for _, v := range verbs {
		cmd := v.build(r)
		cmd.Short = v.short
		root.AddCommand(cmd)
	}
	return root
}

// group is the command of a verb (credential, agent, ...): it only holds
// subcommands, and called without one (or with an unknown one) it shows
// its help and fails as a usage error.
func group(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				cmd.SetOut(cmd.ErrOrStderr())
				_ = cmd.Usage()
				return usagef("%s needs a subcommand", path(cmd))
			}
			// Only a word that looks like a command is repeated: a
			// misplaced argument could be a secret.
			if looksLikeWord(args[0]) {
				return usagef("%s has no subcommand %q: see %s --help", path(cmd), args[0], cmd.CommandPath())
			}
			return usagef("%s: unknown subcommand: see %s --help", path(cmd), cmd.CommandPath())
		},
	}
	cmd.AddCommand(subs...)
	return cmd
}

// path is the command's path without the program name, which every
// message starts with already: "credential set".
func path(cmd *cobra.Command) string {
	if !cmd.HasParent() {
		return cmd.Name()
	}
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

func looksLikeWord(s string) bool {
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

// args checks a command's positional arguments: exactly the names given
// (for the usage message). It never repeats an argument: an extra one may
// be a secret typed where it does not belong.
func args(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, got []string) error {
		switch {
		case len(got) < len(names):
			return usagef("%s: missing %s (usage: %s)", path(cmd), names[len(got)], cmd.UseLine())
		case len(got) > len(names):
			return usagef("%s: too many arguments (usage: %s)", path(cmd), cmd.UseLine())
		}
		return nil
	}
}

// client returns the API client for this run's address and token. Both
// are checked before any I/O; a problem with either is a usage error.
func (r *runner) client() (*apiclient.Client, error) {
	addr, source := r.addr, "--addr"
	if r.given("addr") {
		if addr == "" {
			return nil, usagef("--addr is empty (an unset variable?): give the management API's URL, or leave --addr out")
		}
	} else {
		addr, source = strings.TrimSpace(r.env.Getenv("AGENT_VAULT_ADDR")), "AGENT_VAULT_ADDR"
	}
	if addr == "" {
		addr = apiclient.DefaultAddr
	}
	opts := []apiclient.Option{
		apiclient.WithAddrSource(source),
		apiclient.WithInsecureHTTP(r.env.Getenv(apiclient.InsecureHTTPEnv) == "1"),
	}
	if r.env.Transport != nil {
		opts = append(opts, apiclient.WithTransport(r.env.Transport))
	}
	// The address first: whether the data dir's admin.token may be sent
	// depends on where.
	c, err := apiclient.New(addr, "", opts...)
	if err != nil {
		return nil, usageError{err}
	}
	token, err := r.token(c.Addr())
	if err != nil {
		return nil, usageError{err}
	}
	if c, err = c.WithToken(token); err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// token returns the token for the server at addr (apiclient.ResolveToken:
// --token-file, else $AGENT_VAULT_TOKEN, else the data dir's admin.token
// for a loopback server). Errors never hold the token.
func (r *runner) token(addr *url.URL) (string, error) {
	defaultFile := ""
	if dir := datadir.Default(r.env.Getenv); dir != "" {
		defaultFile = filepath.Join(dir, "admin.token")
	}
	tok, err := apiclient.ResolveToken(apiclient.TokenSpec{
		Flag:        "--token-file",
		File:        r.tokenFile,
		FileGiven:   r.given("token-file"),
		Env:         r.env.Getenv(apiclient.TokenEnv),
		DefaultFile: defaultFile,
		DefaultHint: "the server writes it on first start (is it running with this data dir? AGENT_VAULT_DATA_DIR), or pass --token-file",
		Addr:        addr,
	})
	if err != nil {
		return "", err
	}
	for _, w := range tok.Warnings {
		r.warn("%s", w)
	}
	r.tokenSource = tok.Source
	return tok.Value, nil
}

// given reports whether the global flag name was on the command line.
func (r *runner) given(name string) bool {
	f := r.globals.Lookup(name)
	return f != nil && f.Changed
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// describe is the message printed for err: the server's own words with
// its status, and, where one helps, what to do next.
func (r *runner) describe(err error) string {
	var apiErr *apiclient.Error
	if !errors.As(err, &apiErr) {
		return err.Error()
	}
	msg := fmt.Sprintf("%s (HTTP %d)", apiErr.Message, apiErr.Status)
	switch apiErr.Status {
	case http.StatusUnauthorized:
		msg += fmt.Sprintf("\nhint: the server did not accept the token from %s; is it this server's admin token, an operator's login, or an agent token that was rotated or deleted?", r.tokenSource)
	case http.StatusNotFound:
		if strings.HasPrefix(apiErr.Message, "no such endpoint") {
			msg += "\nhint: this server does not know that endpoint: is it an older agent-vault?"
		}
	}
	return msg
}

// flagProblem rewrites a flag parsing error without the text pflag
// quotes: "unknown shorthand flag: 'p' in -pSecret" would print a
// secret typed in the wrong place, and so would an invalid value. Only
// names that read like flag names are repeated.
func flagProblem(err error) error {
	var notExist *pflag.NotExistError
	var needs *pflag.ValueRequiredError
	var invalid *pflag.InvalidValueError
	var syntax *pflag.InvalidSyntaxError
	switch {
	case errors.As(err, &notExist):
		name := notExist.GetSpecifiedName()
		if notExist.GetSpecifiedShortnames() != "" {
			// One letter of the group, not the group (which may be a
			// secret glued to a flag: -pSecret).
			if len(name) == 1 && looksLikeWord(strings.ToLower(name)) {
				return fmt.Errorf("unknown shorthand flag -%s", name)
			}
			return errors.New("unknown shorthand flag: see --help")
		}
		// Repeated only if it reads like a word (as for subcommands).
		if looksLikeWord(name) {
			return fmt.Errorf("unknown flag: --%s", name)
		}
		return errors.New("unknown flag: see --help")
	case errors.As(err, &needs):
		if f := needs.GetFlag(); f != nil {
			return fmt.Errorf("flag needs an argument: --%s", f.Name)
		}
		return errors.New("a flag needs an argument")
	case errors.As(err, &invalid):
		if f := invalid.GetFlag(); f != nil {
			return fmt.Errorf("invalid value for --%s (expected %s)", f.Name, f.Value.Type())
		}
		return errors.New("invalid value for a flag")
	case errors.As(err, &syntax):
		return errors.New("bad flag syntax")
	}
	return errors.New("bad flags: see --help")
}
