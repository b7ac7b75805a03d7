package e2etest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/testenv"
)

// The --confine journeys: an agent run with `av-launch --confine` reaches
// its upstream through the proxy with the credential injected, and
// nothing else: not the upstream directly, not the management API, not
// a UDP listener on the host's loopback, not the broker's files, not
// the processes around it. Each check runs in the command and in a
// grandchild, and prints one line the test asserts on.

// confineProbe is the shell script the confined command runs. It gets
// its targets from the environment and prints "name: ok|FAIL detail".
const confineProbe = `
check() { name=$1; shift; if out=$("$@" 2>&1); then echo "$name: FAIL (succeeded) $out"; else echo "$name: ok $(echo "$out" | head -c 200 | tr '\n' ' ')"; fi; }
echo "via-proxy: $(curl -sS --max-time 20 --fail-with-body https://$UP/user 2>&1)"
check direct-curl curl -sSk --noproxy '*' --max-time 20 https://$UP/user
check direct-socket python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=20)" $UP_PORT
check management-api python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=20)" $API_PORT
check admin-token cat $DATA/admin.token
check agent-token cat $DATA/agent.token
check data-dir ls $DATA
check launcher-environ cat /proc/$PPID_OF_AGENT/environ
check server-root ls /proc/$SERVER_PID/root/
check server-signal kill -0 $SERVER_PID
echo "unmount: $(unshare -U -m --propagation unchanged umount $DATA 2>&1)"
echo "remount-rw: $(unshare -U -m --propagation unchanged mount -o remount,rw $DATA 2>&1)"
echo "cwd-inside: $(cd $DATA 2>&1 && cat admin.token)"
check vsock python3 -c "import socket; socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)"
echo "tiocsti: $(python3 -c "
import fcntl, os, termios
m, s = os.openpty()
try:
    fcntl.ioctl(s, termios.TIOCSTI, b'x'); print('pushed input')
except OSError as e:
    print('refused' if e.errno == 1 else 'errno %d' % e.errno)
")"
echo "inherited-fds: $(python3 -c "
import os
print(sorted(os.readlink('/proc/self/fd/' + f) for f in os.listdir('/proc/self/fd') if int(f) > 2 and os.path.exists('/proc/self/fd/' + f)))
")"
python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'confined', ('127.0.0.1', int(sys.argv[1])))" $UDP_PORT 2>&1; echo "udp-sent: $?"
`

// confineSetup starts a server and an upstream with a credential bound
// to it, and a UDP listener on the host's loopback.
func confineSetup(t *testing.T) (*server, *upstream, *net.UDPConn) {
	t.Helper()
	for _, tool := range []string{"curl", "python3", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, "the --confine journeys need %s (make deps)", tool)
		}
	}
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	return s, up, udp
}

// probeEnv is what confineProbe reads.
func probeEnv(s *server, up *upstream, udp *net.UDPConn, dataDir string) []string {
	_, upPort, _ := net.SplitHostPort(up.hostPort())
	_, apiPort, _ := net.SplitHostPort(s.apiAddr)
	return []string{
		"UP=" + up.hostPort(), "UP_PORT=" + upPort, "API_PORT=" + apiPort, "DATA=" + dataDir,
		"SERVER_PID=" + strconv.Itoa(s.cmd.Process.Pid),
		"UDP_PORT=" + strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port),
	}
}

