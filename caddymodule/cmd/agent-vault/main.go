// Command agent-vault is Caddy with the agent-vault modules: run it as
// `agent-vault server`, or `agent-vault run --config Caddyfile.example`.
package main

import (
	// Caddy's standard modules, as in the stock caddy binary.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	agentvault "github.com/agentvault/caddy-agent-vault"
)

func main() { agentvault.Main() }
