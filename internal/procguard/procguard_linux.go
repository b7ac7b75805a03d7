//go:build linux

// Package procguard hardens a process that holds secrets. Importing it,
// in the package's init:
//
//   - makes the process non-dumpable (NonDumpable);
//   - removes the values of a few secret environment variables
//     (secretVars) from the process's initial environment block, which
//     is what /proc/<pid>/environ shows, while Go code (os.Getenv, and
//     so Caddy's {env.NAME} placeholders at every config reload) still
//     reads them (see forgetSecrets).
//
// WipeResult reports whether the values are gone: when they could not
// be removed, the process fails open, and the server says so in its
// log.
//
// It imports only syscall (and unsafe), so it is initialised among the
// very first packages, long before the rest of a large binary (Caddy's
// dependencies take tens of milliseconds) has run its own init.
package procguard

import (
	"syscall"
	"unsafe"
)

// Linux prctl options.
const (
	prSetDumpable = 4
	prGetDumpable = 3
)

// NonDumpable makes this process non-dumpable: another process of the
// same user (an agent) can then neither read /proc/<pid>/environ (where
// the master password or admin token may sit) or /proc/<pid>/mem, nor
// attach a debugger, and no core file is written. Only root, with
// CAP_SYS_PTRACE, still can. Safe to call more than once.
func NonDumpable() {
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0)
}

func init() {
	// The wipe goes first: its fallback, /proc/self/mem, is one a
	// non-dumpable process that is not root may no longer open (the
	// kernel hands the file to root). The two run microseconds apart.
	wipedVars, wipeErr = forgetSecrets()
	NonDumpable()
}

// Dumpable reports whether this process is dumpable (for tests).
func Dumpable() bool {
	r, _, _ := syscall.RawSyscall(syscall.SYS_PRCTL, prGetDumpable, 0, 0)
	return r != 0
}

// secretVars are the environment variables whose values forgetSecrets
// removes from /proc/self/environ: the ones agent-vault reads itself
// (the server's master password and admin token, the launcher's token)
// and the ones its documentation suggests for the external stores'
// credentials ({env.VAULT_TOKEN} and so on). A secret given under
// another name stays visible there to whoever may read the file (root,
// once the process is non-dumpable).
var secretVars = []string{
	"AGENT_VAULT_MASTER_PASSWORD",
	"AGENT_VAULT_ADMIN_TOKEN",
	"AGENT_VAULT_TOKEN",
	"VAULT_TOKEN",
	"VAULT_SECRET_ID",
	"INFISICAL_CLIENT_SECRET",
	"INFISICAL_TOKEN",
}

