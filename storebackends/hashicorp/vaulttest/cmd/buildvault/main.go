// Command buildvault builds the cached Vault test server (see
// vaulttest.Binary) ahead of the tests and prints its path. It is what
// `make vault-test-server` runs.
package main

import (
	"fmt"
	"os"

	"github.com/agentvault/caddy-agent-vault/storebackends/hashicorp/vaulttest"
)

func main() {
	bin, err := vaulttest.Binary()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(bin)
}
