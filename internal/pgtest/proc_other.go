//go:build !linux

package pgtest

import (
	"os/exec"
	"syscall"
)

// canSwitchUser: outside Linux pgtest runs the cluster as the current
// user only (and so not as root, which postgres refuses).
const canSwitchUser = false

// sysProcAttr has nothing to set: there is no parent-death signal
// outside Linux, so a test binary that dies leaves its postmaster
// running.
func sysProcAttr(*account) *syscall.SysProcAttr { return nil }

// startProcess starts cmd.
func startProcess(cmd *exec.Cmd) error { return cmd.Start() }

// processAlive reports true: without a portable check, nothing is swept.
func processAlive(int) bool { return true }
