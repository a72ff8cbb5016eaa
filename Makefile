# sipxdp build. `make help` lists the targets.
GO        ?= go
BIN       := bin
GOFLAGS_T ?= -count=1 -timeout 30m
PKGS      := ./...

.PHONY: help generate check-generate build test test-short fuzz lint run bench bench-datapath bench-calls deps clean

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

deps: ## install the Debian packages the tests need (root)
	./scripts/install-deps.sh

generate: ## regenerate BPF objects and Go bindings with the pinned clang-19 (scripts/install-deps.sh --generate)
	$(GO) generate ./bpf/...

check-generate: generate ## fail if the committed BPF objects differ from a fresh generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: generated files are stale: run make generate and commit"; exit 1; }

build: ## build sipd, relayctl and bench into bin/
	$(GO) build -o $(BIN)/ ./cmd/...

test: ## run every test; as root this includes the BPF and network-namespace tests
	$(GO) test $(GOFLAGS_T) $(PKGS)

test-short: ## unit tests only (no root, no namespaces)
	$(GO) test -short $(GOFLAGS_T) $(PKGS)

fuzz: ## run each fuzz target briefly (FUZZTIME, default 10s)
	./scripts/fuzz.sh $${FUZZTIME:-10s}

lint: ## gofmt, go vet, staticcheck and golangci-lint's depguard layering rules (.golangci.yaml)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
	@gobin=$$($(GO) env GOBIN); [ -n "$$gobin" ] || gobin=$$($(GO) env GOPATH)/bin; \
	gcl=$$(command -v golangci-lint || echo "$$gobin/golangci-lint"); \
	if [ -x "$$gcl" ]; then echo "$$gcl run"; "$$gcl" run $(PKGS); \
	elif [ "$${CI:-}" = true ]; then echo "lint: golangci-lint is missing: run scripts/install-deps.sh"; exit 1; \
	else echo "lint: golangci-lint not installed (scripts/install-deps.sh installs it); layering rules not checked"; fi

run: ## run sipd on the embedded default configuration
	$(GO) run ./cmd/sipd

bench: bench-datapath bench-calls ## run the benchmarks (root)

bench-datapath: ## relay CPU per packet for each media path (root; builds its own namespaces)
	$(GO) run ./cmd/bench datapath --path all

bench-calls: build ## CPU and memory per call for each media path at 500 and 800 concurrent calls (root; about 15 minutes)
	$(BIN)/bench calls --scenario all --total 500,800 --cps 100,200 --duration 60s --out out/calls

clean: ## remove build outputs
	rm -rf $(BIN)
