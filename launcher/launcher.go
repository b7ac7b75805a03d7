// Package launcher runs an AI agent (any command) behind the agent-vault
// credential-injecting proxy.
//
// It opens a session through the management API with whatever token it is
// given (an agent's, normally the local agent's agent.token; the server
// decides what the token may do), starts the command with an environment
// that routes its HTTP(S) traffic through the session proxy, makes it
// trust the proxy's CA and gives it placeholders instead of secrets, and
// revokes the session once the command exits.
//
// The session is leased: the launcher asks for a lease, refuses (and
// revokes) a session the server did not lease, and renews it every third
// of its lease timeout while the command runs.
//
// What happens when the launcher dies, SIGKILL included:
//   - The session's lease is the guarantee: the renewals stop, and the
//     broker ends the session within its lease timeout (the server's
//     session_lease_timeout, 30 s by default), so the proxy token that
//     anything still running holds is dead by then.
//   - On Linux the kernel SIGKILLs the command (Pdeathsig), the direct
//     child only: processes it started survive it, and Pdeathsig is
//     cleared when the child execs a setuid or file-capability program.
//     The command is deliberately not put in a process group of its own,
//     which would take it out of the terminal's job control (an
//     interactive agent could no longer be stopped with ^Z or read the
//     terminal).
//   - Containing every descendant is the job of --confine: all of
//     them share its namespaces and Landlock domain, so they reach
//     nothing but the proxy, and once the launcher is gone nothing
//     forwards even that.
//
// When the command exits normally there is nothing more to do: the
// session is revoked at once, so whatever it left running has no access
// from then on.
//
// A session minted elsewhere (an orchestrator) can be handed over instead
// (Config.Session); the launcher then creates, renews and revokes nothing,
// and uses no API token.
//
// Inherited variables named like any credential the server holds are kept
// from the command: the session's answer lists every credential name
// (credential_names, names only), in the session's scope or not, and the
// names that carry placeholders are replaced by them.
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
	"reflect"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

const (
	// DefaultAddr is the management API address used when none is given.
	DefaultAddr = apiclient.DefaultAddr
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
	// sessionTokenPrefix starts every session (proxy) token.
	sessionTokenPrefix = "avs_"
)

// forwardedSignals are relayed to the child instead of ending the launcher.
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// Config describes one launch.
type Config struct {
	// ProgName prefixes messages; DefaultProgName if empty.
	ProgName string
	// Addr is the management API base URL; DefaultAddr if empty.
	Addr string
	// AddrSource names where Addr came from in error messages
	// ("--addr"); "AGENT_VAULT_ADDR" if empty.
	AddrSource string
	// Token authenticates to the management API: an agent token, an
	// operator's login or the admin token; the server decides what it may
	// do. Required unless Session is set.
	Token string
	// Session, if set, is a session minted elsewhere: Run uses it and
	// creates, renews and revokes nothing (Services and TTL are ignored).
	// If only its Token is set, Run reads the rest with
	// GET /api/v1/session, authenticated with that token. Token (the API
	// token) is not used then.
	Session *apiwire.Session
	// Services limits the session to these services; nil means all the
	// token may use. A non-nil empty list, or an empty name, is an error
	// rather than "all", so that a list that came out empty (say, from an
	// unset variable) cannot widen the session.
	Services []string
	// TTL is the session lifetime; zero for the server's default (its
	// default_session_ttl, capped by an agent's max_session_ttl). The
	// server refuses one above the token's maximum.
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
	// TempDir holds the CA files while the child runs; os.TempDir() if
	// empty. At start, the launcher removes the CA files of its own (same
	// user) that launchers no longer alive left there.
	TempDir string
	// Transport, if set, carries the management API calls (tests); the
	// default uses no proxy. Redirects are never followed.
	Transport http.RoundTripper
	// InsecureHTTP allows plain http:// to a management API that is not
	// on loopback ($AGENT_VAULT_INSECURE_HTTP=1); refused otherwise.
	InsecureHTTP bool
	// Confine confines the command and everything it starts (see
	// ConfineMode; Linux); ConfineOff by default.
	Confine ConfineMode
	// ConfineHide names more files or directories (absolute paths) the
	// confined command must not see, besides the broker's own.
	ConfineHide []string

	// secretFiles are the token files this launch read (hidden under
	// --confine).
	secretFiles []string
}

