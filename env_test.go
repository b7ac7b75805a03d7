package agentvault

import (
	"os"
	"testing"
)

// TestStateDefaults: the state line of Caddyfile.example follows the
// environment, and a DSN default only ever comes with the postgres
// backend (an explicit sqlite beside a database URL must not become a
// SQLite file named after the URL).
func TestStateDefaults(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		url, backend         string
		wantBackend, wantDSN string
	}{
		{name: "nothing set", wantBackend: "sqlite"},
		{name: "database url", url: "postgres://u:pw@db/av", wantBackend: "postgres", wantDSN: "{env.AGENT_VAULT_DATABASE_URL}"},
		{name: "sqlite beside a url", url: "postgres://u:pw@db/av", backend: "sqlite", wantBackend: "sqlite"},
		{name: "postgres without url", backend: "postgres", wantBackend: "postgres"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("AGENT_VAULT_DATABASE_URL", tc.url)
			t.Setenv("AGENT_VAULT_STATE_BACKEND", tc.backend)
			t.Setenv("AGENT_VAULT_STATE_DSN", "")
			stateDefaults()
			if got := os.Getenv("AGENT_VAULT_STATE_BACKEND"); got != tc.wantBackend {
				t.Errorf("backend %q, want %q", got, tc.wantBackend)
			}
			if got := os.Getenv("AGENT_VAULT_STATE_DSN"); got != tc.wantDSN {
				t.Errorf("dsn %q, want %q", got, tc.wantDSN)
			}
		})
	}
}
