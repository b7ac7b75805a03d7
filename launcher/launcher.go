// Package launcher runs an AI agent (any command) behind the agent-vault
// credential-injecting proxy.
//
// It creates a short-lived session through the management API, starts the
// command with an environment that routes its HTTP(S) traffic through the
// session proxy, makes it trust the proxy's CA and gives it placeholders
// instead of secrets, and revokes the session once the command exits.
package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

const (
	// DefaultAddr is the management API address used when none is given.
	DefaultAddr = "http://127.0.0.1:14321"
	// DefaultTTL is the session lifetime used when none is given.
	DefaultTTL = time.Hour
	// DefaultProgName prefixes the launcher's messages.
	DefaultProgName = "av-launch"

	// ExitSetup is the exit code for usage and setup errors.
	ExitSetup = 2
	// ExitCannotExecute is the exit code when the command is not executable.
	ExitCannotExecute = 126
	// ExitNotFound is the exit code when the command does not exist.
	ExitNotFound = 127

	// revokeTimeout bounds the revocation at exit.
	revokeTimeout = 10 * time.Second
)

// forwardedSignals are relayed to the child instead of ending the launcher.
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// Config describes one launch.
type Config struct {
	// ProgName prefixes messages; DefaultProgName if empty.
	ProgName string
	// Addr is the management API base URL; DefaultAddr if empty.
	Addr string
	// AdminToken authenticates to the management API. Required.
	AdminToken string
	// Services limits the session to these services; nil means all. A
	// non-nil empty list is an error rather than "all", so that a list
	// that came out empty (say, from an unset variable) cannot widen the
	// session.
	Services []string
	// TTL is the session lifetime; DefaultTTL if zero. The server may cap it.
	TTL time.Duration
	// Command is the child's argv, passed through unchanged. Command[0] is
	// looked up in the PATH of Env.
	Command []string
	// Env is the environment the child's is derived from; os.Environ() if nil.
	Env []string
	// Stdin, Stdout and Stderr are the child's standard streams (nil means
	// the null device). Stderr also receives the launcher's warnings.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// TempDir holds the CA files while the child runs; os.TempDir() if empty.
	TempDir string
	// HTTPClient talks to the management API. If nil, a client that never
	// uses a proxy, follows no redirects and times out is used.
	HTTPClient *http.Client
}

