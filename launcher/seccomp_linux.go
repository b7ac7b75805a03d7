//go:build linux && (amd64 || arm64)

package launcher

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The confined command's seccomp filter closes what neither the
// namespaces nor Landlock do:
//   - ioctl TIOCSTI and TIOCLINUX: pushing input into the terminal the
//     command shares with the user's shell, which runs it unconfined
//     once the launcher exits (the bubblewrap hole, CVE-2017-5226);
//   - socket families other than unix, IPv4, IPv6 and netlink: AF_VSOCK
//     reaches a VM's host whatever the network namespace, and the rest
//     (Bluetooth, CAN, ...) has no business in an agent;
//   - io_uring, whose requests open sockets without the socket system
//     call;
//   - every system call of another ABI (i386, x32), whose numbers the
//     rules above do not know.
//
// Each is refused with an error (EPERM, EAFNOSUPPORT, ENOSYS), never by
// killing the process, so a program that probes for them carries on.

// seccomp_data offsets (linux/seccomp.h).
const (
	seccompNR     = 0
	seccompArch   = 4
	seccompArg0   = 16 // low 32 bits on little-endian amd64 and arm64
	seccompArg1   = 24
	x32SyscallBit = 0x40000000
)

// auditArch is this build's AUDIT_ARCH_*.
var auditArch = map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}[runtime.GOARCH]

// seccompSupported reports whether this build has a filter.
const seccompSupported = true

// seccompProgram builds the filter (classic BPF; jumps count the
// instructions skipped after the current one).
func seccompProgram() []unix.SockFilter {
	ld := func(off uint32) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off}
	}
	jeq := func(k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: k, Jt: jt, Jf: jf}
	}
	ret := func(k uint32) unix.SockFilter { return unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: k} }
	allow := ret(unix.SECCOMP_RET_ALLOW)
	errno := func(e unix.Errno) unix.SockFilter {
		return ret(unix.SECCOMP_RET_ERRNO | uint32(e)&unix.SECCOMP_RET_DATA)
	}

	prog := []unix.SockFilter{
		ld(seccompArch),
		jeq(auditArch, 1, 0),
		errno(unix.ENOSYS), // another ABI
		ld(seccompNR),
	}
	if runtime.GOARCH == "amd64" {
		prog = append(prog,
			unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, K: x32SyscallBit, Jt: 0, Jf: 1},
			errno(unix.ENOSYS), // x32
		)
	}
	prog = append(prog,
		jeq(unix.SYS_IO_URING_SETUP, 0, 1),
		errno(unix.ENOSYS),

		jeq(unix.SYS_IOCTL, 0, 5),
		ld(seccompArg1),
		jeq(unix.TIOCSTI, 2, 0),
		jeq(unix.TIOCLINUX, 1, 0),
		allow,
		errno(unix.EPERM),

		jeq(unix.SYS_SOCKET, 1, 0),
		allow,
		ld(seccompArg0),
		jeq(unix.AF_UNIX, 4, 0),
		jeq(unix.AF_INET, 3, 0),
		jeq(unix.AF_INET6, 2, 0),
		jeq(unix.AF_NETLINK, 1, 0),
		errno(unix.EAFNOSUPPORT),
		allow,
	)
	return prog
}

// seccompRestrict installs the filter on the calling thread (what it
// executes inherits it). no_new_privs must be set.
func seccompRestrict() error {
	prog := seccompProgram()
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)), 0, 0); err != nil {
		return fmt.Errorf("seccomp: %v", err)
	}
	return nil
}
