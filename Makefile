# agent-vault for Caddy. The two commands a newcomer needs:
#   AGENT_VAULT_MASTER_PASSWORD='a long passphrase' make run   # build and start
#   make test                                                  # every test
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/agentvault/caddy-agent-vault.Version=$(VERSION)

.PHONY: build run test demo fuzz bench bench-scan bench-state bench-confine xcaddy screenshots clean
SHELL := /bin/bash

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/agent-vault ./caddymodule/cmd/agent-vault
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/av-launch ./launcher/cmd/av-launch

run: build
	bin/agent-vault run --config Caddyfile.example

# Everything: vet, every unit, in-process and fuzz-seed test under the
# race detector, then the end-to-end journeys against race-built
# binaries (bin/race) and real clients; a data race reported by the
# server fails the test that started it.
#
# Run as root (CI, a fresh container) the run is strict: `deps` has
# installed every tool, so a test that would skip for a missing tool,
# namespace or root fails instead (internal/testenv).
STRICT ?= $(shell [ "$$(id -u)" = 0 ] && echo 1 || echo 0)
test: deps build vault-test-server
	$(GO) vet ./...
	AGENT_VAULT_STRICT_TESTS=$(STRICT) $(GO) test -race $$($(GO) list ./... | grep -v /e2etest)
	$(GO) build -race -ldflags '$(LDFLAGS)' -o bin/race/agent-vault ./caddymodule/cmd/agent-vault
	$(GO) build -race -ldflags '$(LDFLAGS)' -o bin/race/av-launch ./launcher/cmd/av-launch
	AGENT_VAULT_STRICT_TESTS=$(STRICT) AGENT_VAULT_BIN=$(CURDIR)/bin/race $(GO) test -count=1 -timeout 30m -v ./caddymodule/e2etest/

# What the tests run besides Go: the real clients (curl, git, wget,
# python3, node and npm), for the security tests setcap, ip and
# unshare, PostgreSQL for the state database tests (internal/pgtest),
# and Chromium for the web UI journeys (e2etest/webui_*). Installed
# from Debian when missing and running as root with apt-get; otherwise
# the missing packages are named and the run stops. Debian keeps the
# PostgreSQL server binaries off PATH, in /usr/lib/postgresql/<version>/bin:
# that "postgres" entry is a file check. The client matrix
# (e2etest/client_matrix_test.go) also runs pip and requests under the
# python3 on PATH: "pip" and "pyrequests" check that one.
DEPS := curl:curl git:git wget:wget python3:python3 pip:python3-pip pyrequests:python3-requests node:nodejs npm:npm setcap:libcap2-bin ip:iproute2 unshare:util-linux postgres:postgresql chromium:chromium
.PHONY: deps
deps:
	@missing=""; for dep in $(DEPS); do \
	  case $${dep%%:*} in \
	  postgres) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 ;; \
	  pip) python3 -m pip --version >/dev/null 2>&1 ;; \
	  pyrequests) python3 -c 'import requests' >/dev/null 2>&1 ;; \
	  *) command -v $${dep%%:*} >/dev/null ;; \
	  esac || missing="$$missing $${dep#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make deps: installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "make deps: the tests need these Debian packages:$$missing"; exit 1; fi

# The web UI screenshots in docs/ (ui-overview, ui-credentials,
# ui-services, ui-activity, ui-sessions; 1280x800 PNG), taken by the
# browser journeys (caddymodule/e2etest/webui_journeys_test.go) in
# Debian's chromium against a real server and the test Vault.
screenshots: build deps vault-test-server
	AGENT_VAULT_BIN=$(CURDIR)/bin AGENT_VAULT_STRICT_TESTS=1 AGENT_VAULT_SCREENSHOTS=$(CURDIR)/docs \
	  $(GO) test -count=1 -timeout 10m -run '^TestWebUIJourneys$$' ./caddymodule/e2etest/

# Run every fuzz target for FUZZTIME each (corpora live in testdata/fuzz).
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./... | grep -v /e2etest); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

demo: build vault-test-server
	AGENT_VAULT_BIN=$(CURDIR)/bin $(GO) test -count=1 -run '^TestVaultDemo$$' -v ./caddymodule/e2etest/ | grep -v '^{'; test $${PIPESTATUS[0]} -eq 0