// Run creates a session, runs the command in it and revokes the session.
//
// It returns the child's exit code (128+n if a signal n killed it) and a nil
// error once the child ran. Otherwise it returns an error, never holding a
// secret, and the exit code to use: ExitSetup, ExitNotFound,
// ExitCannotExecute, or 128+n if signal n interrupted the setup. Warnings
// (such as a failed revocation) go to cfg.Stderr and do not change the code.
//
// While it runs, SIGINT, SIGTERM and SIGHUP are forwarded to the child
// rather than ending the process. Cancelling ctx sends SIGTERM to the child.
func Run(ctx context.Context, cfg Config) (int, error) {
	cfg.setDefaults()
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return ExitSetup, errors.New("no command given")
	}
	if cfg.AdminToken == "" {
		return ExitSetup, errors.New("no admin token")
	}
	if cfg.TTL < 0 {
		return ExitSetup, errors.New("ttl must not be negative")
	}
	if cfg.Services != nil && len(cfg.Services) == 0 {
		return ExitSetup, errors.New("empty list of services: name at least one, or leave it nil for all services")
	}
	base, err := parseAddr(cfg.Addr)
	if err != nil {
		return ExitSetup, err
	}
	api := &apiClient{base: base, token: cfg.AdminToken, http: cfg.HTTPClient}

	// Resolve the command before minting a session, so a typo costs nothing.
	path, code, err := resolveCommand(cfg.Command[0], lookupEnv(cfg.Env, "PATH"))
	if err != nil {
		return code, err
	}

	setupCtx, cancelSetup := context.WithCancel(ctx)
	defer cancelSetup()
	relay := &signalRelay{cancelSetup: cancelSetup}
	defer relay.listen(ctx)()

	sess, err := api.createSession(setupCtx, cfg.Services, cfg.TTL)
	// A session can come back with an error (a malformed answer): it
	// exists on the server all the same, so it is revoked too.
	if sess != nil {
		defer func() {
			// Revoke even if ctx is done: the session must not outlive the child.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
			defer cancel()
			if err := api.revokeSession(rctx, sess.ID); err != nil {
				fmt.Fprintf(cfg.Stderr, "%s: warning: revoking session: %v (it stays valid until it expires)\n", cfg.ProgName, err)
			}
		}()
	}
	if err != nil {
		if sig := relay.interrupted(); sig != nil {
			return signalExitCode(sig), fmt.Errorf("interrupted by %v", sig)
		}
		return ExitSetup, fmt.Errorf("creating session: %w", err)
	}

	settings, cleanup, err := prepareChild(&cfg, base, sess)
	defer cleanup()
	if err != nil {
		return ExitSetup, err
	}
	if settings.dropNames, err = api.credentialNames(setupCtx); err != nil {
		return ExitSetup, fmt.Errorf("listing credentials: %w", err)
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   cfg.Command,
		Env:    childEnv(cfg.Env, settings),
		Stdin:  cfg.Stdin,
		Stdout: cfg.Stdout,
		Stderr: cfg.Stderr,
	}
	sig, err := relay.start(ctx, cmd)
	switch {
	case sig != nil:
		return signalExitCode(sig), fmt.Errorf("interrupted by %v", sig)
	case err != nil && ctx.Err() != nil:
		return ExitSetup, err
	case err != nil:
		return startFailure(cfg.Command[0], err)
	}
	waitErr := cmd.Wait()
	if cmd.ProcessState == nil {
		return 1, fmt.Errorf("waiting for %s: %w", cfg.Command[0], waitErr)
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		// The child ran; an I/O error on its streams is worth a warning only.
		fmt.Fprintf(cfg.Stderr, "%s: warning: %v\n", cfg.ProgName, waitErr)
	}
	return exitCode(cmd.ProcessState), nil
}

func (cfg *Config) setDefaults() {
	if cfg.ProgName == "" {
		cfg.ProgName = DefaultProgName
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = newHTTPClient()
	}
}

// prepareChild validates the session and writes the CA files. cleanup
// removes whatever was written and must be called even on error.
func prepareChild(cfg *Config, base *url.URL, sess *apiwire.Session) (settings childSettings, cleanup func(), err error) {
	var files []string
	cleanup = func() {
		for _, f := range files {
			os.Remove(f)
		}
	}
	proxyURL, err := proxyURLWithCredentials(sess.ProxyURL, sess.Token)
	if err != nil {
		return settings, cleanup, err
	}
	if err := checkPlaceholders(sess.Placeholders); err != nil {
		return settings, cleanup, err
	}
	ourCA, err := parseCACerts(sess.CAPEM)
	if err != nil {
		return settings, cleanup, err
	}
	roots := readSystemRoots(lookupEnv(cfg.Env, "SSL_CERT_FILE"), systemBundlePaths)
	if roots == nil {
		fmt.Fprintf(cfg.Stderr, "%s: warning: no system CA bundle found; the command will trust only the agent-vault CA\n", cfg.ProgName)
	}
	bundle, err := writePrivateFile(cfg.TempDir, "agent-vault-ca-bundle-*.pem", joinPEM(roots, ourCA))
	if err != nil {
		return settings, cleanup, fmt.Errorf("writing CA bundle: %w", err)
	}
	files = append(files, bundle)
	// Node appends NODE_EXTRA_CA_CERTS to its own built-in roots, so it only
	// needs our CA; handing it the whole system bundle would just duplicate.
	nodeCA, err := writePrivateFile(cfg.TempDir, "agent-vault-ca-*.pem", ourCA)
	if err != nil {
		return settings, cleanup, fmt.Errorf("writing CA file: %w", err)
	}
	files = append(files, nodeCA)

	return childSettings{
		proxyURL: proxyURL,
		// host:port rather than the bare host: a bare "127.0.0.1" would make
		// most clients bypass the proxy for every loopback service. Clients
		// that ignore ports in NO_PROXY then send management calls through
		// the proxy, which refuses them: that fails closed.
		noProxy:      hostPort(base),
		bundlePath:   bundle,
		nodeCAPath:   nodeCA,
		placeholders: sess.Placeholders,
	}, cleanup, nil
}