// forgetSecrets keeps each of secretVars readable by Go code but gone
// from /proc/self/environ, and records what it did for WipeResult.
//
// The kernel serves /proc/<pid>/environ from the process's memory: the
// block [env_start, env_end) (fields of /proc/<pid>/stat) on the initial
// stack, where execve put the environment. The Go runtime copied every
// entry out of it at start-up (goenvs_unix, with gostring), so
// os.Getenv, os.Environ, hence child processes, a re-exec and Caddy's
// {env.NAME} placeholders at every config reload, never read the block
// again. C's environ, in a cgo build, does point into it: each value is
// installed again with Setenv first, which in such a build also gives
// C's setenv its own copy (in a pure Go build it changes nothing). Then
// the value bytes of every NAME= entry in the block, duplicates
// included, are overwritten with zeros: /proc/<pid>/environ shows
// "NAME=" followed by as many NUL bytes as the value had (its length
// stays visible).
//
// The block is read and written with process_vm_readv/writev on our own
// pid, so the kernel, not a pointer conversion, checks that the
// addresses are mapped. Those need no /proc and work in a process that
// was non-dumpable from exec (file capabilities, as for a Caddy binding
// :443 as an ordinary user, or setuid/setgid), where /proc/self/mem
// belongs to root and cannot be opened. /proc/self/mem is the fallback,
// for a kernel or seccomp policy that refuses those calls. Whatever
// fails (no env_start/env_end in /proc/self/stat, no way to write the
// memory), nothing else changes, the values stay visible as before, and
// WipeResult names the variables left there.
//
// What it protects: the value can no longer be read through
// /proc/<pid>/environ, by root-run tools that collect environments (ps
// e, monitoring agents, crash and support-bundle collectors), nor by a
// same-user process should the process ever become dumpable again.
// What it does not: the value stays in the process's memory (reloads
// need it), so whoever can read that memory (ptrace or /proc/<pid>/mem:
// root with CAP_SYS_PTRACE; non-dumpable keeps same-user processes out)
// still reads it; and in the first milliseconds after execve, before
// this init runs, the file still holds it. A master password file
// (AGENT_VAULT_MASTER_PASSWORD_FILE) avoids both.
func forgetSecrets() (wiped []string, err error) {
	var names, valued []string // set; set with a value (as Go reads it)
	for _, name := range secretVars {
		if v, ok := syscall.Getenv(name); ok {
			names = append(names, name)
			if v != "" {
				valued = append(valued, name)
			}
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	start, end, err := envBlock()
	if err != nil {
		return nil, wipeFailure(valued, "finding the environment block in /proc/self/stat: "+err.Error())
	}
	if end-start > maxEnvBlock {
		return nil, wipeFailure(valued, "the environment block is larger than "+itoa(maxEnvBlock>>20)+" MiB")
	}
	mem := newSelfMemory()
	defer mem.close()
	block := make([]byte, end-start)
	defer clear(block) // it holds the values
	if err := mem.read(start, block); err != nil {
		return nil, wipeFailure(valued, "reading the environment block: "+err.Error())
	}
	for _, name := range valued {
		v, _ := syscall.Getenv(name)
		if err := syscall.Setenv(name, v); err != nil {
			return nil, wipeFailure(valued, "setting "+name+" again: "+err.Error())
		}
	}
	var failed []string
	var firstErr error
	var zeros []byte
	for _, name := range names {
		ranges := valueRanges(block, name)
		if len(ranges) == 0 {
			continue // set but empty, as every duplicate: nothing to hide
		}
		ok := true
		for _, r := range ranges {
			if len(zeros) < r.len {
				zeros = make([]byte, r.len)
			}
			if err := mem.write(start+uintptr(r.off), zeros[:r.len]); err != nil {
				ok = false
				if firstErr == nil {
					firstErr = err
				}
			}
		}
		if ok {
			wiped = append(wiped, name)
		} else {
			failed = append(failed, name)
		}
	}
	if len(failed) > 0 {
		return wiped, wipeFailure(failed, "overwriting the values: "+firstErr.Error())
	}
	return wiped, nil
}

// The outcome of forgetSecrets, set once by init.
var (
	wipedVars []string
	wipeErr   error
)

// WipeResult reports what this package's init did to the secret
// variables (secretVars) of the initial environment block: the names of
// those whose values it removed from /proc/<pid>/environ, and, if it
// could not remove some, a *WipeError naming them. It never holds a
// value. Variables that are unset or empty appear in neither.
func WipeResult() (wiped []string, err error) {
	return append([]string(nil), wipedVars...), wipeErr
}

// WipeError names the secret variables whose values are still in
// /proc/<pid>/environ, and why.
type WipeError struct {
	Vars   []string
	Reason string
}

func (e *WipeError) Error() string {
	names := ""
	for i, n := range e.Vars {
		if i > 0 {
			names += ", "
		}
		names += n
	}
	return "still in /proc/<pid>/environ: " + names + " (" + e.Reason + ")"
}

// wipeFailure is the error for vars left in place; none (say, every one
// empty): no error.
func wipeFailure(vars []string, reason string) error {
	if len(vars) == 0 {
		return nil
	}
	return &WipeError{Vars: vars, Reason: reason}
}

// selfMemory reads and writes this process's memory at raw addresses:
// with process_vm_readv/writev, falling back to /proc/self/mem (opened
// on first need) when those fail.
type selfMemory struct {
	pid    int
	vmErr  error // set once process_vm_* failed: not tried again
	memFd  int   // /proc/self/mem, or -1
	memErr error // set once opening it failed
}

func newSelfMemory() *selfMemory { return &selfMemory{pid: syscall.Getpid(), memFd: -1} }

func (m *selfMemory) close() {
	if m.memFd >= 0 {
		syscall.Close(m.memFd)
	}
}

func (m *selfMemory) read(addr uintptr, b []byte) error  { return m.transfer(false, addr, b) }
func (m *selfMemory) write(addr uintptr, b []byte) error { return m.transfer(true, addr, b) }

func (m *selfMemory) transfer(write bool, addr uintptr, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if m.vmErr == nil {
		err := vmTransfer(m.pid, write, addr, b)
		if err == nil {
			return nil
		}
		m.vmErr = err
	}
	err := m.procMemTransfer(write, addr, b)
	if err == nil {
		return nil
	}
	name := "process_vm_readv"
	if write {
		name = "process_vm_writev"
	}
	return errorString(name + ": " + m.vmErr.Error() + "; /proc/self/mem: " + err.Error())
}

// remoteIovec is struct iovec with the base as a plain address (of
// memory outside Go's heap): void * and size_t.
type remoteIovec struct {
	base uintptr
	len  uintptr
}

// vmTransfer copies b to or from addr in process pid (ours) with
// process_vm_writev or process_vm_readv: no /proc needed, and the
// kernel lets a process access its own memory whether or not it is
// dumpable.
func vmTransfer(pid int, write bool, addr uintptr, b []byte) error {
	trap := uintptr(sysProcessVMReadv)
	if write {
		trap = sysProcessVMWritev
	}
	local := syscall.Iovec{Base: &b[0]}
	local.SetLen(len(b))
	remote := remoteIovec{base: addr, len: uintptr(len(b))}
	n, _, errno := syscall.Syscall6(trap, uintptr(pid),
		uintptr(unsafe.Pointer(&local)), 1, uintptr(unsafe.Pointer(&remote)), 1, 0)
	if errno != 0 {
		return errno
	}
	if int(n) != len(b) {
		return errorString("transferred " + itoa(int(n)) + " of " + itoa(len(b)) + " bytes")
	}
	return nil
}

// procMemTransfer copies b to or from addr through /proc/self/mem.
func (m *selfMemory) procMemTransfer(write bool, addr uintptr, b []byte) error {
	if m.memFd < 0 {
		if m.memErr != nil {
			return m.memErr
		}
		fd, err := syscall.Open("/proc/self/mem", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
		if err != nil {
			m.memErr = err
			return err
		}
		m.memFd = fd
	}
	var n int
	var err error
	if write {
		n, err = syscall.Pwrite(m.memFd, b, int64(addr))
	} else {
		n, err = syscall.Pread(m.memFd, b, int64(addr))
	}
	if err != nil {
		return err
	}
	if n != len(b) {
		return errorString("transferred " + itoa(n) + " of " + itoa(len(b)) + " bytes")
	}
	return nil
}

type errorString string

func (e errorString) Error() string { return string(e) }

// itoa formats a non-negative number.
func itoa(n int) string {
	if n <= 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for ; n > 0; n /= 10 {
		i--
		b[i] = byte('0' + n%10)
	}
	return string(b[i:])
}

// maxEnvBlock bounds the environment block forgetSecrets handles (Linux
// limits it to a quarter of the stack limit, 2 MiB by default).
const maxEnvBlock = 64 << 20

type byteRange struct{ off, len int }

// valueRanges returns where the non-empty values of the NAME=value
// entries of block, a sequence of NUL-terminated strings, lie.
func valueRanges(block []byte, name string) []byteRange {
	var out []byteRange
	for off := 0; off < len(block); {
		n := 0
		for off+n < len(block) && block[off+n] != 0 {
			n++
		}
		entry := block[off : off+n]
		if len(entry) > len(name)+1 && string(entry[:len(name)]) == name && entry[len(name)] == '=' {
			out = append(out, byteRange{off + len(name) + 1, n - len(name) - 1})
		}
		off += n + 1
	}
	return out
}

// envBlock returns the bounds of the initial environment block, fields
// 50 and 51 (env_start, env_end) of /proc/self/stat (Linux 3.5 and
// later).
func envBlock() (start, end uintptr, err error) {
	stat, err := readProcFile("/proc/self/stat")
	if err != nil {
		return 0, 0, err
	}
	// Field 2, the command name, is parenthesised and may hold spaces
	// or parentheses itself: count from the last ')'.
	i := len(stat) - 1
	for i >= 0 && stat[i] != ')' {
		i--
	}
	if i < 0 {
		return 0, 0, errorString("/proc/self/stat has no command name")
	}
	field := 2
	var values [2]uint64
	for _, f := range splitSpace(stat[i+1:]) {
		field++
		switch field {
		case 50, 51:
			v, ok := parseUint(f)
			if !ok {
				return 0, 0, errorString("/proc/self/stat: field " + itoa(field) + " is not a number")
			}
			values[field-50] = v
		}
	}
	if field < 51 || values[0] == 0 || values[1] <= values[0] {
		return 0, 0, errorString("/proc/self/stat has no env_start and env_end (Linux 3.5 and later give them)")
	}
	return uintptr(values[0]), uintptr(values[1]), nil
}

// readProcFile reads a whole (small) file with plain system calls.
func readProcFile(path string) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, errorString("opening " + path + ": " + err.Error())
	}
	defer syscall.Close(fd)
	buf := make([]byte, 0, 4096)
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= 16<<20 {
				return nil, errorString(path + " is too large")
			}
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, errorString("reading " + path + ": " + err.Error())
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// splitSpace splits b at runs of spaces (and a trailing newline).
func splitSpace(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		for len(b) > 0 && (b[0] == ' ' || b[0] == '\n') {
			b = b[1:]
		}
		n := 0
		for n < len(b) && b[n] != ' ' && b[n] != '\n' {
			n++
		}
		if n > 0 {
			out = append(out, b[:n])
		}
		b = b[n:]
	}
	return out
}

// parseUint parses a non-empty decimal number below 2^64 (strconv is
// not imported: see the package comment).
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}
