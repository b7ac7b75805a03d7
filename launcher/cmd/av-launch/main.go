// Command av-launch runs an AI agent behind the agent-vault proxy: the
// agent's HTTPS traffic goes through the credential-injecting proxy, it
// trusts the proxy's CA and it holds placeholders instead of secrets.
//
//	av-launch [--addr URL] [--token-file F] [--services a,b] [--ttl 1h] [--] cmd args...
//	av-launch [--addr URL] --session-token-file F [--] cmd args...
package main

import (
	"os"

	"github.com/agentvault/caddy-agent-vault/internal/procguard"
	"github.com/agentvault/caddy-agent-vault/launcher"
)

func main() {
	procguard.NonDumpable() // the agent is our child and the same user
	os.Exit(launcher.Main(os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr))
}
