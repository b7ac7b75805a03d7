package identity

import (
	"errors"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, n := range []string{"a", "0", "ci-bot", "alice.smith", "a_b", strings.Repeat("a", 64), "local"} {
		for _, k := range []NameKind{AgentName, OperatorName} {
			if err := ValidName(k, n); err != nil {
				t.Errorf("ValidName(%v, %q): %v", k, n, err)
			}
		}
	}
	for _, n := range []string{"", "-a", ".a", "_a", "A", "ci bot", "ci/bot", "é", "a\n", strings.Repeat("a", 65), "*"} {
		err := ValidName(AgentName, n)
		var ie *InvalidError
		if !errors.As(err, &ie) || !strings.Contains(ie.Reason, "invalid agent name") || !strings.Contains(ie.Reason, "use 1-64 of a-z") {
			t.Errorf("ValidName(agent, %q) = %v", n, err)
		}
	}
	if err := ValidName(OperatorName, "Alice"); err == nil || err.Error() != `invalid operator name "Alice": use 1-64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit` {
		t.Errorf("operator error: %v", err)
	}
	huge := strings.Repeat("x", 100000)
	if err := ValidName(OperatorName, huge); err == nil || strings.Contains(err.Error(), strings.Repeat("x", 65)) {
		t.Error("a huge name is repeated in the error")
	}
	for _, k := range []NameKind{AgentName, OperatorName} {
		err := ValidName(k, AdminTokenName)
		var ie *InvalidError
		if !errors.As(err, &ie) || !strings.Contains(ie.Reason, "reserved for the admin token") {
			t.Errorf("ValidName(%v, %q) = %v", k, AdminTokenName, err)
		}
	}
	if ValidName(0, "a") == nil {
		t.Error("unknown kind accepted")
	}
}
