package launcher

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ConfineMode says whether and how strictly the child is confined
// (--confine, $AGENT_VAULT_CONFINE).
//
// Confined, the child and everything it starts run in their own user,
// network and mount namespaces, under a Landlock domain, with no
// capabilities and no_new_privs:
//   - the network namespace has only loopback, where the launcher
//     forwards one port to the session proxy: every other TCP connect
//     (the management API, the upstream directly, the host's loopback
//     services, the internet) and all UDP, DNS included, fail at once;
//   - the broker's files (data dir, token files, master password file,
//     Caddy's storage with the CA key, --confine-hide paths) are covered
//     by empty read-only mounts the child cannot remove;
//   - the Landlock domain keeps the child from tracing or reading
//     /proc/PID/{root,cwd,environ,fd} of any process outside it, and
//     from Landlock ABI 6 (Linux 6.12) from signalling one.
type ConfineMode int

const (
	// ConfineOff runs the child unconfined (the default).
	ConfineOff ConfineMode = iota
	// ConfineStrict refuses to start the child unless every part of the
	// confinement can be applied.
	ConfineStrict
	// ConfineBestEffort applies what the kernel offers and says on
	// stderr what is missing.
	ConfineBestEffort
)

// ConfineEnv sets the default of --confine: 1 (strict), best-effort or 0.
const ConfineEnv = "AGENT_VAULT_CONFINE"

// ParseConfineMode reads a --confine value or $AGENT_VAULT_CONFINE.
func ParseConfineMode(s string) (ConfineMode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "0", "false", "off", "no":
		return ConfineOff, nil
	case "1", "true", "on", "yes", "strict":
		return ConfineStrict, nil
	case "best-effort":
		return ConfineBestEffort, nil
	}
	return ConfineOff, errors.New(`use --confine (strict), --confine=best-effort or --confine=false`)
}

func (m ConfineMode) String() string {
	switch m {
	case ConfineStrict:
		return "strict"
	case ConfineBestEffort:
		return "best-effort"
	}
	return "off"
}

// confineFlag is --confine as a flag: bare means strict.
type confineFlag struct{ mode *ConfineMode }

func (f confineFlag) String() string {
	if f.mode == nil {
		return "off"
	}
	return f.mode.String()
}

func (f confineFlag) Set(s string) error {
	m, err := ParseConfineMode(s)
	if err != nil {
		return err
	}
	*f.mode = m
	return nil
}

func (f confineFlag) IsBoolFlag() bool { return true }

// pathList is a repeatable flag (--confine-hide).
type pathList []string

func (p *pathList) String() string { return strings.Join(*p, ",") }

func (p *pathList) Set(s string) error {
	if !filepath.IsAbs(s) {
		return errors.New("use an absolute path")
	}
	*p = append(*p, s)
	return nil
}

// confinePlan is what the confinement stage applies before it runs the
// command: computed by the launcher, carried to the stage as JSON.
type confinePlan struct {
	// Namespaces is false in best-effort mode when no user namespace
	// could be made: Landlock alone, without the mounts and the network
	// namespace.
	Namespaces bool `json:"namespaces"`
	// ListenPort is the port the stage listens on in its loopback for
	// the launcher to forward to the proxy (namespaces only).
	ListenPort int `json:"listen_port,omitempty"`
	// ConnectPort is the only TCP port the child may connect to under
	// Landlock alone (no network namespace); 0 for none.
	ConnectPort int `json:"connect_port,omitempty"`
	// Hide are covered by empty read-only mounts.
	Hide []hiddenPath `json:"hide,omitempty"`
	// Landlock requires the Landlock domain (strict mode).
	Landlock bool `json:"landlock"`
	// Seccomp requires the seccomp filter (strict mode).
	Seccomp bool `json:"seccomp"`
	// ProgName prefixes the stage's messages.
	ProgName string `json:"prog_name"`
	// Path, Args and Env are the command the stage executes.
	Path string   `json:"path"`
	Args []string `json:"args"`
	Env  []string `json:"env"`
}

// hiddenPath is a path to cover and the file it named when the
// launcher looked: the stage covers it only if it still names that
// file, so nothing can swap it (for a symbolic link, say) in between.
type hiddenPath struct {
	Path string `json:"path"`
	Dir  bool   `json:"dir"`
	Dev  uint64 `json:"dev"`
	Ino  uint64 `json:"ino"`
}

