// Package datadir knows where agent-vault keeps its state by default;
// the server and av-launch must agree on it (av-launch reads the admin
// token from there).
package datadir

import "path/filepath"

// Default returns $AGENT_VAULT_DATA_DIR, else $XDG_DATA_HOME/agent-vault
// (an absolute XDG_DATA_HOME only, as the XDG spec says), else
// ~/.local/share/agent-vault, else "" when there is no home directory.
// getenv is os.Getenv or a lookup in another environment.
func Default(getenv func(string) string) string {
	if d := getenv("AGENT_VAULT_DATA_DIR"); d != "" {
		return d
	}
	if d := getenv("XDG_DATA_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "agent-vault")
	}
	if home := getenv("HOME"); home != "" {
		return filepath.Join(home, ".local", "share", "agent-vault")
	}
	return ""
}
