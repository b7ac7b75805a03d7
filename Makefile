# agent-vault for Caddy. The two commands a newcomer needs:
#   AGENT_VAULT_MASTER_PASSWORD='a long passphrase' make run   # build and start
#   make test                                                  # every test
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/agentvault/caddy-agent-vault.Version=$(VERSION)

.PHONY: build run test unit e2e fuzz bench clean

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/agent-vault ./caddymodule/cmd/agent-vault
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/av-launch ./launcher/cmd/av-launch

run: build
	bin/agent-vault run --config Caddyfile.example

# Everything: vet, unit and fuzz-seed tests (race detector on the
# packages without Caddy, whose race build is slow), then the
# end-to-end journeys against the built binaries and real curl.
test: build
	$(GO) vet ./...
	$(GO) test -race ./storebackends/... ./caddymodule/services/... ./caddymodule/egress/... ./caddymodule/leafcerts/... ./caddymodule/sessions/... ./launcher/...
	$(GO) test ./...
	AGENT_VAULT_BIN=$(CURDIR)/bin $(GO) test -count=1 -v ./caddymodule/e2etest/

# Run every fuzz target for FUZZTIME each (corpora live in testdata/fuzz).
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

bench: build
	AGENT_VAULT_BIN=$(CURDIR)/bin $(GO) run ./caddymodule/e2etest/cmd/bench

clean:
	rm -rf bin
