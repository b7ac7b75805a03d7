// Package agentvault is agent-vault for Caddy: a credential broker for
// AI agents. Importing it registers the Caddy modules (the agent_vault
// app, the proxy and management API handlers, the built-in store, the
// cluster's Caddy storage in the state database) and the agent-vault
// CLI verbs; it is what `xcaddy build --with` imports.
package agentvault

import (
	_ "embed"

	_ "github.com/agentvault/caddy-agent-vault/caddymodule"
	_ "github.com/agentvault/caddy-agent-vault/caddymodule/statestorage"
	_ "github.com/agentvault/caddy-agent-vault/storebackends/builtin"
	_ "github.com/agentvault/caddy-agent-vault/storebackends/hashicorp"
	_ "github.com/agentvault/caddy-agent-vault/storebackends/infisical"
)

// DefaultCaddyfile is Caddyfile.example, the configuration `agent-vault
// server` runs when no --config is given.
//
//go:embed Caddyfile.example
var DefaultCaddyfile []byte

// Version is agent-vault's own version, set at build time with
// -ldflags "-X github.com/agentvault/caddy-agent-vault.Version=...".
var Version = "dev"
