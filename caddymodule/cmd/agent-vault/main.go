// Command agent-vault is Caddy with the agent-vault modules: run it as
// `agent-vault run --config Caddyfile.example`, or `agent-vault server`.
package main

import (
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules, as in the stock caddy binary.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	agentvault "github.com/agentvault/caddy-agent-vault"
)

func main() {
	// Caddy already owns the `version` verb; answer it with both
	// versions so `agent-vault version` tells what runs.
	if len(os.Args) == 2 && (os.Args[1] == "version" || os.Args[1] == "--version") {
		_, full := caddy.Version()
		fmt.Printf("agent-vault %s (caddy %s)\n", agentvault.Version, full)
		return
	}
	caddycmd.Main()
}
