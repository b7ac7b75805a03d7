//go:build linux

package procguard

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// The check runs in a fresh child: importing procguard alone must have
// made it non-dumpable before any test code ran.
func TestNonDumpable(t *testing.T) {
	if os.Getenv("PROCGUARD_CHILD") == "1" {
		if Dumpable() {
			os.Exit(3) // importing the package made the process non-dumpable already
		}
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNonDumpable$")
	cmd.Env = append(os.Environ(), "PROCGUARD_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func randomValue(t *testing.T, prefix string) string {
	b := make([]byte, 16)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// runChild runs this test binary's test named run in a fresh process
// with exactly env (os.StartProcess passes duplicates through, which
// os/exec would remove) and returns its output.
func runChild(t *testing.T, run string, env []string) (string, error) {
	t.Helper()
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	p, err := os.StartProcess(os.Args[0], []string{os.Args[0], "-test.run=^" + run + "$", "-test.v"}, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{nil, out, out},
	})
	if err != nil {
		t.Fatal(err)
	}
	state, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(out.Name())
	if !state.Success() {
		return string(data), fmt.Errorf("child %s", state)
	}
	return string(data), nil
}

// The secret variables' values are gone from /proc/self/environ, yet
// os.Getenv and os.Environ (hence child processes, and Caddy's
// {env.NAME} at a config reload) still give them; other variables are
// untouched.
func TestSecretsLeaveProcEnviron(t *testing.T) {
	if os.Getenv("PROCGUARD_CHILD") == "environ" {
		checkChildEnviron(t)
		return
	}
	if os.Getenv("PROCGUARD_CHILD") == "print" {
		// The grandchild reads the value, and its own environ file
		// no longer shows it under the variable's name (the test
		// passes it along under another name, to check).
		environ, err := os.ReadFile("/proc/self/environ")
		v := os.Getenv("AGENT_VAULT_MASTER_PASSWORD")
		fmt.Printf("GOT[%s] SHOWN[%v] %v\n", v, bytes.Contains(environ, []byte("AGENT_VAULT_MASTER_PASSWORD="+v+"\x00")), err)
		return
	}
	password, token := randomValue(t, "pw"), randomValue(t, "tok")
	shadowed := randomValue(t, "shadowed") // a second AGENT_VAULT_MASTER_PASSWORD line
	other := randomValue(t, "other")
	env := []string{
		"PROCGUARD_CHILD=environ",
		"PATH=" + os.Getenv("PATH"),
		"AGENT_VAULT_MASTER_PASSWORD=" + password,
		"PROCGUARD_OTHER=" + other,
		"AGENT_VAULT_ADMIN_TOKEN=" + token,
		"VAULT_TOKEN=", // set but empty
		"AGENT_VAULT_MASTER_PASSWORD=" + shadowed,
		"PROCGUARD_WANT_PASSWORD=" + password,
		"PROCGUARD_WANT_TOKEN=" + token,
		"PROCGUARD_WANT_OTHER=" + other,
		"PROCGUARD_WANT_SHADOWED=" + shadowed,
	}
	out, err := runChild(t, "TestSecretsLeaveProcEnviron", env)
	if err != nil || !strings.Contains(out, "PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// checkChildEnviron runs in the child of TestSecretsLeaveProcEnviron.
func checkChildEnviron(t *testing.T) {
	password := os.Getenv("PROCGUARD_WANT_PASSWORD")
	token := os.Getenv("PROCGUARD_WANT_TOKEN")
	other := os.Getenv("PROCGUARD_WANT_OTHER")
	shadowed := os.Getenv("PROCGUARD_WANT_SHADOWED")
	// Values a test could confuse with each other are never empty.
	if password == "" || token == "" || other == "" || shadowed == "" {
		t.Fatal("the parent did not pass the expected values")
	}
	environ, err := os.ReadFile("/proc/self/environ")
	if err != nil {
		t.Fatal(err)
	}
	// The wanted values also sit in PROCGUARD_WANT_*: count occurrences.
	for name, v := range map[string]string{"password": password, "token": token, "shadowed": shadowed} {
		if n := bytes.Count(environ, []byte(v)); n != 1 {
			t.Errorf("/proc/self/environ holds the %s %d times, want once (in PROCGUARD_WANT_*)", name, n)
		}
	}
	for _, want := range []string{
		"\x00AGENT_VAULT_MASTER_PASSWORD=" + strings.Repeat("\x00", len(password)+1),
		"\x00AGENT_VAULT_ADMIN_TOKEN=" + strings.Repeat("\x00", len(token)+1),
		"\x00AGENT_VAULT_MASTER_PASSWORD=" + strings.Repeat("\x00", len(shadowed)+1),
		"\x00PROCGUARD_OTHER=" + other + "\x00",
		"\x00VAULT_TOKEN=\x00",
	} {
		if !bytes.Contains(environ, []byte(want)) {
			t.Errorf("/proc/self/environ lacks %q:\n%q", want, environ)
		}
	}

	// Both values were removed, the empty VAULT_TOKEN counts as neither.
	if wiped, err := WipeResult(); !slices.Equal(wiped, []string{"AGENT_VAULT_MASTER_PASSWORD", "AGENT_VAULT_ADMIN_TOKEN"}) || err != nil {
		t.Errorf("WipeResult() = %q, %v", wiped, err)
	}

	// Go still reads the values, the first of duplicates as always.
	if got := os.Getenv("AGENT_VAULT_MASTER_PASSWORD"); got != password {
		t.Errorf("os.Getenv(AGENT_VAULT_MASTER_PASSWORD) = %q, want %q", got, password)
	}
	if got := os.Getenv("AGENT_VAULT_ADMIN_TOKEN"); got != token {
		t.Errorf("os.Getenv(AGENT_VAULT_ADMIN_TOKEN) = %q, want %q", got, token)
	}
	if got, ok := os.LookupEnv("VAULT_TOKEN"); !ok || got != "" {
		t.Errorf("os.LookupEnv(VAULT_TOKEN) = %q, %v; want set and empty", got, ok)
	}
	if got := os.Getenv("PROCGUARD_OTHER"); got != other {
		t.Errorf("os.Getenv(PROCGUARD_OTHER) = %q, want %q", got, other)
	}
	environList := os.Environ()
	for _, want := range []string{"AGENT_VAULT_MASTER_PASSWORD=" + password, "AGENT_VAULT_ADMIN_TOKEN=" + token} {
		if !slices.Contains(environList, want) {
			t.Errorf("os.Environ() lacks %q", want)
		}
	}

	// A child process (how `agent-vault server` re-executes itself)
	// inherits the value, and forgets it in turn.
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecretsLeaveProcEnviron$")
	cmd.Env = append(os.Environ(), "PROCGUARD_CHILD=print")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "GOT["+password+"] SHOWN[false] <nil>") {
		t.Errorf("grandchild: %v\n%s", err, out)
	}
}

// Without secret variables nothing is touched.
func TestNoSecretsNoChange(t *testing.T) {
	if os.Getenv("PROCGUARD_CHILD") == "plain" {
		environ, err := os.ReadFile("/proc/self/environ")
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Join(append(os.Environ(), ""), "\x00")
		if string(environ) != want {
			t.Errorf("/proc/self/environ = %q, want %q", environ, want)
		}
		if wiped, err := WipeResult(); wiped != nil || err != nil {
			t.Errorf("WipeResult() = %q, %v; want nothing", wiped, err)
		}
		return
	}
	out, err := runChild(t, "TestNoSecretsNoChange", []string{"PROCGUARD_CHILD=plain", "A=1", "B=two"})
	if err != nil || !strings.Contains(out, "PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// The bounds read from /proc/self/stat are those of the block the
// kernel shows as /proc/self/environ.
func TestEnvBlockBounds(t *testing.T) {
	start, end, err := envBlock()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	block := make([]byte, end-start)
	if _, err := mem.ReadAt(block, int64(start)); err != nil {
		t.Fatal(err)
	}
	environ, err := os.ReadFile("/proc/self/environ")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(block, environ) {
		t.Errorf("memory at [%#x, %#x) = %q, /proc/self/environ = %q", start, end, block, environ)
	}
}

func TestValueRanges(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []byteRange
	}{
		{"A=1\x00S=secret\x00B=2\x00", []byteRange{{6, 6}}},
		{"S=x\x00SS=y\x00S\x00S=\x00XS=z\x00S=last", []byteRange{{2, 1}, {21, 4}}},
		{"", nil},
		{"S", nil},
		{"S=", nil},
	} {
		if got := valueRanges([]byte(tc.in), "S"); !slices.Equal(got, tc.want) {
			t.Errorf("valueRanges(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseUint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"140734464998091", 140734464998091, true},
		{"0", 0, true},
		{"", 0, false},
		{"12a", 0, false},
		{"-1", 0, false},
		{"12345678901234567890", 0, false}, // might overflow: refused
	} {
		got, ok := parseUint([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseUint(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// Both ways of writing our own memory work, and the fallback is used
// when process_vm_* fail; when both fail the error names both.
func TestSelfMemory(t *testing.T) {
	buf := make([]byte, 32) // on the heap, which does not move
	copy(buf, "0123456789abcdef0123456789abcdef")
	addr := uintptr(unsafe.Pointer(&buf[8]))

	if err := vmTransfer(os.Getpid(), true, addr, []byte("VMVM")); err != nil {
		t.Fatalf("process_vm_writev: %v", err)
	}
	got := make([]byte, 4)
	if err := vmTransfer(os.Getpid(), false, addr, got); err != nil || string(got) != "VMVM" {
		t.Fatalf("process_vm_readv: %q, %v", got, err)
	}

	m := newSelfMemory()
	defer m.close()
	m.vmErr = syscall.ENOSYS // as under a seccomp policy without them
	if err := m.write(addr+4, []byte("MEM!")); err != nil {
		t.Fatalf("write through /proc/self/mem: %v", err)
	}
	if err := m.read(addr, got); err != nil || string(got) != "VMVM" {
		t.Fatalf("read through /proc/self/mem: %q, %v", got, err)
	}
	if m.memFd < 0 {
		t.Error("/proc/self/mem was not used")
	}
	if want := "01234567VMVMMEM!0123456789abcdef"; string(buf[:len(want)]) != want {
		t.Errorf("memory = %q, want %q", buf, want)
	}
	runtime.KeepAlive(buf)

	failing := &selfMemory{pid: os.Getpid(), memFd: -1, vmErr: syscall.ENOSYS, memErr: syscall.EACCES}
	err := failing.write(addr, []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "process_vm_writev: "+syscall.ENOSYS.Error()) || !strings.Contains(err.Error(), "/proc/self/mem: "+syscall.EACCES.Error()) {
		t.Errorf("both failing: %v", err)
	}
	if buf[8] != 'V' {
		t.Error("a failed write changed memory")
	}
}

func TestWipeError(t *testing.T) {
	err := wipeFailure([]string{"A", "B"}, "why")
	if got, want := err.Error(), "still in /proc/<pid>/environ: A, B (why)"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if wipeFailure(nil, "why") != nil {
		t.Error("an error for no variables")
	}
}
