# The project's entry points; CI runs .ci/run, which uses the same commands.
GO ?= go

.PHONY: all build fmt vet test test-short fuzz bench bench-load cross demo check gen
all: check

build:
	CGO_ENABLED=0 $(GO) build -o fieldgate ./cmd/fieldgate

fmt:
	gofmt -s -w .

vet:
	$(GO) vet ./...

test:
	$(GO) test -race -count=1 ./...

test-short:
	$(GO) test -race -count=1 -short ./...

fuzz:
	$(GO) test -run=NONE -fuzz=FuzzDecodeBatch -fuzztime=30s ./telemetry

bench:
	$(GO) test -run=NONE -bench=. -benchmem -count=10 ./telemetry ./buffer ./uplink/... ./collector/... > new.txt

bench-load:
	$(GO) run ./cmd/fieldbench -runs 3

cross:
	CGO_ENABLED=0 GOARCH=arm64 $(GO) build ./...
	CGO_ENABLED=0 GOARCH=arm GOARM=7 $(GO) build ./...
	CGO_ENABLED=0 GOARCH=386 $(GO) build ./...

# Regenerates committed protobuf code (needs protoc and protoc-gen-go v1.36.12 on PATH).
gen:
	sh uplink/sparkplug/gen.sh

demo:
	$(GO) run ./cmd/fieldgate demo

check:
	bash .ci/run
