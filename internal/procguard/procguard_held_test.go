//go:build linux

package procguard

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/agentvault/caddy-agent-vault/internal/testenv"
)

// The wipe from outside: a child that holds a secret variable is
// examined by this (root) process through /proc/<child>/environ, which
// the child itself may not be able to read. The child runs this test
// binary, or a copy of it, with mode "hold" (see holdChild).
//
// Each case is a way the process can start that once left the value
// in place without a word: as another user, non-dumpable from exec
// (file capabilities, as for a Caddy binding :443 without root), with
// /proc read-only, and without /proc at all (where the wipe cannot
// work, and WipeResult must say so).
func TestSecretsLeaveEnvironOfHeldChild(t *testing.T) {
	if mode := os.Getenv("PROCGUARD_CHILD"); mode == "hold" {
		holdChild()
		return
	} else if mode == "remount" {
		remountChild(t)
		return
	}

	t.Run("root", func(t *testing.T) {
		h := runHeld(t, os.Args[0], nil, "")
		h.wantWiped(t)
	})
	t.Run("uid65534", func(t *testing.T) {
		requireRoot(t)
		h := runHeld(t, copyTestBinary(t), nobody(), "")
		h.wantWiped(t)
	})
	t.Run("uid65534-file-capabilities", func(t *testing.T) {
		requireRoot(t)
		setcap, err := exec.LookPath("setcap")
		if err != nil {
			testenv.Unavailable(t, "no setcap tool (libcap2-bin) to give the test binary file capabilities")
		}
		bin := copyTestBinary(t)
		if out, err := exec.Command(setcap, "cap_net_bind_service=+ep", bin).CombinedOutput(); err != nil {
			testenv.Unavailable(t, "setcap cap_net_bind_service=+ep: %v\n%s", err, out)
		}
		h := runHeld(t, bin, nobody(), "")
		// The premise: the capability was granted at exec, so the kernel
		// made the child non-dumpable before any of its code ran, and
		// its /proc files belong to root.
		const capNetBindService = 10
		if h.capEff&(1<<capNetBindService) == 0 {
			testenv.Unavailable(t, "the child did not get CAP_NET_BIND_SERVICE (CapEff %#x): no_new_privs or a nosuid mount?", h.capEff)
		}
		h.wantWiped(t)
	})
	t.Run("proc-read-only", func(t *testing.T) {
		requireRoot(t)
		h := runHeld(t, os.Args[0], nil, "ro")
		h.wantWiped(t)
	})
	t.Run("no-proc", func(t *testing.T) {
		requireRoot(t)
		h := runHeld(t, os.Args[0], nil, "none")
		// Without /proc/self/stat the block cannot be found: the value
		// stays, and WipeResult says so, by name.
		if !bytes.Contains(h.environ, []byte("AGENT_VAULT_MASTER_PASSWORD="+h.password)) {
			t.Errorf("/proc/<pid>/environ lacks the value, yet the wipe cannot have worked: %q", h.environ)
		}
		if h.wiped != "" || !strings.Contains(h.err, "AGENT_VAULT_MASTER_PASSWORD") || !strings.Contains(h.err, "/proc/self/stat") {
			t.Errorf("WipeResult() = [%s], %q; want nothing wiped and an error naming the variable and /proc/self/stat", h.wiped, h.err)
		}
		if h.got != h.password {
			t.Errorf("os.Getenv in the child = %q, want %q", h.got, h.password)
		}
	})
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "needs root: to start the child as another user, or in a mount namespace of its own, and to read its /proc files")
	}
}

func nobody() *syscall.Credential {
	return &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
}

// copyTestBinary copies this test binary into a directory uid 65534
// may enter (go test's own lies in a directory only its user may).
func copyTestBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "procguard-held")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "procguard.test")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// held is what runHeld learnt about its child.
type held struct {
	password string // the value the child was given
	environ  []byte // /proc/<child>/environ, read by this process
	wiped    string // WipeResult's names, comma-separated
	err      string // WipeResult's error, "" if none
	got      string // os.Getenv in the child
	capEff   uint64 // the child's effective capabilities
}

func (h *held) wantWiped(t *testing.T) {
	t.Helper()
	if bytes.Contains(h.environ, []byte(h.password)) {
		t.Errorf("/proc/<pid>/environ holds the value: %q", h.environ)
	}
	if want := "\x00AGENT_VAULT_MASTER_PASSWORD=" + strings.Repeat("\x00", len(h.password)+1); !bytes.Contains(h.environ, []byte(want)) {
		t.Errorf("/proc/<pid>/environ lacks %q: %q", want, h.environ)
	}
	if h.wiped != "AGENT_VAULT_MASTER_PASSWORD" || h.err != "" {
		t.Errorf("WipeResult() = [%s], %q; want [AGENT_VAULT_MASTER_PASSWORD], no error", h.wiped, h.err)
	}
	if h.got != h.password {
		t.Errorf("os.Getenv in the child = %q, want %q", h.got, h.password)
	}
}

