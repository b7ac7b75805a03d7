package identity

import (
	"fmt"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
)

// NameKind says what a name names, for ValidName's error.
type NameKind uint8

// Kinds of names.
const (
	AgentName NameKind = iota + 1
	OperatorName
)

// String is "agent" or "operator".
func (k NameKind) String() string {
	switch k {
	case AgentName:
		return "agent"
	case OperatorName:
		return "operator"
	}
	return "unknown"
}

// ValidName checks an agent or operator name against the grammar of
// service names, ^[a-z0-9][a-z0-9_.-]{0,63}$, and refuses
// AdminTokenName, which the audit trail uses for the admin token. Its
// error is an *InvalidError that names the kind and, when short enough
// to be a name, quotes it.
func ValidName(kind NameKind, name string) error {
	if kind != AgentName && kind != OperatorName {
		return fmt.Errorf("identity: ValidName of an unknown kind %d", kind)
	}
	if name == AdminTokenName {
		return &InvalidError{Reason: fmt.Sprintf("invalid %s name %q: it is reserved for the admin token", kind, name)}
	}
	if services.IsValidName(name) {
		return nil
	}
	const rule = "use 1-64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit"
	if len(name) > 64 {
		return &InvalidError{Reason: fmt.Sprintf("invalid %s name: longer than 64 bytes; %s", kind, rule)}
	}
	return &InvalidError{Reason: fmt.Sprintf("invalid %s name %q: %s", kind, name, rule)}
}
