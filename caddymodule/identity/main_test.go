package identity

import (
	"os"
	"testing"
)

// TestMain makes argon2id cheap for the package's tests (the real
// parameters cost some 30 ms a hash); TestDefaultParams checks the real
// ones.
func TestMain(m *testing.M) {
	hashParams = argonParams{m: 8, t: 1, p: 1}
	os.Exit(m.Run())
}