// runHeld starts bin (a copy of this test binary) in mode "hold" with a
// secret variable, as cred (nil: this process's user), with /proc
// remounted as proc ("": untouched, "ro": read-only, "none": an empty
// tmpfs) in a mount namespace of its own; reads /proc/<pid>/environ
// once the child has said it is ready; then lets it exit.
func runHeld(t *testing.T, bin string, cred *syscall.Credential, proc string) *held {
	t.Helper()
	h := &held{password: randomValue(t, "pw")}
	mode := "hold"
	sys := &syscall.SysProcAttr{Credential: cred}
	if proc != "" {
		// The child unshares its mount namespace (os/exec makes it
		// private), remounts /proc there and re-executes itself (the pid
		// stays) in mode "hold".
		mode = "remount"
		sys.Unshareflags = syscall.CLONE_NEWNS
	}
	cmd := exec.Command(bin, "-test.run=^TestSecretsLeaveEnvironOfHeldChild$")
	cmd.Dir = filepath.Dir(bin)
	if cred != nil {
		cmd.Dir = "/"
	}
	cmd.Env = []string{
		"PROCGUARD_CHILD=" + mode,
		"PROCGUARD_PROC=" + proc,
		"AGENT_VAULT_MASTER_PASSWORD=" + h.password,
	}
	cmd.SysProcAttr = sys
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := false
	sc := bufio.NewScanner(stdout)
	var lines []string
	for !ready && sc.Scan() {
		line := sc.Text()
		lines = append(lines, line)
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "WIPED":
			h.wiped = v
		case "ERR":
			h.err = v
		case "GOT":
			h.got = v
		case "CAPEFF":
			h.capEff, _ = strconv.ParseUint(v, 16, 64)
		case "READY":
			ready = true
		}
	}
	if ready {
		h.environ, err = os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/environ")
	}
	stdin.Close()
	io.Copy(io.Discard, stdout)
	waitErr := cmd.Wait()
	if !ready || waitErr != nil {
		t.Fatalf("child: %v\nstdout:\n%s\nstderr:\n%s", waitErr, strings.Join(lines, "\n"), stderr.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// holdChild reports what procguard's init did, then waits for its
// parent to close stdin.
func holdChild() {
	wiped, err := WipeResult()
	var b strings.Builder
	b.WriteString("WIPED=" + strings.Join(wiped, ",") + "\n")
	if err != nil {
		b.WriteString("ERR=" + strings.ReplaceAll(err.Error(), "\n", " ") + "\n")
	}
	b.WriteString("GOT=" + os.Getenv("AGENT_VAULT_MASTER_PASSWORD") + "\n")
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(status)) {
			if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
				b.WriteString("CAPEFF=" + strings.TrimSpace(v) + "\n")
			}
		}
	}
	b.WriteString("READY\n")
	os.Stdout.WriteString(b.String())
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// remountChild runs in a mount namespace of its own: it remounts /proc
// as PROCGUARD_PROC says, then becomes the "hold" child (same pid).
func remountChild(t *testing.T) {
	switch os.Getenv("PROCGUARD_PROC") {
	case "ro":
		// MS_BIND with MS_REMOUNT changes this namespace's mount only.
		if err := syscall.Mount("", "/proc", "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
			t.Fatalf("remounting /proc read-only: %v", err)
		}
		if fd, err := syscall.Open("/proc/self/mem", syscall.O_RDWR, 0); err == nil {
			syscall.Close(fd)
			t.Fatal("/proc/self/mem opens for writing on a read-only /proc")
		}
	case "none":
		if err := syscall.Mount("none", "/proc", "tmpfs", 0, ""); err != nil {
			t.Fatalf("mounting a tmpfs on /proc: %v", err)
		}
	default:
		t.Fatalf("PROCGUARD_PROC=%q", os.Getenv("PROCGUARD_PROC"))
	}
	env := os.Environ()
	for i, kv := range env {
		if strings.HasPrefix(kv, "PROCGUARD_CHILD=") {
			env[i] = "PROCGUARD_CHILD=hold"
		}
	}
	t.Fatal(syscall.Exec(os.Args[0], os.Args, env))
}
