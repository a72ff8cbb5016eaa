# sipxdp build. `make help` lists the targets.
GO        ?= go
BIN       := bin
GOFLAGS_T ?= -count=1 -timeout 30m
PKGS      := ./...
PREFIX    ?= /usr/local
DESTDIR   ?=
# A Debian package version (scripts/version.sh); make install and make deb
# build it into sipd (sipd.Version), stripped of debug symbols.
VERSION   ?= $(shell ./scripts/version.sh)
GOARCH    ?= $(shell $(GO) env GOARCH)
LDFLAGS   := -s -w -X sipxdp/sipd.Version=$(VERSION)
DEB       := dist/sipxdp_$(VERSION)_$(GOARCH).deb

.PHONY: help generate check-generate build test test-short fuzz lint run bench bench-datapath bench-calls bench-scale deps clean install deb check-package

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

lint: ## gofmt, go mod tidy -diff, go vet, staticcheck and golangci-lint's depguard layering rules (.golangci.yaml)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy and commit the result"; exit 1; }
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

bench-calls: build ## CPU and memory per call for each media path, plain and bridged (srtp), and on two relay hosts (relays), at 500 and 800 concurrent calls (root; about 21 minutes)
	$(BIN)/bench calls --scenario all --total 500,800 --cps 100,200 --duration 60s --out out/calls

bench-scale: build ## relay hosts behind one sipd, and two sipd on one location table in Redis, against one host (root; bench/README.md, "Scale-out"; about 9 minutes)
	$(BIN)/bench calls --scenario none,tc,relays --total 500 --cps 100 --duration 40s --out out/calls-relays
	$(BIN)/bench itsp --subscribers 500000 --proxies 2 --store redis --duration 30s --sipd $(BIN)/sipd --out out/itsp-redis
	$(BIN)/bench itsp --subscribers 500000 --duration 30s --sipd $(BIN)/sipd --out out/itsp-file

install: ## install sipd and relayctl into DESTDIR/PREFIX/bin (PREFIX=/usr/local), the units, the sysusers.d user, and /etc/sipd examples unless present
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/sipd ./cmd/relayctl
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/lib/systemd/system $(DESTDIR)/usr/lib/sysusers.d \
		$(DESTDIR)/etc/sipd $(DESTDIR)$(PREFIX)/share/doc/sipxdp
	install -m 0755 $(BIN)/sipd $(BIN)/relayctl $(DESTDIR)$(PREFIX)/bin/
	for u in sipd sipd-relay; do \
		sed -e 's#/usr/bin/sipd #$(PREFIX)/bin/sipd #' -e 's#/usr/share/doc/sipxdp#$(PREFIX)/share/doc/sipxdp#' \
			packaging/$$u.service >$(DESTDIR)/lib/systemd/system/$$u.service && \
		chmod 0644 $(DESTDIR)/lib/systemd/system/$$u.service || exit 1; \
	done
	install -m 0644 packaging/sipxdp.sysusers $(DESTDIR)/usr/lib/sysusers.d/sipxdp.conf
	for c in sipd sipd-relay; do \
		[ -e $(DESTDIR)/etc/sipd/$$c.yaml ] || install -m 0644 packaging/$$c.yaml $(DESTDIR)/etc/sipd/ || exit 1; \
	done
	install -m 0644 README.md sipd/users.example $(DESTDIR)$(PREFIX)/share/doc/sipxdp/
	@[ -n "$(DESTDIR)" ] || echo "make install: then, as root: systemd-sysusers && systemctl daemon-reload"

deb: ## build the Debian package dist/sipxdp_VERSION_ARCH.deb with nfpm (packaging/nfpm.yaml)
	rm -rf dist/bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/bin/ ./cmd/sipd ./cmd/relayctl
	VERSION='$(VERSION)' GOARCH='$(GOARCH)' $(GO) tool nfpm package -f packaging/nfpm.yaml -p deb -t $(DEB)

check-package: deb ## install the .deb with dpkg, check its files, user and units (systemd-analyze verify), purge it (root)
	./scripts/check-package.sh $(DEB)

clean: ## remove build outputs
	rm -rf $(BIN) dist