// resolveCommand finds the executable for name in pathList (the child's
// PATH, which may differ from ours). Relative PATH entries are skipped, as
// os/exec does by default, so "." in PATH cannot pick up a local binary.
func resolveCommand(name, pathList string) (path string, code int, err error) {
	if strings.Contains(name, "/") {
		return name, 0, nil // exec reports a missing or non-executable file
	}
	if runtime.GOOS == "windows" {
		if path, err := exec.LookPath(name); err == nil {
			return path, 0, nil
		}
		return "", ExitNotFound, fmt.Errorf("%s: not found", name)
	}
	found := false
	for _, dir := range filepath.SplitList(pathList) {
		if !filepath.IsAbs(dir) {
			continue
		}
		candidate := filepath.Join(dir, name)
		info, err := os.Stat(candidate)
		if err != nil || info.IsDir() {
			continue
		}
		if info.Mode().Perm()&0o111 != 0 {
			return candidate, 0, nil
		}
		found = true
	}
	if found {
		return "", ExitCannotExecute, fmt.Errorf("%s: permission denied", name)
	}
	return "", ExitNotFound, fmt.Errorf("%s: not found", name)
}

// startFailure maps a failed exec to the shell's exit codes.
func startFailure(name string, err error) (int, error) {
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return ExitNotFound, fmt.Errorf("%s: not found", name)
	case errors.Is(err, fs.ErrPermission):
		return ExitCannotExecute, fmt.Errorf("%s: permission denied", name)
	}
	return ExitCannotExecute, fmt.Errorf("starting %s: %w", name, err)
}

// exitCode returns the child's exit code, 128+n if signal n killed it.
func exitCode(state *os.ProcessState) int {
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return signalExitCode(ws.Signal())
	}
	return state.ExitCode()
}

func signalExitCode(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}

// signalRelay catches forwardedSignals for the launcher's lifetime. Before
// the child starts, a signal cancels the setup; afterwards it is forwarded.
type signalRelay struct {
	cancelSetup context.CancelFunc

	mu     sync.Mutex
	proc   *os.Process // the child, once started
	caught os.Signal   // first signal caught before the child started
}

// listen starts relaying and returns the function that stops it. While the
// child runs, cancelling ctx forwards SIGTERM to it.
func (r *signalRelay) listen(ctx context.Context) (stop func()) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		ctxDone := ctx.Done()
		for {
			select {
			case sig := <-sigs:
				r.handle(sig)
			case <-ctxDone:
				r.terminate()
				ctxDone = nil
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
		<-stopped
	}
}

func (r *signalRelay) handle(sig os.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		_ = r.proc.Signal(sig) // fails only once the child is gone
		return
	}
	if r.caught == nil {
		r.caught = sig
	}
	r.cancelSetup()
}

// terminate sends SIGTERM to the child if it runs. Before it starts there is
// nothing to do: the setup context is derived from the cancelled one.
func (r *signalRelay) terminate() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		_ = r.proc.Signal(syscall.SIGTERM)
	}
}

// interrupted returns the signal that interrupted the setup, if any.
func (r *signalRelay) interrupted() os.Signal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.caught
}

// start starts cmd unless the setup was interrupted, in which case it
// returns the interrupting signal. Holding the lock across Start means no
// signal can fall between "not interrupted" and "child known".
func (r *signalRelay) start(ctx context.Context, cmd *exec.Cmd) (os.Signal, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.caught != nil {
		return r.caught, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r.proc = cmd.Process
	return nil, nil
}
