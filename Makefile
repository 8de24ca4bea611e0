# healthswitch: `make help` lists the targets.
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GOFLAGS_BUILD := -trimpath -ldflags="$(LDFLAGS)"

.PHONY: help build test test-short lint fmt demo demo-failover bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/coredns and bin/healthswitch-sidecar
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/coredns ./cmd/coredns
	@if [ -d cmd/healthswitch-sidecar ]; then $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/healthswitch-sidecar ./cmd/healthswitch-sidecar; fi

test: build ## run every test (race detector on); needs the binaries
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...

test-short: ## quick unit tests only
	$(GO) test -short -count=1 ./...

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

demo: build ## start a local two-cluster setup on loopback and show failover live
	@echo "make demo: not yet (issue 6)"

bench: build ## run the benchmarks and write bench/results.md
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean: ## remove build output
	rm -rf $(BIN)
