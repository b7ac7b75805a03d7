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
