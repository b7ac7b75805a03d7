# agent-vault for Caddy. The two commands a newcomer needs:
#   AGENT_VAULT_MASTER_PASSWORD='a long passphrase' make run   # build and start
#   make test                                                  # every test
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/agentvault/caddy-agent-vault.Version=$(VERSION)

.PHONY: build run test demo fuzz bench xcaddy clean
SHELL := /bin/bash

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/agent-vault ./caddymodule/cmd/agent-vault
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/av-launch ./launcher/cmd/av-launch

run: build
	bin/agent-vault run --config Caddyfile.example

# Everything: vet, unit and fuzz-seed tests (race detector on the
# packages without Caddy, whose race build is slow), then the
# end-to-end journeys against the built binaries and real curl.
test: build vault-test-server
	$(GO) vet ./...
	$(GO) test -race ./storebackends/... ./caddymodule/services/... ./caddymodule/egress/... ./caddymodule/leafcerts/... ./caddymodule/sessions/... ./launcher/...
	$(GO) test . ./caddymodule/ ./internal/...
	AGENT_VAULT_BIN=$(CURDIR)/bin $(GO) test -count=1 -v ./caddymodule/e2etest/

# Run every fuzz target for FUZZTIME each (corpora live in testdata/fuzz).
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./... | grep -v /e2etest); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Proxy vs direct to the same loopback HTTPS upstream; prints req/s,
# p50/p99 and the proxy/direct throughput ratios.
BENCHN ?= 20000x
demo: build vault-test-server
	AGENT_VAULT_BIN=$(CURDIR)/bin $(GO) test -count=1 -run '^TestVaultDemo$$' -v ./caddymodule/e2etest/ | grep -v '^{'; test $${PIPESTATUS[0]} -eq 0

bench: build
	AGENT_VAULT_BIN=$(CURDIR)/bin $(GO) test -run '^$$' -bench BenchmarkProxy -benchtime $(BENCHN) ./caddymodule/e2etest/ | tee bench.out | grep -E '^Benchmark|ok'
	@awk '/^BenchmarkProxy\// { for (i = 1; i < NF; i++) if ($$(i+1) == "req/s") rps[$$1] = $$i } \
	  END { split("keepalive newconn", m, " "); for (k in m) { d = ""; p = ""; \
	    for (n in rps) { if (n ~ "direct-" m[k]) d = rps[n]; if (n ~ "proxy-" m[k]) p = rps[n] } \
	    if (d > 0) printf "%s: proxy %.0f req/s vs direct %.0f req/s = %.2fx\n", m[k], p, d, p / d } }' bench.out

# The same binary built by xcaddy (v0.4.5, run as a Go tool from a
# scratch module so it is not a dependency of ours).
xcaddy:
	mkdir -p .cache/xcaddy
	cd .cache/xcaddy && ( test -f go.mod || $(GO) mod init xcaddy-tool ) && $(GO) get -tool github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
	$(GO) -C .cache/xcaddy tool xcaddy build v2.11.9 --output $(CURDIR)/bin/agent-vault-xcaddy \
	  --with github.com/agentvault/caddy-agent-vault@v0.0.0=$(CURDIR)
	bin/agent-vault-xcaddy list-modules | grep agent_vault

# The real Vault server the hashicorp store tests start (see
# storebackends/hashicorp/vaulttest). Built once into .cache/vault, ~10
# minutes; tests build it on demand otherwise. Prints the binary's path.
.PHONY: vault-test-server
vault-test-server:
	$(GO) run ./storebackends/hashicorp/vaulttest/cmd/buildvault

clean:
	rm -rf bin