// Run creates a leased session (or takes cfg.Session), runs the command in
// it, renewing the lease meanwhile, and revokes the session it created.
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
	if cfg.Token == "" && cfg.Session == nil {
		return ExitSetup, errors.New("no token")
	}
	if cfg.TTL < 0 {
		return ExitSetup, errors.New("ttl must not be negative")
	}
	if cfg.Services != nil && len(cfg.Services) == 0 {
		return ExitSetup, errors.New("empty list of services: name at least one, or leave it nil for all services")
	}
	for _, s := range cfg.Services {
		if strings.TrimSpace(s) == "" {
			return ExitSetup, errors.New("empty service name in the list of services")
		}
	}
	var opts []apiclient.Option
	if cfg.Transport != nil {
		opts = append(opts, apiclient.WithTransport(cfg.Transport))
	}
	opts = append(opts, apiclient.WithAddrSource(cfg.AddrSource), apiclient.WithInsecureHTTP(cfg.InsecureHTTP))
	token := cfg.Token
	if cfg.Session != nil {
		token = "" // a session handed over needs no API token
	}
	api, err := apiclient.New(cfg.Addr, token, opts...)
	if err != nil {
		return ExitSetup, err
	}

	// Resolve the command before minting a session, so a typo costs nothing.
	path, code, err := resolveCommand(cfg.Command[0], lookupEnv(cfg.Env, "PATH"))
	if err != nil {
		return code, err
	}
	if cfg.Confine == ConfineOff {
		// Not under --confine: the probe runs the command's binary
		// (node --version), which would run it outside the confinement.
		warnOldNode(ctx, &cfg, path)
	}
	removeStaleCAFiles(cfg.TempDir)

	// The child dies with the thread that started it (Pdeathsig, Linux):
	// this goroutine keeps that thread until the child is reaped. Under
	// --confine the child starts now, as the confinement stage.
	unlock := lockThreadForChild()
	defer unlock()
	var stage *confineStage
	if cfg.Confine != ConfineOff {
		// Before the session: a kernel that cannot confine costs none.
		if stage, err = startConfineStage(&cfg); err != nil {
			return ExitSetup, err
		}
		if stage != nil {
			defer stage.abort()
		} else {
			fmt.Fprintf(cfg.Stderr, "%s: warning: --confine=best-effort: nothing can be confined here; the command runs unconfined\n", cfg.ProgName)
		}
	}

	setupCtx, cancelSetup := context.WithCancel(ctx)
	defer cancelSetup()
	relay := &signalRelay{cancelSetup: cancelSetup}
	defer relay.listen(ctx)()

	var sess *apiwire.Session
	if cfg.Session != nil {
		if sess, err = externalSession(setupCtx, api, cfg.Session); err != nil {
			if sig := relay.interrupted(); sig != nil {
				return signalExitCode(sig), fmt.Errorf("interrupted by %v", sig)
			}
			return ExitSetup, err
		}
	} else {
		sess, err = api.CreateSession(setupCtx, apiwire.SessionRequest{Services: cfg.Services, TTL: formatTTL(cfg.TTL), Lease: true})
		// A session can come back with an error (a malformed answer): it
		// exists on the server all the same, so it is revoked too.
		if sess != nil {
			defer revoke(ctx, &cfg, api, sess.ID)
		}
		if err != nil {
			if sig := relay.interrupted(); sig != nil {
				return signalExitCode(sig), fmt.Errorf("interrupted by %v", sig)
			}
			return ExitSetup, fmt.Errorf("creating session: %w", err)
		}
		// Deferred after revoke, so it runs first: no renewal races the
		// revocation.
		stop, err := startRenewal(ctx, &cfg, api, sess)
		if err != nil {
			return ExitSetup, err
		}
		defer stop()
	}

	settings, cleanup, err := prepareChild(&cfg, api.Addr(), sess)
	defer cleanup()
	if err != nil {
		return ExitSetup, err
	}
	var cmd *exec.Cmd
	var launch func() (*os.Process, error)
	if stage != nil {
		childProxy, target, port, err := confinedProxy(settings.proxyURL)
		if err != nil {
			return ExitSetup, err
		}
		settings.proxyURL = childProxy
		plan, err := stage.plan(&cfg, path, childEnv(cfg.Env, settings), port)
		if err != nil {
			return ExitSetup, err
		}
		cmd = stage.cmd
		defer stage.stop()
		launch = func() (*os.Process, error) {
			proc, applied, err := stage.launch(plan, target)
			if err == nil {
				stage.report(&cfg, applied)
			}
			return proc, err
		}
	} else {
		cmd = &exec.Cmd{
			Path:        path,
			Args:        cfg.Command,
			Env:         childEnv(cfg.Env, settings),
			Stdin:       cfg.Stdin,
			Stdout:      cfg.Stdout,
			Stderr:      cfg.Stderr,
			SysProcAttr: childSysProcAttr(),
		}
		launch = func() (*os.Process, error) {
			if startHook != nil {
				startHook(cmd)
			}
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			return cmd.Process, nil
		}
	}
	sig, err := relay.start(ctx, launch)
	switch {
	case sig != nil:
		return signalExitCode(sig), fmt.Errorf("interrupted by %v", sig)
	case err != nil && ctx.Err() != nil:
		return ExitSetup, err
	case err != nil && stage != nil:
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

// revoke revokes the session the launcher minted, even if ctx is done:
// the session must not outlive the child. A session the server no longer
// knows counts as revoked.
func revoke(ctx context.Context, cfg *Config, api *apiclient.Client, id string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	err := api.RevokeSession(rctx, id)
	if err != nil && apiclient.StatusOf(err) != http.StatusNotFound {
		fmt.Fprintf(cfg.Stderr, "%s: warning: revoking session: %v (it stays valid until its lease lapses or it expires)\n", cfg.ProgName, err)
	}
}

// externalSession completes a session minted elsewhere: a bare token is
// looked up with GET /api/v1/session (authenticated with it).
func externalSession(ctx context.Context, api *apiclient.Client, given *apiwire.Session) (*apiwire.Session, error) {
	if given.ID != "" || given.ProxyURL != "" || given.CAPEM != "" {
		sess := *given
		return &sess, nil
	}
	sc, err := api.WithToken(given.Token)
	if err != nil {
		return nil, fmt.Errorf("session token: %w", err)
	}
	sess, err := sc.CurrentSession(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the session of the session token: %w", err)
	}
	sess.Token = given.Token // the server does not send it back
	return sess, nil
}

func (cfg *Config) setDefaults() {
	if cfg.ProgName == "" {
		cfg.ProgName = DefaultProgName
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	cfg.lockStderr()
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
}

// lockStderr serializes writes to a Stderr that is not a file: the lease
// renewal warns from its own goroutine while exec copies the child's
// stderr from another. A file is left as is, for the child to inherit
// (a terminal stays a terminal); concurrent writes to a file are safe.
func (cfg *Config) lockStderr() {
	if _, isFile := cfg.Stderr.(*os.File); isFile {
		return
	}
	lw := &lockedWriter{w: cfg.Stderr}
	if sameWriter(cfg.Stdout, cfg.Stderr) {
		cfg.Stdout = lw // exec shares one copier then; keep it one lock too
	}
	cfg.Stderr = lw
}

// sameWriter reports whether a and b are the same comparable writer.
func sameWriter(a, b io.Writer) bool {
	if a == nil || b == nil || reflect.TypeOf(a) != reflect.TypeOf(b) || !reflect.TypeOf(a).Comparable() {
		return false
	}
	return a == b
}

// lockedWriter is an io.Writer safe for concurrent use.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prepareChild validates the session and writes the CA files. cleanup
// removes whatever was written and must be called even on error.
func prepareChild(cfg *Config, base *url.URL, sess *apiwire.Session) (settings childSettings, cleanup func(), err error) {
	var files []*heldFile
	cleanup = func() {
		for _, f := range files {
			f.release()
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
	bundle, err := writeCAFile(cfg.TempDir, "bundle", joinPEM(roots, ourCA))
	if err != nil {
		return settings, cleanup, fmt.Errorf("writing CA bundle: %w", err)
	}
	files = append(files, bundle)
	// Node appends NODE_EXTRA_CA_CERTS to its own built-in roots, so it only
	// needs our CA; handing it the whole system bundle would just duplicate.
	nodeCA, err := writeCAFile(cfg.TempDir, "node", ourCA)
	if err != nil {
		return settings, cleanup, fmt.Errorf("writing CA file: %w", err)
	}
	files = append(files, nodeCA)
	wgetrc, err := writeWgetrc(cfg, bundle.path)
	if err != nil {
		return settings, cleanup, fmt.Errorf("writing WGETRC: %w", err)
	}
	files = append(files, wgetrc)

	return childSettings{
		proxyURL: proxyURL,
		// host:port rather than the bare host: a bare "127.0.0.1" would make
		// most clients bypass the proxy for every loopback service. Clients
		// that ignore ports in NO_PROXY then send management calls through
		// the proxy, which refuses them: that fails closed.
		noProxy:      hostPort(base),
		bundlePath:   bundle.path,
		nodeCAPath:   nodeCA.path,
		wgetrcPath:   wgetrc.path,
		placeholders: sess.Placeholders,
		dropNames:    sess.CredentialNames,
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

// startHook, if set (tests), sees the child's command just before it starts.
var startHook func(*exec.Cmd)

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

// start starts the child with launch unless the setup was interrupted, in which case it
// returns the interrupting signal. Holding the lock across Start means no
// signal can fall between "not interrupted" and "child known".
func (r *signalRelay) start(ctx context.Context, launch func() (*os.Process, error)) (os.Signal, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.caught != nil {
		return r.caught, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	proc, err := launch()
	if err != nil {
		return nil, err
	}
	r.proc = proc
	return nil, nil
}
