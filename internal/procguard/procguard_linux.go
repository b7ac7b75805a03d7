//go:build linux

// Package procguard hardens a process that holds secrets. Importing it,
// in the package's init:
//
//   - makes the process non-dumpable (NonDumpable);
//   - removes the values of a few secret environment variables
//     (SecretVars) from the process's initial environment block, which
//     is what /proc/<pid>/environ shows, while Go code (os.Getenv, and
//     so Caddy's {env.NAME} placeholders at every config reload) still
//     reads them (see forgetSecrets).
//
// It imports only syscall, so it is initialised among the
// very first packages, long before the rest of a large binary (Caddy's
// dependencies take tens of milliseconds) has run its own init.
package procguard

import "syscall"

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
	// The wipe writes through /proc/self/mem, which a non-dumpable
	// process that is not root may no longer open (the kernel hands
	// the file to root), so it goes first; the two run microseconds
	// apart.
	forgetSecrets()
	NonDumpable()
}

// Dumpable reports whether this process is dumpable (for tests).
func Dumpable() bool {
	r, _, _ := syscall.RawSyscall(syscall.SYS_PRCTL, prGetDumpable, 0, 0)
	return r != 0
}

// SecretVars are the environment variables whose values forgetSecrets
// removes from /proc/self/environ: the ones agent-vault reads itself
// (the server's master password and admin token, the launcher's token)
// and the ones its documentation suggests for the external stores'
// credentials ({env.VAULT_TOKEN} and so on). A secret given under
// another name stays visible there to whoever may read the file (root,
// once the process is non-dumpable).
var SecretVars = []string{
	"AGENT_VAULT_MASTER_PASSWORD",
	"AGENT_VAULT_ADMIN_TOKEN",
	"AGENT_VAULT_TOKEN",
	"VAULT_TOKEN",
	"VAULT_SECRET_ID",
	"INFISICAL_CLIENT_SECRET",
	"INFISICAL_TOKEN",
}

// forgetSecrets keeps each of SecretVars readable by Go code but gone
// from /proc/self/environ.
//
// The kernel serves /proc/<pid>/environ from the process's memory: the
// block [env_start, env_end) (fields of /proc/<pid>/stat) on the initial
// stack, where execve put the environment. Go reads the environment from
// there once, at start-up; since then the runtime's strings are copies
// (Go 1.26 copies them; older runtimes pointed into the block, so a
// heap copy of each value is installed with Setenv before the block
// changes, which also covers C's environ in a cgo build). os.Getenv,
// os.Environ, hence child processes, a re-exec and Caddy's {env.NAME}
// placeholders at every config reload, keep seeing the values. Then the
// value bytes of every NAME= entry in the block, duplicates included,
// are overwritten with zeros: /proc/<pid>/environ shows "NAME=" followed
// by as many NUL bytes as the value had (its length stays visible).
//
// The block is read and written through /proc/self/mem, so the kernel,
// not a pointer conversion, checks that the addresses are mapped: if
// /proc/self/stat lacks the fields or /proc/self/mem cannot be used
// (a kernel or security module that forbids it), nothing is changed
// and the values stay visible as before.
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
func forgetSecrets() {
	var names []string
	for _, name := range SecretVars {
		if _, ok := syscall.Getenv(name); ok {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return
	}
	start, end, ok := envBlock()
	if !ok || end-start > maxEnvBlock {
		return
	}
	mem, err := syscall.Open("/proc/self/mem", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer syscall.Close(mem)
	block := make([]byte, end-start)
	if n, err := syscall.Pread(mem, block, int64(start)); err != nil || n != len(block) {
		return
	}
	for _, name := range names {
		v, _ := syscall.Getenv(name)
		if v == "" {
			continue
		}
		// Setenv stores a new "NAME=value" string (and C's setenv its
		// own copy), so what Go and C read from now on is not in the
		// block, whatever v points to.
		if err := syscall.Setenv(name, v); err != nil {
			return
		}
	}
	for _, name := range names {
		for _, r := range valueRanges(block, name) {
			zeros := make([]byte, r.len)
			if n, err := syscall.Pwrite(mem, zeros, int64(start)+int64(r.off)); err != nil || n != r.len {
				return
			}
		}
	}
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
func envBlock() (start, end uintptr, ok bool) {
	stat, ok := readProcFile("/proc/self/stat")
	if !ok {
		return 0, 0, false
	}
	// Field 2, the command name, is parenthesised and may hold spaces
	// or parentheses itself: count from the last ')'.
	i := len(stat) - 1
	for i >= 0 && stat[i] != ')' {
		i--
	}
	if i < 0 {
		return 0, 0, false
	}
	field := 2
	var values [2]uint64
	for _, f := range splitSpace(stat[i+1:]) {
		field++
		switch field {
		case 50, 51:
			v, ok := parseUint(f, 10)
			if !ok {
				return 0, 0, false
			}
			values[field-50] = v
		}
	}
	if field < 51 || values[0] == 0 || values[1] <= values[0] {
		return 0, 0, false
	}
	return uintptr(values[0]), uintptr(values[1]), true
}

// readProcFile reads a whole (small) file with plain system calls.
func readProcFile(path string) ([]byte, bool) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	defer syscall.Close(fd)
	buf := make([]byte, 0, 4096)
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= 16<<20 {
				return nil, false
			}
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, false
		}
		if n == 0 {
			return buf, true
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

// parseUint parses a non-empty unsigned number in base 10 or 16.
func parseUint(b []byte, base uint64) (uint64, bool) {
	maxDigits := 19 // below 2^64 in decimal
	if base == 16 {
		maxDigits = 16
	}
	if len(b) == 0 || len(b) > maxDigits {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		var d uint64
		switch {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case base == 16 && 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		default:
			return 0, false
		}
		v = v*base + d
	}
	return v, true
}
