//go:build linux

package launcher

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/internal/testenv"
)

// requireConfine skips (fails, in strict runs) where the kernel cannot
// confine: the journeys below need user namespaces and Landlock.
func requireConfine(t *testing.T) {
	t.Helper()
	if landlockABI() < minLandlockABI {
		testenv.Unavailable(t, "--confine needs Landlock ABI >= %d", minLandlockABI)
	}
	if err := exec.Command("unshare", "-U", "-n", "true").Run(); err != nil {
		testenv.Unavailable(t, "--confine needs unprivileged user namespaces: %v", err)
	}
	if _, err := exec.LookPath("python3"); err != nil {
		testenv.Unavailable(t, "python3: %v", err)
	}
}

// TestConfineRunForwardsOnlyTheProxy runs a confined command in process
// (the stage is this test binary, re-executed): its proxy URL points at
// its own loopback, where the launcher forwards to the session proxy (a
// line echo server here), and the data dir reads as nothing.
func TestConfineRunForwardsOnlyTheProxy(t *testing.T) {
	requireConfine(t)
	proxy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	go func() {
		for {
			c, err := proxy.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Write([]byte("proxy saw " + line))
			}()
		}
	}()
	other, err := net.Listen("tcp", "127.0.0.1:0") // a host service the command must not reach
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	api := newFakeAPI(t)
	api.set(func(f *fakeAPI) { f.session.ProxyURL = "http://" + proxy.Addr().String() })
	home := t.TempDir()
	data := filepath.Join(home, ".local", "share", "agent-vault")
	os.MkdirAll(data, 0o700)
	os.WriteFile(filepath.Join(data, "admin.token"), []byte("the-admin-token"), 0o600)
	out := filepath.Join(t.TempDir(), "out")
	script := `
import os, socket, sys, urllib.parse
u = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
res = [u.hostname + ":" + str(u.port)]
s = socket.create_connection((u.hostname, u.port), timeout=10)
s.sendall(b"hello\n")
res.append(s.makefile().readline().strip())
for port in (int(sys.argv[2]), int(sys.argv[3])):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=10)
        res.append("reached %d" % port)
    except OSError as e:
        res.append("refused")
try:
    open(sys.argv[4]).read()
    res.append("read the admin token")
except OSError as e:
    res.append("hidden")
open(sys.argv[1], "w").write("|".join(res))
`
	_, apiPort, _ := net.SplitHostPort(api.hostPort(t))
	_, otherPort, _ := net.SplitHostPort(other.Addr().String())
	code, stderr, err := launch(t, api, Config{
		Confine: ConfineStrict,
		Env:     []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home},
		Command: []string{"python3", "-c", script, out, apiPort, otherPort, filepath.Join(data, "admin.token")},
	})
	if code != 0 || err != nil {
		t.Fatalf("exit %d, %v, stderr %s", code, err, stderr)
	}
	got, _ := os.ReadFile(out)
	_, proxyPort, _ := net.SplitHostPort(proxy.Addr().String())
	want := "127.0.0.1:" + proxyPort + "|proxy saw hello|refused|refused|hidden"
	if string(got) != want {
		t.Errorf("confined command saw %q, want %q", got, want)
	}
	if creates, deletes := api.calls(); len(creates) != 1 || len(deletes) != 1 {
		t.Errorf("sessions: %d created, %d revoked", len(creates), len(deletes))
	}
}

// TestConfineExitCodes: the command's exit code and a command that does
// not exist come through the stage as they do without it.
func TestConfineExitCodes(t *testing.T) {
	requireConfine(t)
	api := newFakeAPI(t)
	if code, _, err := launch(t, api, Config{Confine: ConfineStrict, Command: []string{"sh", "-c", "exit 7"}}); code != 7 || err != nil {
		t.Errorf("exit 7: got %d, %v", code, err)
	}
	if code, _, err := launch(t, api, Config{Confine: ConfineStrict, Command: []string{"sh", "-c", "kill -TERM $$"}}); code != 128+15 || err != nil {
		t.Errorf("killed by SIGTERM: got %d, %v", code, err)
	}
	// Hidden under --confine-hide (a mode 000 directory): the launcher
	// found it, the command cannot execute it.
	dir := t.TempDir()
	tool := filepath.Join(dir, "tool")
	os.WriteFile(tool, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	code, stderr, _ := launch(t, api, Config{Confine: ConfineStrict, ConfineHide: []string{dir}, Command: []string{tool}})
	if code != ExitCannotExecute || !strings.Contains(stderr, "permission denied") {
		t.Errorf("command in a hidden dir: exit %d, stderr %q", code, stderr)
	}
	// An https:// proxy cannot be forwarded: refused, and the session revoked.
	api.set(func(f *fakeAPI) {
		f.session = apiwire.Session{ID: "s2", Token: testSessionToken, ProxyURL: "https://127.0.0.1:1", CAPEM: f.caPEM, LeaseTimeout: testLease}
	})
	if code, _, err := launch(t, api, Config{Confine: ConfineStrict, Command: []string{"true"}}); code != ExitSetup || err == nil || !strings.Contains(err.Error(), "http://") {
		t.Errorf("https proxy: exit %d, %v", code, err)
	}
}