// hiddenPaths lists what the child must not read: the broker's data dir,
// the token and password files the launcher or the server use, Caddy's
// storage (where the PKI app keeps the CA key), the user's Vault token,
// the sockets of services that would run a command outside the
// confinement, and the --confine-hide paths. Symbolic links are resolved (a mount
// covers the target); paths that do not exist are skipped, and paths
// that hold the CA files the child needs are refused.
func hiddenPaths(cfg *Config) (dirs, files []string, err error) {
	getenv := func(name string) string { return lookupEnv(cfg.Env, name) }
	home := getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	candidates := []string{defaultTokenFile(getenv)}
	if dir := filepath.Dir(candidates[0]); candidates[0] != "" {
		candidates = append(candidates, dir)
	}
	for _, f := range cfg.secretFiles {
		candidates = append(candidates, f)
		// A token file given from a server's data dir (the server
		// may run with a data dir the launcher's environment does not
		// name): the whole dir goes, admin token and CA key included.
		if dir := filepath.Dir(f); looksLikeDataDir(dir) {
			candidates = append(candidates, dir)
		}
	}
	candidates = append(candidates, getenv("AGENT_VAULT_MASTER_PASSWORD_FILE"), getenv("AGENT_VAULT_ADMIN_TOKEN_FILE"))
	if xdg := getenv("XDG_DATA_HOME"); filepath.IsAbs(xdg) {
		candidates = append(candidates, filepath.Join(xdg, "caddy"))
	}
	if home != "" {
		candidates = append(candidates, filepath.Join(home, ".local", "share", "caddy"), filepath.Join(home, ".vault-token"))
	}
	// Sockets through which a process outside would run commands or
	// reach the network for the agent: the container engines, the
	// user's systemd and D-Bus (systemd-run), the system bus, tmux and
	// screen servers, X11 (keystrokes into other windows), ssh-agent,
	// and the resolvers that would look names up (DNS out) for it.
	uid := strconv.Itoa(os.Getuid())
	runtimeDir := getenv("XDG_RUNTIME_DIR")
	if !filepath.IsAbs(runtimeDir) {
		runtimeDir = "/run/user/" + uid
	}
	candidates = append(candidates, runtimeDir, "/run/docker.sock", "/var/run/docker.sock",
		"/run/containerd/containerd.sock", "/run/podman/podman.sock", "/run/dbus", "/var/run/dbus",
		"/run/screen", "/tmp/.X11-unix", "/run/systemd/private",
		"/run/systemd/resolve/io.systemd.Resolve", "/run/nscd", "/var/run/nscd", "/run/avahi-daemon",
		getenv("SSH_AUTH_SOCK"), getenv("SCREENDIR"), unixPathOf(getenv("DBUS_SESSION_BUS_ADDRESS")),
		getenv("VSCODE_IPC_HOOK_CLI"))
	if home != "" {
		candidates = append(candidates, filepath.Join(home, ".screen"))
	}
	// tmux's socket directory is made now if absent (mode 0700, as tmux
	// makes it and accepts it): a server started after the launch puts
	// its socket there, under the cover.
	for _, dir := range []string{getenv("TMUX_TMPDIR"), os.TempDir(), "/tmp"} {
		if filepath.IsAbs(dir) {
			tdir := filepath.Join(dir, "tmux-"+uid)
			os.Mkdir(tdir, 0o700)
			candidates = append(candidates, tdir)
		}
	}
	if sock, _, _ := strings.Cut(getenv("TMUX"), ","); filepath.IsAbs(sock) {
		candidates = append(candidates, sock)
	}
	for _, p := range cfg.ConfineHide {
		if !filepath.IsAbs(p) {
			return nil, nil, fmt.Errorf("--confine-hide %q: use an absolute path", p)
		}
		if _, err := os.Lstat(p); err != nil {
			return nil, nil, fmt.Errorf("--confine-hide %s: %v", p, errors.Unwrap(err))
		}
		candidates = append(candidates, p)
	}
	tmp, err := filepath.EvalSymlinks(cfg.TempDir)
	if err != nil {
		return nil, nil, fmt.Errorf("temporary directory: %w", err)
	}
	for _, p := range candidates {
		if p == "" || p == "-" {
			continue
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue // absent: nothing to hide
		}
		info, err := os.Stat(real)
		if err != nil {
			continue
		}
		if real == "/" || within(tmp, real) {
			return nil, nil, fmt.Errorf("cannot hide %s from the command: it holds %s, where the command's CA files go", p, cfg.TempDir)
		}
		if info.IsDir() {
			dirs = appendNew(dirs, real)
		} else {
			files = appendNew(files, real)
		}
	}
	// A mount over a directory covers what is below it: mounting over
	// those too would fail, their paths being gone.
	covered := func(p string) bool {
		for _, d := range dirs {
			if p != d && within(p, d) {
				return true
			}
		}
		return false
	}
	dirs = slices.DeleteFunc(slices.Clone(dirs), covered)
	files = slices.DeleteFunc(files, covered)
	return dirs, files, nil
}

// unixPathOf returns the socket path of a D-Bus address
// ("unix:path=/run/user/1000/bus,guid=..."), "" for any other.
func unixPathOf(addr string) string {
	for _, part := range strings.Split(strings.TrimPrefix(addr, "unix:"), ",") {
		if p, ok := strings.CutPrefix(part, "path="); ok && strings.HasPrefix(addr, "unix:") {
			return p
		}
	}
	return ""
}

// looksLikeDataDir reports whether dir holds what an agent-vault server
// writes into its data dir.
func looksLikeDataDir(dir string) bool {
	for _, name := range []string{"admin.token", "instance.id", "state.db"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// confinedProxy returns the proxy URL the confined child uses (the
// stage's forwarded port on its own loopback) and the address the
// launcher forwards to. Only an http:// proxy can be forwarded this
// way: an https:// one would present a certificate for its own name.
func confinedProxy(proxyURL string) (childURL, target string, port int, err error) {
	u, err := url.Parse(proxyURL)
	if err != nil || u.Host == "" {
		return "", "", 0, errors.New("the session's proxy URL is malformed")
	}
	if u.Scheme != "http" {
		return "", "", 0, fmt.Errorf("--confine forwards only an http:// proxy, and the session's is %s://", u.Scheme)
	}
	target = u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "80")
	}
	_, ps, _ := net.SplitHostPort(target)
	if port, err = strconv.Atoi(ps); err != nil || port <= 0 || port > 65535 {
		return "", "", 0, errors.New("the session's proxy URL has a bad port")
	}
	u.Host = net.JoinHostPort("127.0.0.1", ps)
	return u.String(), target, port, nil
}
