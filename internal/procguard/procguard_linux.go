//go:build linux

// Package procguard hardens a process that holds secrets. Importing it
// makes the process non-dumpable in the package's init: it imports only
// syscall, so it is initialised among the very first packages, long
// before the rest of a large binary (Caddy's dependencies take tens of
// milliseconds) has run its own init.
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

func init() { NonDumpable() }

// Dumpable reports whether this process is dumpable (for tests).
func Dumpable() bool {
	r, _, _ := syscall.RawSyscall(syscall.SYS_PRCTL, prGetDumpable, 0, 0)
	return r != 0
}
