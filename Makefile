# Lumen: the two commands a newcomer needs are `make lab` and `make test`.
GO ?= go
BIN := $(CURDIR)/bin
TOPOLOGY ?= examples/lab/topology.yaml

.PHONY: fuzz all build deps tools lab lab-down test generate check-generated lint bench image static manifests tools tool-hubble tool-k8s tool-helm tool-coredns

all: build

deps:
	./hack/install-deps.sh

build:
	$(GO) build -o $(BIN)/ ./cmd/lumen ./cmd/lumen-agent ./cmd/lumen-cni ./cmd/lumen-relay ./cmd/lumen-operator

# Static binaries (CGO_ENABLED=0: the images have no libc) and the container
# images as docker-save tarballs in bin/images (no registry, no engine):
# lumen.tar (agent, CNI, operator, CLI), pause.tar and, when the tools are
# built, agnhost.tar and glibc-dns-testing.tar for the e2e tests
# (hack/build-k8s.sh) and coredns.tar, the real-node lab's cluster DNS
# (hack/build-coredns.sh).
VERSION ?= dev
# host programs the e2e tests' probes exec in agnhost/glibc-dns-testing
# (Alpine's and Debian's images have them): SRC:DST, those present
E2E_TOOLS := /bin/dash:/bin/sh /bin/nc.openbsd:/bin/nc /usr/bin/dig:/bin/dig /usr/bin/getent:/bin/getent \
	/usr/bin/seq:/bin/seq /usr/bin/sleep:/bin/sleep /bin/hostname:/bin/hostname /usr/bin/cat:/bin/cat \
	/usr/bin/curl:/bin/curl /usr/bin/timeout:/bin/timeout /usr/bin/nslookup:/bin/nslookup /usr/bin/wget:/bin/wget
static:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/static/ ./cmd/lumen ./cmd/lumen-agent ./cmd/lumen-cni ./cmd/lumen-operator ./internal/image/pause

image: static
	$(GO) run ./cmd/lumen-image --bin-dir $(BIN)/static --out $(BIN)/images --version $(VERSION) \
		$$(a=$$(./hack/build-k8s.sh --bin-dir 2>/dev/null)/agnhost; [ -x "$$a" ] && echo --agnhost $$a) \
		$$(for t in $(E2E_TOOLS); do [ -x "$${t%%:*}" ] && echo --e2e-tool $$t; done) \
		$$(c=$$(./hack/build-coredns.sh --path); [ -x "$$c" ] && echo --coredns $$c)

# Installs what is missing, builds, brings up the example lab and shows it.
lab: deps build
	$(BIN)/lumen lab up -f $(TOPOLOGY)
	$(BIN)/lumen lab status
	$(BIN)/lumen lab probe --matrix --family all

lab-down:
	$(BIN)/lumen lab down

# The real components the tests drive: the hubble CLI and a Kubernetes control plane,
# built once from the Go module proxy into ~/.cache/lumen.
# Also the helm CLI (chart tests, real-node lab) and CoreDNS (its cluster DNS). In parallel: make -j4 tools.
tools: tool-hubble tool-k8s tool-helm tool-coredns
tool-hubble:
	./hack/build-hubble.sh >/dev/null
tool-k8s:
	./hack/build-k8s.sh --e2e >/dev/null
tool-helm:
	./hack/build-helm.sh >/dev/null
tool-coredns:
	./hack/build-coredns.sh >/dev/null

# The chart rendered to plain manifests (deploy/manifests/lumen.yaml).
manifests:
	./hack/render-manifests.sh

# Installs what is missing (tools, images), then runs every test (privileged ones need root).
test: deps tools image
	$(GO) build ./...
	$(GO) test -count=1 -timeout 40m ./...

# Every fuzz target a short run beyond its seeds (FUZZTIME=3s each; CI runs it).
fuzz:
	./hack/fuzz.sh

bench: deps build
	$(BIN)/lumen bench datapath

generate:
	$(GO) generate ./internal/datapath/...

# CI: the committed bpf2go output must match what clang produces.
check-generated: generate
	git diff --exit-code -- internal/datapath

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
