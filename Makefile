# netdiag: the two commands the README starts with are `make demo` and `make test`.
GO ?= go
BIN := bin/netdiag

.PHONY: demo test deps build vet clean lab-down bench bpf

# Static (no cgo): one binary that runs on any node image, and no dynamic
# loader work at every start of a short-lived capture or agent call.
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/netdiag
	CGO_ENABLED=0 $(GO) build -o $(BIN)-agent ./cmd/netdiag-agent

deps:
	./scripts/install-deps

# The lab plus the main job, end to end, no Slack account needed (root).
demo: deps build
	./$(BIN) demo

# Every test, the root-only lab tests included (they skip without root
# unless CI is set), then every fuzz target for a fixed budget (a crash
# fails). Fails if any lab namespace is left behind.
# Only namespaces that appear during this run count as left behind: a lab
# someone is using on the same machine is not the tests' doing.
test: deps vet
	@ip netns list 2>/dev/null | awk '/^ndl-/{print $$1}' | sort > .netns-before
	$(GO) test -count=1 -timeout 15m ./...
	./scripts/fuzz
	@ip netns list 2>/dev/null | awk '/^ndl-/{print $$1}' | sort | comm -13 .netns-before - > .netns-left; \
	rm -f .netns-before; \
	if [ -s .netns-left ]; then echo "lab namespaces left behind:"; cat .netns-left; rm -f .netns-left; exit 1; fi; \
	rm -f .netns-left

vet:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# Regenerate the drops program from collectors/drops/bpf/drops.c (only when
# the C changes; the object is committed so that building needs no clang).
bpf:
	apt-get install -y --no-install-recommends clang llvm libbpf-dev
	cd collectors/drops && $(GO) generate

lab-down: build
	./$(BIN) lab down --all

# Speed figures: capture next to tcpdump, path MTU, all collectors, diagnose,
# the drops program's cost, the firewall tracer on real-sized rule sets (root).
bench: deps build
	./$(BIN) bench capture
	./$(BIN) bench pmtu
	./$(BIN) bench collectors
	./$(BIN) bench diagnose
	./$(BIN) bench drops
	./$(BIN) bench tracer
	./$(BIN) bench agent
	./$(BIN) bench store
	$(GO) test -run '^$$' -bench . -benchtime 20x ./bot/digest/
	./$(BIN) lab bench --instance labbench

clean:
	rm -rf bin
