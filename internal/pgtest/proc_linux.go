package pgtest

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// canSwitchUser: as root, the cluster runs as the postgres user.
const canSwitchUser = true

// sysProcAttr runs a child as a's user (nil: ours) and has the kernel
// SIGKILL it when we die, so a test binary that panics or times out
// leaves no postmaster behind (its backends exit when it does).
func sysProcAttr(a *account) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if a != nil {
		attr.Credential = &syscall.Credential{Uid: uint32(a.uid), Gid: uint32(a.gid)}
	}
	return attr
}

// processAlive reports whether pid exists (EPERM: it does, as another
// user's).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

var spawner struct {
	once sync.Once
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// startProcess starts cmd from one OS thread that never exits. Linux
// sends Pdeathsig when the *thread* that forked the child exits, and Go
// may retire threads; a locked, never-ending goroutine keeps the parent
// thread alive as long as the process.
func startProcess(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread()
			for r := range spawner.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawner.reqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}
