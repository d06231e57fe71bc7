# fly-autoscaler (Rust). `make help` lists the targets.

MUSL_TARGET := x86_64-unknown-linux-musl
STATIC_BIN  := target/$(MUSL_TARGET)/release/fly-autoscaler
COMMIT      := $(shell git rev-parse HEAD 2>/dev/null)
IMAGE       ?= fly-autoscaler-rs:latest
# vfs storage works anywhere, a container included; a store made with another driver needs
# BUILDAH=buildah.
BUILDAH     ?= buildah --storage-driver vfs

# ring (TLS) compiles C for the musl target with Debian's musl-gcc.
export CC_x86_64_unknown_linux_musl := musl-gcc

.PHONY: help deps build test fuzz lint fmt demo bench static image clean

help:
	@echo "make demo    run the autoscaler end to end: local Prometheus + Machines API simulator"
	@echo "make test    install test dependencies if missing, then run every test"
	@echo "make fuzz    the property tests (planner, machine-list reader, config files), long"
	@echo "make build   debug build"
	@echo "make static  static, stripped musl release binary ($(STATIC_BIN))"
	@echo "make image   image FROM scratch: docker when an engine answers, else buildah"
	@echo "make bench   speed and memory numbers, printed as a table"
	@echo "make lint    rustfmt check and clippy with warnings as errors"
	@echo "make fmt     format the code"

deps:
	@./.ci/deps

build:
	cargo build

# Every test of the workspace: unit tests, the integration tests (tests/it) against real
# Prometheus and Temporal servers and the Machines API simulator (flysim, with its own
# self-tests), and the scratch-container test of the static binary.
test: deps lint static
	FAS_STATIC_BIN=$(CURDIR)/$(STATIC_BIN) cargo test --workspace --all-targets

# The property tests of the planner, the machine-list reader and config files, with many
# more cases than `make test` runs (debug build: overflow checks stay on).
FUZZ_CASES ?= 100000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) cargo test --lib properties

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

demo: deps
	cargo build --bin fly-autoscaler --example demo
	./target/debug/examples/demo

# BENCH_ARGS: `--quick`, or words of section names to run only those (e.g. `lists`).
bench: deps static
	cargo build --release --bin fly-autoscaler --example bench
	FAS_STATIC_BIN=$(CURDIR)/$(STATIC_BIN) ./target/release/examples/bench $(BENCH_ARGS)

static:
	@./.ci/deps >/dev/null
	FAS_COMMIT=$(COMMIT) cargo build --release --target $(MUSL_TARGET) --bin fly-autoscaler
	@ls -l $(STATIC_BIN)

# `docker build` when a Docker engine answers; else Debian's buildah builds the same
# Dockerfile without a daemon (chroot isolation works inside a container too).
image: static
	@if docker info >/dev/null 2>&1; then \
	  echo "docker build -t $(IMAGE)"; \
	  docker build --build-arg BINARY=$(STATIC_BIN) -t $(IMAGE) . ; \
	elif command -v buildah >/dev/null 2>&1; then \
	  echo "no Docker engine: $(BUILDAH) bud -t $(IMAGE)"; \
	  $(BUILDAH) bud --isolation chroot --build-arg BINARY=$(STATIC_BIN) -t $(IMAGE) . && \
	  echo "push: $(BUILDAH) push $(IMAGE) docker://REGISTRY/NAME:TAG" && \
	  echo "run:  $(BUILDAH) run --isolation chroot \$$($(BUILDAH) from $(IMAGE)) -- /fly-autoscaler version"; \
	else \
	  echo "make image needs a Docker engine or buildah (apt-get install buildah)" >&2; exit 1; \
	fi

clean:
	cargo clean
