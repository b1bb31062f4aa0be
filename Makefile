SHELL := /bin/bash
# redleader — build, test and CI entry points. `make help` lists them.

GO        ?= go
BIN       := bin/redleader
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
PKGS       = $(shell $(GO) list ./... | grep -v -e /lab$$)
FUZZTIME  ?= 30s
# staticcheck, pinned: `go run` fetches this exact version through the module proxy.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Tests run in a private network namespace (loopback only, multicast allowed
# on lo) when we may create one, so no test packet can reach a real network.
# Without that right (not root), tests run as they are and the multicast
# ones skip themselves.
NETNS := $(shell unshare -n true 2>/dev/null && echo yes)
ifeq ($(NETNS),yes)
PRIVATE = unshare -n sh -c 'ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && exec "$$0" "$$@"'
else
PRIVATE =
endif

.PHONY: all build run test lab-test bench-lab bench fuzz lint cross dist dist-check ci clean help

all: build

help:
	@echo "build     build $(BIN)"
	@echo "run       run the agent with embedded defaults (on this machine's LAN)"
	@echo "test      unit and in-process tests with -race, in a private netns"
	@echo "lab-test  end-to-end tests in network namespaces (root; binary without -race)"
	@echo "bench     benchmarks"
	@echo "bench-lab data-path bench in the lab: redleader vs curl on every machine, one table (root; ~15 min)"
	@echo "fuzz      run every fuzz target for FUZZTIME (default 30s) each"
	@echo "lint      gofmt, go vet and staticcheck (fails on any finding)"
	@echo "cross     build for windows and darwin"
	@echo "dist      release binaries in dist/: linux amd64+arm64, windows amd64, darwin arm64, SHA256SUMS"
	@echo "dist-check dist into a temp dir, verify the checksums and the stamped version"
	@echo "ci        lint, build, cross, test, lab-test (what .ci/run calls)"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/redleader

run: build
	./$(BIN) agent

test:
	$(GO) mod download
	$(PRIVATE) $(GO) test -race -count=1 -timeout 10m $(PKGS)

lab-test: build
	REDLEADER_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 15m -v ./lab/ 2>&1 | grep -v -e '^=== ' -e '^    --- PASS'; exit $${PIPESTATUS[0]}

# Local directory mode (no package argument): the test's stdout, the table, is shown.
bench-lab: build
	cd lab && REDLEADER_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 45m -run '^TestDataPathBench$$' -args -bench-lab

# BENCH selects benchmarks by name (default: all), e.g.
# make bench BENCH='ServeBlock|ParseProbe' PKGS='./peer/retrieval ./discovery'
BENCH ?= .
bench:
	$(PRIVATE) $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -timeout 20m $(PKGS)

fuzz:
	@set -e; for pkg in $(PKGS); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(PRIVATE) $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

cross:
	GOOS=windows GOARCH=amd64 $(GO) build -o /dev/null ./...
	GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null ./...

# Release builds: static (no cgo), version stamped, one checksum file.
# DIST names the output directory (default dist/).
DIST      ?= dist
PLATFORMS := linux/amd64 linux/arm64 windows/amd64 darwin/arm64
dist:
	@mkdir -p $(DIST) && rm -f $(DIST)/redleader-* $(DIST)/SHA256SUMS
	@set -e; for p in $(PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
	  out=$(DIST)/redleader-$(VERSION)-$$os-$$arch$$ext; \
	  echo "build $$out"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$out ./cmd/redleader; \
	done
	cd $(DIST) && sha256sum redleader-* > SHA256SUMS && cat SHA256SUMS

# What CI checks of `make dist` (it also covers cross): four binaries, their
# checksums, and the version stamped in the one this machine runs.
dist-check:
	@set -e; d=$$(mktemp -d); trap 'rm -rf $$d' EXIT; v=v0.0.0-distcheck; \
	  $(MAKE) --no-print-directory dist DIST=$$d VERSION=$$v; \
	  n=$$(ls $$d/redleader-* | wc -l); [ $$n -eq 4 ] || { echo "dist: $$n binaries, want 4"; exit 1; }; \
	  (cd $$d && sha256sum -c --quiet SHA256SUMS); \
	  for f in $$d/redleader-*; do \
	    case $$f in *-$$($(GO) env GOOS)-$$($(GO) env GOARCH)*) \
	      out=$$($$f version); echo "$$f version: $$out"; \
	      case "$$out" in *$$v*) ;; *) echo "dist: $$f version says \"$$out\", want $$v"; exit 1;; esac;; \
	    esac; \
	  done; \
	  file $$d/redleader-*-linux-* 2>/dev/null | grep -v 'statically linked' && { echo "dist: a Linux binary is not static"; exit 1; } || true; \
	  echo "dist-check: 4 binaries, checksums and version $$v OK"

ci: lint build dist-check test lab-test

clean:
	rm -rf bin
