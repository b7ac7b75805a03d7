//go:build !linux

package vaulttest

import "syscall"

// dieWithParent has no portable equivalent outside Linux; t.Cleanup
// still stops the server when the test ends normally.
func dieWithParent() *syscall.SysProcAttr { return nil }