# BenchmarkProxy (caddymodule/e2etest/bench_test.go): direct vs the
# floor (a bare Go MITM in its own process) vs the proxy vs the proxy
# with disable_activity_log (proxy-noact), against one
# loopback HTTPS upstream reached by a DNS name (private mount
# namespace), keep-alive with 16 and 4 clients and a new connection per
# request with 4. Prints req/s, p50/p99, CPU per request of the floor
# and the server, and the median over interleaved rounds of the ratios
# proxy/direct, proxy/floor, CPU proxy/floor and the activity log's
# proxy/proxy-noact (throughput and CPU). BENCHN rounds (as
# -benchtime Nx) of BENCHROUND per mode; ~BENCHN x BENCHROUND x 12 plus
# set-up. BENCHPROFILE (empty: none) receives a CPU profile of the
# server during an extra BENCHPROFILESECS proxy new-connection run (and
# the floor's in BENCHPROFILE-floor.pprof); BENCHPROFILE-keepalive.pprof
# and -keepalive-noact.pprof the server's and proxy-noact's during
# keep-alive runs with 16 clients, for the activity log's cost:
#   go tool pprof -top -diff_base bench-cpu-keepalive-noact.pprof bench-cpu-keepalive.pprof
BENCHN ?= 5x
BENCHROUND ?= 2s
BENCHPROFILE ?= $(CURDIR)/bench-cpu.pprof
BENCHPROFILESECS ?= 10
# BenchmarkProxyBody (bench_body_test.go) follows: a 1 KiB JSON body
# with one placeholder against the same request without a body.
# The response scanner's own benchmarks (caddymodule/scrub/bench_test.go,
# MB/s with 1 and 10 secrets, no match and with matches) and the request
# body rewriter's (10 MiB without a placeholder) run first, the
# state database's (bench-state) last; all go to bench.out.
bench: build bench-scan
	set -o pipefail; AGENT_VAULT_BIN=$(CURDIR)/bin BENCH_ROUND=$(BENCHROUND) \
	  BENCH_CPUPROFILE=$(BENCHPROFILE) BENCH_PROFILE_SECONDS=$(BENCHPROFILESECS) \
	  $(GO) test -count=1 -timeout 30m -run '^$$' -bench '^(BenchmarkProxy(Body)?|BenchmarkWebSocketEcho)$$' -benchtime $(BENCHN) \
	  ./caddymodule/e2etest/ | tee -a bench.out
	$(MAKE) bench-confine
	$(MAKE) bench-state

# What av-launch --confine costs (caddymodule/e2etest/confine_bench_test.go):
# start-up (av-launch -- true) and the latency of a Python agent's
# requests, each on a new connection, plain and confined alternating in
# each of BENCHCONFINEN rounds; appended to bench.out.
BENCHCONFINEN ?= 40x
bench-confine: build
	set -o pipefail; AGENT_VAULT_BIN=$(CURDIR)/bin $(GO) test -count=1 -timeout 30m -run '^$$' -bench '^BenchmarkConfine$$' \
	  -benchtime $(BENCHCONFINEN) ./caddymodule/e2etest/ | tee -a bench.out

# The state database (caddymodule/e2etest/cluster_bench_test.go), on a
# private PostgreSQL (internal/pgtest) and SQLite, appended to bench.out:
# BenchmarkClusterRevocation, two brokers on one database, BENCHREVOKES
# sessions revoked on one, each timed until the other's proxy refuses it
# (p50/p99/max); BenchmarkStartup, a database holding
# BENCHSTARTUPSERVICES services and BENCHSTARTUPSESSIONS live sessions,
# the broker's start until "serving initial configuration" and until the
# first proxied request succeeds (median of BENCHSTARTUPROUNDS starts),
# on SQLite and on PostgreSQL.
BENCHREVOKES ?= 100
BENCHSTARTUPSERVICES ?= 10000
BENCHSTARTUPSESSIONS ?= 10000
BENCHSTARTUPROUNDS ?= 3
# BenchmarkActivityQuery (caddymodule/state/activity_test.go): filtered
# pages (newest, by agent, session, host+status, decision, a deep
# cursor) of an activity log of BENCHACTIVITYROWS entries, on SQLite
# and PostgreSQL, in ms/query. Filling the table takes minutes.
BENCHACTIVITYROWS ?= 1000000
bench-state: build deps
	set -o pipefail; AGENT_VAULT_BIN=$(CURDIR)/bin AGENT_VAULT_STRICT_TESTS=$(STRICT) BENCH_REVOCATIONS=$(BENCHREVOKES) \
	  BENCH_STARTUP_SERVICES=$(BENCHSTARTUPSERVICES) BENCH_STARTUP_SESSIONS=$(BENCHSTARTUPSESSIONS) \
	  BENCH_STARTUP_ROUNDS=$(BENCHSTARTUPROUNDS) \
	  $(GO) test -count=1 -timeout 30m -run '^$$' -bench '^Benchmark(ClusterRevocation|Startup)$$' -benchtime 1x \
	  ./caddymodule/e2etest/ | tee -a bench.out
	set -o pipefail; AGENT_VAULT_STRICT_TESTS=$(STRICT) BENCH_ACTIVITY_ROWS=$(BENCHACTIVITYROWS) \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench '^BenchmarkActivityQuery$$' -benchtime 20x \
	  ./caddymodule/state/ | tee -a bench.out

bench-scan:
	set -o pipefail; $(GO) test -count=1 -run '^$$' -bench . ./caddymodule/scrub/ | tee bench.out
	set -o pipefail; $(GO) test -count=1 -run '^$$' -bench 'BodyRewriter' ./caddymodule/services/ | tee -a bench.out

# Load and soak (caddymodule/e2etest/load_test.go), not part of test:
# LOADAGENTS agents with distinct sessions through the proxy for
# LOADTIME (requests, errors, p50/p99), then LOADTUNNELS idle
# intercepted tunnels (server RSS, fds and goroutines per tunnel, and
# back to baseline once they close). LOADPROFILE=file: a CPU profile of
# the server during the agents' run.
LOADTIME ?= 60s
LOADAGENTS ?= 1000
LOADTUNNELS ?= 10000
LOADPROFILE ?=
.PHONY: load
load: build
	set -o pipefail; AGENT_VAULT_BIN=$(CURDIR)/bin LOADTIME=$(LOADTIME) LOAD_AGENTS=$(LOADAGENTS) LOAD_TUNNELS=$(LOADTUNNELS) \
	  LOAD_CPUPROFILE=$(LOADPROFILE) \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench '^BenchmarkLoad' -benchtime 1x \
	  ./caddymodule/e2etest/ | tee load.out

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
