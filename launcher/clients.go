package launcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
)

// Settings for clients that the standard variables (proxyVars,
// caBundleVars) do not reach.

// wget (the GnuTLS build Debian ships) ignores SSL_CERT_FILE: it trusts
// only its ca_certificate / ca_directory settings. The launcher hands it
// a WGETRC of its own that keeps the user's wgetrc ($WGETRC, else
// ~/.wgetrc) and ends with ca_certificate = <bundle>; later lines win in
// a wgetrc. The user's proxy lines are commented out: a wgetrc proxy
// beats the proxy variables, use_proxy = off would bypass ours, and
// proxy_user / proxy_password would replace the session credentials in
// the proxy URL. The file never holds the proxy URL (which carries the
// session token): wget takes that from https_proxy.

// wgetrcDropped are the wgetrc commands the launcher comments out, as
// wget spells them once case, '_' and '-' are ignored.
var wgetrcDropped = map[string]bool{
	"httpproxy": true, "httpsproxy": true, "ftpproxy": true, "useproxy": true, "noproxy": true,
	"proxyuser": true, "proxypassword": true, "cacertificate": true,
}

// wgetrcCommand returns a wgetrc line's command name normalized as wget
// does (lower case, without '_' and '-'), or "" for a blank line or a
// comment.
func wgetrcCommand(line string) string {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return ""
	}
	name, _, _ := strings.Cut(line, "=")
	name = strings.ToLower(strings.TrimSpace(name))
	return strings.NewReplacer("_", "", "-", "").Replace(name)
}

// buildWgetrc returns the launcher's wgetrc: user's lines (those that
// would undo ours commented out), then ours.
func buildWgetrc(user []byte, bundlePath string) []byte {
	var b bytes.Buffer
	if len(user) > 0 {
		b.WriteString("# the user's wgetrc, kept by av-launch\n")
		for line := range strings.Lines(string(user)) {
			line = strings.TrimRight(line, "\r\n")
			if wgetrcDropped[wgetrcCommand(line)] {
				b.WriteString("# av-launch: set below or by the proxy variables: ")
			}
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	b.WriteString("# av-launch: trust the agent-vault CA bundle; use the proxy in https_proxy\n")
	b.WriteString("ca_certificate = " + bundlePath + "\n")
	b.WriteString("use_proxy = on\n")
	return b.Bytes()
}

// maxUserWgetrc bounds the user's wgetrc the launcher copies.
const maxUserWgetrc = 1 << 20

// userWgetrc reads the wgetrc wget would read for env: $WGETRC if set,
// else $HOME/.wgetrc. A missing file is no wgetrc (nil, nil).
func userWgetrc(env []string) ([]byte, error) {
	path := lookupEnv(env, wgetrcVar)
	if path == "" {
		home := lookupEnv(env, "HOME")
		if home == "" {
			return nil, nil
		}
		path = filepath.Join(home, ".wgetrc")
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if info.Size() > maxUserWgetrc {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxUserWgetrc)
	}
	return io.ReadAll(io.LimitReader(f, maxUserWgetrc))
}

// writeWgetrc writes the child's WGETRC next to the CA bundle. A user
// wgetrc that cannot be read costs a warning, not the launch: wget then
// still trusts the bundle, without the user's other settings.
func writeWgetrc(cfg *Config, bundlePath string) (*heldFile, error) {
	user, err := userWgetrc(cfg.Env)
	if err != nil {
		fmt.Fprintf(cfg.Stderr, "%s: warning: not keeping your wgetrc settings for wget: %v\n", cfg.ProgName, err)
		user = nil
	}
	return writeCAFile(cfg.TempDir, "wgetrc", buildWgetrc(user, bundlePath))
}

// Node before 22.21 (and 23, and 24 before 24.0) has no
// NODE_USE_ENV_PROXY: its fetch and https ignore the proxy variables and
// connect directly, so nothing it sends is brokered (and, trusting only
// its roots plus our CA, it fails on upstreams it cannot verify, or
// reaches them without credentials).

// nodeVersionTimeout bounds `node --version`.
const nodeVersionTimeout = 3 * time.Second

// isNodeCommand reports whether path names Node itself.
func isNodeCommand(path string) bool {
	base := filepath.Base(path)
	return base == "node" || base == "nodejs"
}

// nodeVersion runs path --version and parses "vMAJOR.MINOR.PATCH". It
// runs with an empty environment: nothing of the launcher's (tokens) and
// no NODE_OPTIONS that could load code.
func nodeVersion(ctx context.Context, path string) (major, minor int, raw string, err error) {
	ctx, cancel := context.WithTimeout(ctx, nodeVersionTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.Env = []string{}
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, "", err
	}
	raw = strings.TrimSpace(string(out))
	major, minor, ok := parseNodeVersion(raw)
	if !ok {
		return 0, 0, raw, errors.New("unrecognized node --version output")
	}
	return major, minor, raw, nil
}

// parseNodeVersion parses "v20.20.2" into 20, 20.
func parseNodeVersion(s string) (major, minor int, ok bool) {
	rest, found := strings.CutPrefix(s, "v")
	if !found {
		return 0, 0, false
	}
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || major < 0 || minor < 0 {
		return 0, 0, false
	}
	return major, minor, true
}

// nodeHonoursEnvProxy reports whether Node major.minor reads
// NODE_USE_ENV_PROXY: 22.21 and later 22s, and 24 on.
func nodeHonoursEnvProxy(major, minor int) bool {
	return major >= 24 || (major == 22 && minor >= 21)
}

// warnOldNode warns once, on cfg.Stderr, when the command is a Node that
// ignores the proxy variables. A Node whose version cannot be read gets
// no warning (it will fail on its own).
func warnOldNode(ctx context.Context, cfg *Config, path string) {
	if !isNodeCommand(path) {
		return
	}
	major, minor, raw, err := nodeVersion(ctx, path)
	if err != nil || nodeHonoursEnvProxy(major, minor) {
		return
	}
	fmt.Fprintf(cfg.Stderr, "%s: warning: node %s ignores HTTPS_PROXY for fetch/https (NODE_USE_ENV_PROXY needs Node >= 22.21 or >= 24): "+
		"its requests bypass agent-vault and get no credentials; use Node >= 22.21, or a client that honours the proxy\n",
		cfg.ProgName, apiclient.Printable(raw, 40))
}