// assertConfined checks confineProbe's lines, and that nothing reached
// the host's UDP listener: the test sends its own datagram after the
// probe ran, and it must be the first to arrive.
func assertConfined(t *testing.T, where, out string, up *upstream, udp *net.UDPConn, strict bool) {
	t.Helper()
	mustContain(t, where+": via proxy", out, "via-proxy: "+`{"login":"octocat"`)
	got := up.last(t)
	if got.Header.Get("Authorization") != "Bearer "+githubSecret {
		t.Errorf("%s: upstream got Authorization %q", where, got.Header.Get("Authorization"))
	}
	checks := []string{"direct-curl", "direct-socket", "management-api"}
	if strict {
		checks = append(checks, "admin-token", "agent-token", "data-dir", "launcher-environ", "server-root", "server-signal", "vsock")
		// From a user namespace of its own the command holds every
		// capability, so what refuses these is the Landlock domain (the
		// error comes from umount and mount, not from unshare).
		for _, op := range []string{"unmount: umount:", "remount-rw: mount:"} {
			if line := lineOf(out, strings.Split(op, " ")[0]); !strings.HasPrefix(line, op) || strings.Contains(line, "unshare:") {
				t.Errorf("%s: %s", where, line)
			}
		}
		if line := lineOf(out, "cwd-inside:"); strings.Contains(line, "ava_") {
			t.Errorf("%s: the data dir was readable from inside it: %s", where, line)
		}
		// A pty's input cannot be pushed (the user's terminal would run it).
		mustContain(t, where+": TIOCSTI", out, "tiocsti: refused")
		// Nothing the launcher inherited reaches the command: python's
		// own descriptors only (none is a directory or a socket).
		if line := lineOf(out, "inherited-fds:"); strings.Contains(line, "socket:") || strings.Contains(line, "/data") {
			t.Errorf("%s: descriptors from outside reached the command: %s", where, line)
		}
	}
	for _, name := range checks {
		if !strings.Contains(out, "\n"+name+": ok") && !strings.HasPrefix(out, name+": ok") {
			t.Errorf("%s: %s was not refused:\n%s", where, name, lineOf(out, name+":"))
		}
	}
	mustNotContain(t, where+": output", out, githubSecret)
	if strict {
		probe, _ := net.DialUDP("udp", nil, udp.LocalAddr().(*net.UDPAddr))
		probe.Write([]byte("control"))
		probe.Close()
		udp.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		n, _, err := udp.ReadFromUDP(buf)
		if err != nil || string(buf[:n]) != "control" {
			t.Errorf("%s: the host's UDP listener got %q (%v) first, want the test's own datagram", where, buf[:n], err)
		}
	}
}

func lineOf(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return "(no line " + prefix + ")"
}

