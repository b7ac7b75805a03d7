//go:build !linux

// Package procguard hardens a process that holds secrets.
package procguard

// NonDumpable does nothing outside Linux, and nothing is removed from the
// environment there either. Elsewhere (macOS) a process of the same user
// may read another's environment for its whole life: give the master
// password with AGENT_VAULT_MASTER_PASSWORD_FILE there.
func NonDumpable() {}

// Dumpable reports true: there is nothing to turn off here.
func Dumpable() bool { return true }
