//go:build !linux

package launcher

// HideEnvironment is a no-op where there is no /proc/<pid>/environ to hide.
func HideEnvironment() {}
