//go:build !linux

// Package procguard hardens a process that holds secrets.
package procguard

import "syscall"

// NonDumpable does nothing outside Linux, and nothing is removed from the
// environment there either. Elsewhere (macOS) a process of the same user
// may read another's environment for its whole life: give the master
// password with AGENT_VAULT_MASTER_PASSWORD_FILE there.
func NonDumpable() {}

// Dumpable reports true: there is nothing to turn off here.
func Dumpable() bool { return true }

// secretVars are the variables the Linux build removes from its
// environment block.
var secretVars = []string{
	"AGENT_VAULT_MASTER_PASSWORD",
	"AGENT_VAULT_ADMIN_TOKEN",
	"AGENT_VAULT_TOKEN",
	"VAULT_TOKEN",
	"VAULT_SECRET_ID",
	"INFISICAL_CLIENT_SECRET",
	"INFISICAL_TOKEN",
}

// WipeResult reports nothing wiped and, if any of secretVars has a
// value, a *WipeError naming them: outside Linux other processes may
// read this environment for the process's whole life.
func WipeResult() (wiped []string, err error) {
	var left []string
	for _, name := range secretVars {
		if v, ok := syscall.Getenv(name); ok && v != "" {
			left = append(left, name)
		}
	}
	if len(left) == 0 {
		return nil, nil
	}
	return nil, &WipeError{Vars: left, Reason: "only Linux builds remove them; use AGENT_VAULT_MASTER_PASSWORD_FILE"}
}

// WipeError names the secret variables whose values are still in the
// process's environment as others see it, and why.
type WipeError struct {
	Vars   []string
	Reason string
}

func (e *WipeError) Error() string {
	names := ""
	for i, n := range e.Vars {
		if i > 0 {
			names += ", "
		}
		names += n
	}
	return "still in the environment other processes can read: " + names + " (" + e.Reason + ")"
}
