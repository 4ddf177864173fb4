# fedgate — build, test, demo, benchmarks. Every tool a target needs is installed or built by hack/ scripts into
# bin/ (ignored by git), so these targets work on a fresh machine.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)
# Stamped into every binary and image (internal/version): `git describe --tags --always --dirty`, or "dev".
VERSION ?= $(shell hack/version.sh)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X github.com/fedgate/fedgate/internal/version.version=$(VERSION) -X github.com/fedgate/fedgate/internal/version.revision=$(REVISION)
# Platforms of make images: the first is written as a docker-loadable tarball; with several, an OCI layout holds all.
PLATFORMS ?= linux/amd64

.PHONY: all build images test test-short demo generate verify-generate lint vet bench bench-proxy bench-propagation tools clean conformance

all: build

build: ## hub, spoke and hubctl into bin/
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/hub ./cmd/spoke ./cmd/hubctl

images: ## fedgate/{hub,spoke,hubctl}:$(VERSION) (and :dev) as image tarballs in bin/images, built without a Docker daemon
	$(GO) run ./hack/images -out $(BIN)/images -version "$(VERSION)" -revision "$(REVISION)" -platforms "$(PLATFORMS)"

test: ## every test, with the race detector (what CI runs)
	hack/test.sh

test-short:
	$(GO) test -count=1 -short ./...

demo: build ## hub + two spokes + backends + a cross-cluster canary, traffic shown
	hack/demo.sh

tools: ## protoc plugins into bin/ (protoc itself comes from Debian's protobuf-compiler)
	hack/tools.sh

generate: tools ## regenerate protobuf Go code
	hack/generate.sh

verify-generate: tools ## fail when generated code is stale
	hack/generate.sh --verify

vet:
	$(GO) vet ./...

lint: vet verify-generate
	$(GO) test -count=1 -run 'TestImportBoundaries' ./test/arch/

conformance: ## the upstream Gateway API conformance suite against fedgate (hub + spoke, envtest, stand-in kubelet): prints passed/failed/skipped per profile
	hack/conformance.sh

bench: bench-propagation bench-proxy

bench-proxy: ## side by side with nginx, haproxy and caddy, HTTP/1.1 (wrk) and h2c (h2load), on loopback: prints ratios
	hack/bench-proxy.sh

bench-propagation: ## hub apply -> spoke serving, p50/p99 over 100 changes
	$(GO) test -count=1 -run '^$$' -bench BenchmarkPropagation -benchtime 100x ./test/e2e/

clean:
	rm -rf $(BIN) .cache
