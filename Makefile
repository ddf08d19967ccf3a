# netdiag: the two commands the README starts with are `make demo` and `make test`.
GO ?= go
BIN := bin/netdiag

.PHONY: demo test deps build vet clean lab-down

build:
	$(GO) build -o $(BIN) ./cmd/netdiag

deps:
	./scripts/install-deps

# The lab plus the main job, end to end, no Slack account needed (root).
demo: deps build
	./$(BIN) demo

# Every test, the root-only lab tests included (they skip without root
# unless CI is set). Fails if any lab namespace is left behind.
test: deps vet
	$(GO) test -count=1 -timeout 15m ./...
	@if ip netns list 2>/dev/null | grep -q '^ndl-'; then \
		echo "lab namespaces left behind:"; ip netns list | grep '^ndl-'; exit 1; fi

vet:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

lab-down: build
	./$(BIN) lab down --all

clean:
	rm -rf bin
