// Command testvault is the real HashiCorp Vault server, built from source
// so the hashicorp store backend's tests run against genuine Vault
// behaviour (KV v1/v2, AppRole, policies, token TTLs) rather than a fake.
//
// It lives in its own module so Vault's very large dependency graph never
// enters the main module's go.mod. The vaulttest package builds and caches
// the binary on demand; `make vault-test-server` does the same up front.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