// TestConfineJourney: a developer runs an agent with --confine, on the
// local agent's token (the default, from the data dir).
func TestConfineJourney(t *testing.T) {
	s, up, udp := confineSetup(t)
	home := t.TempDir()
	env := append(probeEnv(s, up, udp, s.dataDir), "HOME="+home, "AGENT_VAULT_DATA_DIR="+s.dataDir)

	// Descriptors av-launch inherits (here the data dir and a
	// connection to the management API, at fds 3 to 6) must not reach
	// the command.
	dataFD, err := os.Open(s.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer dataFD.Close()
	apiConn, err := net.Dial("tcp", s.apiAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer apiConn.Close()
	apiFD, _ := apiConn.(*net.TCPConn).File()
	defer apiFD.Close()
	inherited := []*os.File{dataFD, apiFD, dataFD, apiFD}

	// The command itself, and a grandchild two shells down.
	for _, argv := range [][]string{
		{"sh", "-c", "PPID_OF_AGENT=$PPID; export PPID_OF_AGENT; " + confineProbe},
		{"sh", "-c", "PPID_OF_AGENT=$PPID sh -c 'sh -c \"$0\"' \"$1\"", "sh", confineProbe},
	} {
		start := time.Now()
		out, errOut, code := s.launchFiles(t, env, nil, inherited, []string{"--confine"}, argv...)
		t.Logf("confined run took %v", time.Since(start))
		if code != 0 {
			t.Fatalf("av-launch --confine: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
		}
		assertConfined(t, "depth "+strconv.Itoa(len(argv)), out, up, udp, true)
		if errOut != "" {
			t.Errorf("strict --confine wrote to stderr: %s", errOut)
		}
	}

	// A service listening on a unix socket in the user's runtime dir
	// (the user's D-Bus, systemd, a rootless Docker: each would run a
	// command outside) is out of reach.
	runtimeDir := t.TempDir()
	bus, err := net.Listen("unix", filepath.Join(runtimeDir, "bus"))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	out, errOut, code := s.launchRaw(t, append(env, "XDG_RUNTIME_DIR="+runtimeDir), nil, []string{"--confine"},
		"python3", "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])", filepath.Join(runtimeDir, "bus"))
	if code == 0 {
		t.Errorf("the confined command connected to $XDG_RUNTIME_DIR/bus: %s %s", out, errOut)
	}
	own, err := net.Dial("unix", filepath.Join(runtimeDir, "bus"))
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	first, err := bus.Accept()
	if err != nil {
		t.Fatal(err)
	}
	own.Write([]byte("test"))
	first.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4)
	if n, _ := io.ReadFull(first, buf); string(buf[:n]) != "test" {
		t.Errorf("the bus accepted another connection before the test's own (it read %q)", buf[:n])
	}
	first.Close()

	// A token file from a data dir the launcher's environment does not
	// name (the server runs with its own): the whole dir is hidden.
	out, errOut, code = s.launchRaw(t, []string{"HOME=" + home}, nil, []string{"--confine", "--token-file", filepath.Join(s.dataDir, "agent.token")},
		"sh", "-c", "cat "+filepath.Join(s.dataDir, "admin.token")+"; ls "+filepath.Join(s.dataDir, "caddy"))
	if code == 0 || strings.Contains(out, "ava_") {
		t.Errorf("--token-file from the data dir: the data dir was readable: exit %d %q %s", code, out, errOut)
	}

	// Started from inside the data dir, or with a directory on stdin:
	// either would reach what the mounts cover. Refused before any
	// session exists.
	before := s.sessionCount(t)
	for _, how := range []string{"cwd", "stdin"} {
		cmd := exec.Command(bin("av-launch"), "--addr", "http://"+s.apiAddr, "--confine", "--", "cat", "admin.token")
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
		if how == "cwd" {
			cmd.Dir = s.dataDir
		} else {
			dir, _ := os.Open(s.dataDir)
			defer dir.Close()
			cmd.Stdin = dir
		}
		outB, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || strings.Contains(string(outB), "ava_") {
			t.Errorf("--confine with the data dir as %s: %v %s", how, err, outB)
		}
	}
	if after := s.sessionCount(t); after != before {
		t.Errorf("refused launches created sessions (%d -> %d)", before, after)
	}

	// AGENT_VAULT_CONFINE=1 is the same as --confine; --confine=false wins.
	out, errOut, code = s.launchRaw(t, append(env, "AGENT_VAULT_CONFINE=1"), nil, nil,
		"python3", "-c", "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=20)", strings.Split(s.apiAddr, ":")[1])
	if code == 0 || !strings.Contains(errOut, "Connection refused") {
		t.Errorf("AGENT_VAULT_CONFINE=1: the management API was reachable: exit %d %s %s", code, out, errOut)
	}
	out, errOut, code = s.launchRaw(t, append(env, "AGENT_VAULT_CONFINE=1"), nil, []string{"--confine=false"}, "cat", filepath.Join(s.dataDir, "agent.token"))
	if tok, _ := os.ReadFile(filepath.Join(s.dataDir, "agent.token")); code != 0 || out != string(tok) {
		t.Errorf("--confine=false under AGENT_VAULT_CONFINE=1: exit %d, read %d bytes of the token file: %s", code, len(out), errOut)
	}

	// --confine-hide hides more; a command inside a hidden path is not found.
	extra := t.TempDir()
	os.WriteFile(filepath.Join(extra, "id_ed25519"), []byte("private key"), 0o600)
	out, errOut, code = s.launchRaw(t, env, nil, []string{"--confine", "--confine-hide", extra}, "cat", filepath.Join(extra, "id_ed25519"))
	if code == 0 || strings.Contains(out, "private key") {
		t.Errorf("--confine-hide: read the hidden file: exit %d %q %s", code, out, errOut)
	}
	_, errOut, code = s.launchRaw(t, env, nil, []string{"--confine", "--confine-hide", "relative/path"}, "true")
	if code != 2 || !strings.Contains(errOut, "invalid value for flag -confine-hide") {
		t.Errorf("--confine-hide relative: exit %d %s", code, errOut)
	}
}

// TestConfineUnprivileged: the same as a user without any privilege
// (uid 65534): no root and no setuid helper is needed.
func TestConfineUnprivileged(t *testing.T) {
	if os.Getuid() != 0 {
		testenv.Unavailable(t, "switching to uid 65534 needs root")
	}
	s, up, udp := confineSetup(t)
	// A data dir of the user's own, holding a copy of the agent token.
	dir, err := os.MkdirTemp("", "agent-vault-confine-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tok, err := os.ReadFile(filepath.Join(s.dataDir, "agent.token"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"agent.token": tok, "admin.token": []byte("not-the-real-admin-token")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chown(filepath.Join(dir, name), 65534, 65534)
	}
	os.Chown(dir, 65534, 65534)
	os.Chmod(dir, 0o700)
	env := append(probeEnv(s, up, udp, dir), "HOME="+dir, "AGENT_VAULT_DATA_DIR="+dir)
	out, errOut, code := s.launchRaw(t, env, &syscall.Credential{Uid: 65534, Gid: 65534}, []string{"--confine"},
		"sh", "-c", "PPID_OF_AGENT=$PPID; export PPID_OF_AGENT; id -u; "+confineProbe)
	if code != 0 {
		t.Fatalf("av-launch --confine as uid 65534: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if !strings.HasPrefix(out, "65534\n") {
		t.Errorf("the command did not run as uid 65534: %q", lineOf(out, ""))
	}
	assertConfined(t, "uid 65534", out, up, udp, true)
}

// TestConfineRefusedWithoutSupport: where the kernel cannot confine (no
// user namespaces here: the test runs av-launch in a user namespace
// whose max_user_namespaces is 0), --confine refuses before it creates
// a session; --confine=best-effort runs under Landlock alone and says
// what is missing.
func TestConfineRefusedWithoutSupport(t *testing.T) {
	s, up, udp := confineSetup(t)
	home := t.TempDir()
	env := append(probeEnv(s, up, udp, s.dataDir), "HOME="+home, "AGENT_VAULT_DATA_DIR="+s.dataDir)
	noUserNS := func(flags ...string) []string {
		// unshare(1) maps us to root in a fresh user namespace, where
		// the limit can be set to 0 for everything below it.
		return append([]string{"unshare", "-U", "-r", "sh", "-c", `echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"`, "sh", bin("av-launch")}, flags...)
	}
	before := s.sessionCount(t)

	argv := noUserNS("--addr", "http://"+s.apiAddr, "--confine", "--", "true")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	outB, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(outB), "cannot confine") || !strings.Contains(string(outB), "best-effort") {
		t.Fatalf("--confine without user namespaces: %v\n%s", err, outB)
	}
	if after := s.sessionCount(t); after != before {
		t.Errorf("a refused --confine created a session (%d -> %d)", before, after)
	}

	argv = noUserNS("--addr", "http://"+s.apiAddr, "--confine=best-effort", "--", "sh", "-c", "PPID_OF_AGENT=$PPID; export PPID_OF_AGENT; "+confineProbe)
	cmd = exec.Command(argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("--confine=best-effort: %v\nstdout: %s\nstderr: %s", err, o.String(), e.String())
	}
	mustContain(t, "best-effort warning", e.String(), "WARNING: --confine=best-effort: the command is only partly confined")
	mustContain(t, "best-effort warning", e.String(), "missing: user namespaces")
	// Landlock alone still refuses TCP to any port but the proxy's.
	assertConfined(t, "best-effort", o.String(), up, udp, false)
	t.Logf("best-effort stderr:\n%s", e.String())
}

// sessionCount is the number of sessions the server lists.
func (s *server) sessionCount(t *testing.T) int {
	t.Helper()
	var list struct {
		Sessions []map[string]any `json:"sessions"`
	}
	s.mustAPI("GET", "/api/v1/sessions", nil, 200, &list)
	return len(list.Sessions)
}
