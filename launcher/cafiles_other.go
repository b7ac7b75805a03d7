//go:build !unix

package launcher

import "os"

// lockShared does nothing where the cleanup does not run.
func lockShared(*os.File) error { return nil }

// removeStaleCAFiles does nothing where files carry no owner uid to tell
// this user's from another's (Windows): stale files stay, private to
// their user by the temp dir's permissions.
func removeStaleCAFiles(string) {}
