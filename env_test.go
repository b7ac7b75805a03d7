package agentvault

import (
	"os"
	"testing"
)

// The state variables Caddyfile.example reads, for each way an operator
// sets them: the DSN is defaulted to the URL's placeholder only for
// PostgreSQL, never for SQLite, whose DSN is a file path.
func TestStateDefaults(t *testing.T) {
	for _, c := range []struct {
		url, backend, dsn    string // as set by the operator
		wantBackend, wantDSN string
	}{
		{"", "", "", "sqlite", ""},
		{"postgres://u:pw@db/av", "", "", "postgres", "{env.AGENT_VAULT_DATABASE_URL}"},
		{"postgres://u:pw@db/av", "sqlite", "", "sqlite", ""},
		{"postgres://u:pw@db/av", "sqlite", "/d/state.db", "sqlite", "/d/state.db"},
		{"", "postgres", "", "postgres", "{env.AGENT_VAULT_DATABASE_URL}"},
		{"postgres://u:pw@db/av", "postgres", "{env.OTHER}", "postgres", "{env.OTHER}"},
	} {
		t.Setenv("AGENT_VAULT_DATABASE_URL", c.url)
		t.Setenv("AGENT_VAULT_STATE_BACKEND", c.backend)
		t.Setenv("AGENT_VAULT_STATE_DSN", c.dsn)
		stateDefaults()
		if b, d := os.Getenv("AGENT_VAULT_STATE_BACKEND"), os.Getenv("AGENT_VAULT_STATE_DSN"); b != c.wantBackend || d != c.wantDSN {
			t.Errorf("url %q backend %q dsn %q: got backend %q dsn %q, want %q %q", c.url, c.backend, c.dsn, b, d, c.wantBackend, c.wantDSN)
		}
	}
}
