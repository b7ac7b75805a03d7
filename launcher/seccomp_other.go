//go:build linux && !(amd64 || arm64)

package launcher

import "errors"

// seccompSupported: no filter for this architecture (yet); strict
// --confine refuses, best-effort says it is missing.
const seccompSupported = false

func seccompRestrict() error { return errors.New("no seccomp filter for this architecture") }
