module github.com/agentvault/caddy-agent-vault/storebackends/hashicorp/testvault

go 1.26.0

require github.com/hashicorp/vault v1.21.0
