//go:build linux && !amd64 && !386

package procguard

import "syscall"

const (
	sysProcessVMReadv  = syscall.SYS_PROCESS_VM_READV
	sysProcessVMWritev = syscall.SYS_PROCESS_VM_WRITEV
)
