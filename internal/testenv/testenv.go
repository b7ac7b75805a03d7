// Package testenv lets a test that needs something of the machine (a
// tool, root, a namespace) skip where it is missing, except in the
// strict run (`make test`, CI), where `make deps` has installed every
// tool and a missing one must fail rather than quietly pass as a skip.
package testenv

import (
	"os"
	"testing"
)

// StrictVar set to 1 turns Unavailable's skips into failures.
const StrictVar = "AGENT_VAULT_STRICT_TESTS"

// Unavailable skips t, saying why; under StrictVar=1 it fails it.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(StrictVar) == "1" {
		t.Fatalf("needed by this test ("+StrictVar+"=1 forbids skipping): "+format, args...)
		return
	}
	t.Skipf(format, args...)
}
