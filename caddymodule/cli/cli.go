// Package cli is agent-vault's management command line: the verbs
// credential, service, agent, session, request, operator and audit,
// which talk to the management API of a running server.
//
// Each verb is a Caddy command of the agent-vault binary (register.go);
// Main runs one in-process, which is how the tests drive it.
//
// Conventions every verb follows:
//   - The server is $AGENT_VAULT_ADDR (or --addr), default
//     http://127.0.0.1:14321; the token is --token-file's content, else
//     $AGENT_VAULT_TOKEN, else <data dir>/admin.token.
//   - A secret (credential value, operator password) is read from stdin,
//     or from a no-echo prompt when stdin is a terminal; never from the
//     command line, where shell history and ps would keep it.
//   - Output is an aligned table (or a short confirmation) by default and
//     the apiwire types, as the server sent them, with --json. Tokens the
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
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

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

// maxTokenFileBytes caps a token file: a token is one short line.
const maxTokenFileBytes = 64 << 10

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
	err := root.ExecuteContext(context.Background())
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
	fl.StringVar(&r.addr, "addr", "", "management API `URL` (default $AGENT_VAULT_ADDR, else "+apiclient.DefaultAddr+")")
	fl.StringVar(&r.tokenFile, "token-file", "", "`file` holding the token (default $AGENT_VAULT_TOKEN, else <data dir>/admin.token)")
	fl.BoolVar(&r.json, "json", false, "print the server's JSON answer instead of a table")
	fl.BoolVarP(&r.quiet, "quiet", "q", false, "print only what was asked for (tables, tokens), no confirmations or notes")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
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
	if addr == "" {
		addr, source = strings.TrimSpace(r.env.Getenv("AGENT_VAULT_ADDR")), "AGENT_VAULT_ADDR"
	}
	if addr == "" {
		addr = apiclient.DefaultAddr
	}
	token, err := r.token()
	if err != nil {
		return nil, usageError{err}
	}
	opts := []apiclient.Option{apiclient.WithAddrSource(source)}
	if r.env.Transport != nil {
		opts = append(opts, apiclient.WithTransport(r.env.Transport))
	}
	c, err := apiclient.New(addr, token, opts...)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// token returns the token: --token-file's content (an explicit flag wins
// over the environment), else $AGENT_VAULT_TOKEN, else the data dir's
// admin.token. Errors never hold the token.
func (r *runner) token() (string, error) {
	if r.tokenFile == "" {
		if t := strings.TrimSpace(r.env.Getenv("AGENT_VAULT_TOKEN")); t != "" {
			r.tokenSource = "AGENT_VAULT_TOKEN"
			return t, nil
		}
	}
	path, explicit := r.tokenFile, true
	if path == "" {
		dir := datadir.Default(r.env.Getenv)
		if dir == "" {
			return "", errors.New("no token: set AGENT_VAULT_TOKEN or pass --token-file (there is no home directory to find the data dir's admin.token in)")
		}
		path, explicit = filepath.Join(dir, "admin.token"), false
	}
	r.tokenSource = path
	f, err := os.Open(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("no token: AGENT_VAULT_TOKEN is unset and %s does not exist; the server writes it on first start (is it running with this data dir? AGENT_VAULT_DATA_DIR), or pass --token-file", path)
		}
		return "", fmt.Errorf("reading the token file: %v", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("reading the token file %s: %v", path, unwrapPath(err))
	}
	if len(data) > maxTokenFileBytes {
		return "", fmt.Errorf("the token file %s is larger than %d bytes: is it the right file?", path, maxTokenFileBytes)
	}
	token := strings.TrimSpace(string(data))
	clear(data)
	if token == "" {
		return "", fmt.Errorf("the token file %s is empty", path)
	}
	return token, nil
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
