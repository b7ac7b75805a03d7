//go:build linux

package procguard

import (
	"os"
	"os/exec"
	"testing"
)

// The check runs in a child, so the test process itself stays dumpable.
func TestNonDumpable(t *testing.T) {
	if os.Getenv("PROCGUARD_CHILD") == "1" {
		if !Dumpable() {
			os.Exit(3) // a fresh process starts dumpable
		}
		NonDumpable()
		if Dumpable() {
			os.Exit(4)
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
