//go:build !linux

package launcher

import "syscall"

// childSysProcAttr: only Linux has Pdeathsig; elsewhere a child outlives
// a launcher killed with SIGKILL, and its session ends when the lease
// lapses.
func childSysProcAttr() *syscall.SysProcAttr { return nil }

func lockThreadForChild() (unlock func()) { return func() {} }
