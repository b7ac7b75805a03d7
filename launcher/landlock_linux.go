//go:build linux

package launcher

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Landlock through its three system calls (x/sys/unix has the numbers
// and constants; the structs are declared here at the sizes each ABI
// knows, so an older kernel is never handed fields it does not read).

type landlockRulesetAttr struct {
	handledAccessFS  uint64
	handledAccessNet uint64
	scoped           uint64
}

type landlockPathBeneath struct { // packed in the kernel: 12 bytes read
	allowedAccess uint64
	parentFD      int32
	_             int32
}

type landlockNetPort struct {
	allowedAccess uint64
	port          uint64
}

// landlockRuleNetPort is LANDLOCK_RULE_NET_PORT (not in x/sys yet).
const landlockRuleNetPort = 2

// landlockABI returns the kernel's Landlock ABI version, 0 without it.
func landlockABI() int {
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0
	}
	return int(v)
}

// landlockRestrict puts the calling thread (and what it executes) in a
// new Landlock domain. The domain's file system rules deny only the
// creation of block devices: what it is for is the domain itself, which
// denies ptrace and /proc/PID/{root,cwd,fd,environ,mem} of every process
// outside it, mounts and unmounts, and from ABI 6 signals and abstract
// unix sockets to processes outside it. connectPort > 0 (ABI 4) allows
// TCP connects to that port only.
func landlockRestrict(abi, connectPort int) ([]string, error) {
	attr := landlockRulesetAttr{handledAccessFS: unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK | unix.LANDLOCK_ACCESS_FS_REFER}
	size := unsafe.Sizeof(attr.handledAccessFS)
	applied := []string{fmt.Sprintf("Landlock ABI %d domain (no ptrace, /proc or mounts across it)", abi)}
	if connectPort > 0 && abi >= 4 {
		attr.handledAccessNet = unix.LANDLOCK_ACCESS_NET_CONNECT_TCP
		size = unsafe.Offsetof(attr.scoped)
		applied = append(applied, fmt.Sprintf("TCP connect only to port %d", connectPort))
	}
	if abi >= 6 {
		attr.scoped = unix.LANDLOCK_SCOPE_SIGNAL | unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
		size = unsafe.Sizeof(attr)
		applied = append(applied, "no signals or abstract unix sockets across it")
	}
	rfd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), size, 0)
	if errno != 0 {
		return nil, fmt.Errorf("landlock_create_ruleset: %v", errno)
	}
	defer unix.Close(int(rfd))
	root, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /: %v", err)
	}
	defer unix.Close(root)
	beneath := landlockPathBeneath{allowedAccess: unix.LANDLOCK_ACCESS_FS_REFER, parentFD: int32(root)}
	if _, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, rfd, unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&beneath)), 0, 0, 0); errno != 0 {
		return nil, fmt.Errorf("landlock_add_rule: %v", errno)
	}
	if attr.handledAccessNet != 0 {
		port := landlockNetPort{allowedAccess: unix.LANDLOCK_ACCESS_NET_CONNECT_TCP, port: uint64(connectPort)}
		if _, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, rfd, landlockRuleNetPort, uintptr(unsafe.Pointer(&port)), 0, 0, 0); errno != 0 {
			return nil, fmt.Errorf("landlock_add_rule (net): %v", errno)
		}
	}
	if _, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, rfd, 0, 0); errno != 0 {
		return nil, fmt.Errorf("landlock_restrict_self: %v", errno)
	}
	return applied, nil
}
