//go:build !unix

package apiclient

import "os"

// openNonBlocking opens path for reading; Windows has no FIFOs at a path
// to block on.
func openNonBlocking(path string) (*os.File, error) { return os.Open(path) }

// fileWarnings has nothing to say where modes and owners are ACLs that
// Go does not show.
func fileWarnings(string, os.FileInfo) []string { return nil }
