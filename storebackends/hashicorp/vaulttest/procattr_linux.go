package vaulttest

import "syscall"

// dieWithParent makes a child process get SIGKILL when the test binary
// dies (for example on a -timeout panic), so no Vault server or build
// outlives it.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
