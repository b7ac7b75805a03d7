//go:build linux

package procguard

import (
	"os"
	"os/exec"
	"testing"
)

// The check runs in a fresh child: importing procguard alone must have
// made it non-dumpable before any test code ran.
func TestNonDumpable(t *testing.T) {
	if os.Getenv("PROCGUARD_CHILD") == "1" {
		if Dumpable() {
			os.Exit(3) // importing the package made the process non-dumpable already
		}
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNonDumpable$")
	cmd.Env = append(os.Environ(), "PROCGUARD_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
