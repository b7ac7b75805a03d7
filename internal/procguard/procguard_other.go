//go:build !linux

// Package procguard hardens a process that holds secrets.
package procguard

// NonDumpable is a no-op where there is no /proc/<pid>/environ to hide.
func NonDumpable() {}

// Dumpable reports true: there is nothing to turn off here.
func Dumpable() bool { return true }
