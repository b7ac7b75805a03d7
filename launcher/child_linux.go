//go:build linux

package launcher

import (
	"runtime"
	"syscall"
)

// childSysProcAttr has the kernel SIGKILL the child when the launcher
// dies, so a launcher killed with SIGKILL (whose session the broker ends
// once its lease lapses) leaves no agent running behind.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// lockThreadForChild locks the calling goroutine to its OS thread; the
// returned func unlocks it, and must run only once the child is reaped.
//
// Pdeathsig fires when the parent *thread* exits, not the process: the
// thread that forked the child. Go moves goroutines between threads and
// ends a thread when a goroutine that locked it exits, so without the
// lock the child could be killed while the launcher lives (its thread
// ended under another goroutine). Locked, the forking thread belongs to
// this goroutine until it unlocks, after the child's Wait.
func lockThreadForChild() (unlock func()) {
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}
