# netnat: build, demo, tests, generated docs. Run as root on Debian/Ubuntu:
#   make demo   the seed story in a throwaway network namespace
#   make test   the whole test suite (kernel tests run in throwaway namespaces)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# rustup puts cargo here; a non-login root shell may not have it on PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)

CARGO ?= cargo
BIN := target/release/netnat

# Debian packages needed to build (libnftnl, libmnl, pkg-config) and to run the demo and tests.
DEB_PACKAGES := libnftnl-dev libmnl-dev pkg-config nftables iproute2 iptables conntrack socat curl python3 e2fsprogs

.PHONY: help deps build demo test man fmt lint check clean

help:
	@echo "make demo    install what is missing, build, run scripts/demo.sh (root)"
	@echo "make test    install what is missing, run every test (root)"
	@echo "make build   cargo build --release"
	@echo "make man     regenerate man/ and completions/ from src/cli.rs"
	@echo "make fmt     cargo fmt"
	@echo "make lint    cargo fmt --check and clippy with warnings as errors"
	@echo "make deps    install the missing Debian packages (apt-get update only if one is missing)"

# Idempotent: asks apt only about packages that are not installed yet.
deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "deps: installing$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q; \
	    apt-get install -y -q --no-install-recommends $$missing; \
	else \
	    echo "deps: all Debian packages present"; \
	fi; \
	command -v $(CARGO) >/dev/null || { \
	    echo "deps: cargo not found: install a Rust toolchain (rustup, Rust 1.85 or newer) and re-run" >&2; \
	    exit 1; \
	}

build:
	$(CARGO) build --release

demo: deps build
	bash scripts/demo.sh

# The kernel tests need root: each re-executes itself in a new network and mount namespace.
test: deps
	$(CARGO) test --all-targets

# Writes man/*.1 and completions/* from the clap definitions (tests/generated_docs.rs);
# without NETNAT_REGENERATE that test fails when the committed files are stale.
man:
	NETNAT_REGENERATE=1 $(CARGO) test --test generated_docs -- --nocapture

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# What to run before committing.
check: lint test

clean:
	$(CARGO) clean
