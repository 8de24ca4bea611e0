# healthswitch: `make help` lists the targets.
SHELL   := /bin/bash
.SHELLFLAGS := -eo pipefail -c
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GOFLAGS_BUILD := -trimpath -ldflags="$(LDFLAGS)"

.PHONY: help deps build test test-short lint fmt fuzz demo demo-fail demo-heal demo-failover bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## install (as root, Debian) every package the tests use; .ci/run calls it
	scripts/deps.sh

build: ## build bin/coredns and bin/healthswitch-sidecar
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/coredns ./cmd/coredns
	@if [ -d cmd/healthswitch-sidecar ]; then $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/healthswitch-sidecar ./cmd/healthswitch-sidecar; fi

test: build ## run every test (race detector on) and the runnable commands of the docs
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m -json ./... | $(GO) run ./internal/cmd/testsummary
	scripts/docs-check.sh

test-short: ## quick unit tests only
	$(GO) test -short -count=1 ./...

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

FUZZTIME ?= 30s
FUZZ     ?= .
FUZZFLAGS ?=
fuzz: ## run each fuzz target (or those matching FUZZ) for FUZZTIME (default 30s; 1000000x counts execs); docs/fuzzing.md
	@pkgs=$$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); \
	for pkg in $$pkgs; do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' | { grep -E -- '$(FUZZ)' || true; }); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			out=$$($(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $(FUZZFLAGS) $$pkg 2>&1) || { echo "$$out"; exit 1; }; \
			echo "$$out" | tail -n 3; \
		done; \
	done

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

$(BIN)/hs-demo: build
	$(GO) build -o $(BIN)/hs-demo ./cmd/hs-demo

demo: $(BIN)/hs-demo ## start a local two-cluster setup on loopback and show failover live
	@$(BIN)/hs-demo -bin $(BIN) run

CLUSTER ?= east
demo-fail: ## break a cluster of the running demo: make demo-fail CLUSTER=east
	@test -x $(BIN)/hs-demo || $(GO) build -o $(BIN)/hs-demo ./cmd/hs-demo
	@$(BIN)/hs-demo fail $(CLUSTER)

demo-heal: ## heal it again: make demo-heal CLUSTER=east
	@test -x $(BIN)/hs-demo || $(GO) build -o $(BIN)/hs-demo ./cmd/hs-demo
	@$(BIN)/hs-demo heal $(CLUSTER)

demo-failover: $(BIN)/hs-demo ## scripted failure and recovery; prints the timeline and exits
	@$(BIN)/hs-demo -bin $(BIN) failover

bench: build ## run the benchmarks (about 25 min) and write bench/results.md, results.json and go-bench.txt
	$(GO) run ./bench -bin $(BIN) -out bench
	$(GO) test -run '^$$' -bench . -benchmem -timeout 20m ./plugin/healthswitch ./report ./sidecar ./internal/store ./test \
		| grep -E '^(goos|goarch|pkg|cpu|Benchmark|PASS|FAIL|ok)' | tee bench/go-bench.txt

docs-check: ## run the commands of docs/operations.md that can run here
	@$(MAKE) --no-print-directory build
	scripts/docs-check.sh

clean: ## remove build output
	rm -rf $(BIN)
