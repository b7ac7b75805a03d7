package agentvault

import (
	"fmt"
	"net"
	"os"

	"github.com/agentvault/caddy-agent-vault/caddymodule"
	"github.com/agentvault/caddy-agent-vault/internal/procguard"
)

// Defaults of the environment variables Caddyfile.example reads.
const (
	DefaultAPIAddr   = "127.0.0.1:14321"
	DefaultProxyAddr = "127.0.0.1:14322"
)

func init() {
	// This process will hold the master password and the admin token (in
	// its environment, then in memory); importing procguard already made
	// it non-dumpable and took them out of /proc/self/environ in that
	// package's early init; this says so here.
	procguard.NonDumpable()
	ApplyEnvDefaults()
}

// ApplyEnvDefaults prepares the environment Caddyfile.example expects.
// The Caddyfile only substitutes whole {$VAR}s, yet a site must listen
// on a host-less address (see Caddyfile.example) bound to a host; so the
// *_ADDR variables are split here into *_HOST and *_PORT. It also
// defaults and creates the data directory, because Caddy opens its admin
// socket there before any module is provisioned. It runs when the
// package is imported and again when `agent-vault server` changes the
// addresses.
func ApplyEnvDefaults() {
	setDefault("AGENT_VAULT_API_ADDR", DefaultAPIAddr)
	setDefault("AGENT_VAULT_PROXY_ADDR", DefaultProxyAddr)
	setDefault("AGENT_VAULT_DATA_DIR", caddymodule.DefaultDataDir())
	splitAddr("AGENT_VAULT_API")
	splitAddr("AGENT_VAULT_PROXY")
	stateDefaults()
	// Best effort: if this fails, Caddy's error opening the admin socket
	// names the directory.
	_ = os.MkdirAll(os.Getenv("AGENT_VAULT_DATA_DIR"), 0o700)
}

// stateDefaults chooses the state database Caddyfile.example's
// `state {$AGENT_VAULT_STATE_BACKEND} {$AGENT_VAULT_STATE_DSN}` names:
// PostgreSQL when AGENT_VAULT_DATABASE_URL is set, SQLite in the data
// directory otherwise. Only for PostgreSQL is the DSN defaulted, to the
// literal runtime placeholder {env.AGENT_VAULT_DATABASE_URL}, not the
// URL, so its password never enters the adapted JSON config; for SQLite
// the DSN is the database file, and the URL must never become one (a
// broker outside its cluster, the password in a file name). Either
// variable set by the operator wins.
func stateDefaults() {
	if os.Getenv("AGENT_VAULT_DATABASE_URL") != "" {
		setDefault("AGENT_VAULT_STATE_BACKEND", "postgres")
	}
	setDefault("AGENT_VAULT_STATE_BACKEND", "sqlite")
	if os.Getenv("AGENT_VAULT_STATE_BACKEND") == "postgres" {
		setDefault("AGENT_VAULT_STATE_DSN", "{env.AGENT_VAULT_DATABASE_URL}")
	}
}

func setDefault(name, value string) {
	if os.Getenv(name) == "" {
		os.Setenv(name, value)
	}
}

// splitAddr sets PREFIX_HOST and PREFIX_PORT from PREFIX_ADDR. An
// invalid address yields a port value that names the variable, so the
// Caddyfile adapter's error points at it.
func splitAddr(prefix string) {
	host, port, err := net.SplitHostPort(os.Getenv(prefix + "_ADDR"))
	if err != nil || host == "" || port == "" {
		fmt.Fprintf(os.Stderr, "agent-vault: %s_ADDR=%q is not a host:port address\n", prefix, os.Getenv(prefix+"_ADDR"))
		host, port = "invalid", "invalid-"+prefix+"_ADDR"
	}
	os.Setenv(prefix+"_HOST", host)
	os.Setenv(prefix+"_PORT", port)
}
