package launcher

import "syscall"

// HideEnvironment makes this process non-dumpable, so that the agent,
// running as the same user, cannot read the admin token from
// /proc/<our pid>/environ or attach a debugger to us.
func HideEnvironment() {
	const prSetDumpable = 4
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0)
}
