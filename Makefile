# netnat: build, demo, tests, generated docs, package. Run as root on Debian/Ubuntu:
#   make demo   the seed story in a throwaway network namespace
#   make test   the whole test suite (kernel tests run in throwaway namespaces)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# rustup puts cargo here; a non-login root shell may not have it on PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)

CARGO ?= cargo
# Cargo's output directory: ./target unless CARGO_TARGET_DIR says otherwise.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(abspath $(TARGET_DIR))/release/netnat

# Debian packages needed to build (libnftnl, libmnl, pkg-config), to run the demo and tests,
# and to build and check the .deb (dpkg-dev for dpkg-shlibdeps, lintian). The CNI tests run
# netnat behind the reference bridge plugin (containernetworking-plugins) and behind Podman
# with its CNI backend (podman, crun; busybox-static makes the image, as no registry is reached),
# and behind containerd's CRI (containerd; tests/cri/client.py speaks gRPC with python3-grpcio and
# compiles tests/cri/api.proto with python3-grpc-tools).
# prometheus-node-exporter and prometheus (for promtool) check `netnat metrics` in tests/trace_metrics.rs.
# Their packages would start and enable daemons on this host (node_exporter on :9100, the
# Prometheus server on :9090): `make deps` installs them with a policy-rc.d that keeps any service
# from starting (unless the host has its own) and disables the units it installed. The tests start
# their own node_exporter in a throwaway namespace.
# PACKAGE:UNIT pairs: the units `make deps` disables after installing their package (docker.io
# brings docker.service and docker.socket, which would start dockerd on first connection).
TEST_SERVICES := prometheus:prometheus prometheus-node-exporter:prometheus-node-exporter firewalld:firewalld \
	ufw:ufw docker.io:docker.service docker.io:docker.socket containerd:containerd
DEB_PACKAGES := libnftnl-dev libmnl-dev pkg-config nftables iproute2 iptables conntrack socat curl python3 \
	e2fsprogs dpkg-dev lintian containernetworking-plugins podman crun busybox-static prometheus-node-exporter \
	prometheus firewalld ufw docker.io containerd dbus libdbus-1-dev protobuf-compiler python3-grpcio python3-grpc-tools \
	systemd

# `make deb` builds with this cargo-deb, installed from crates.io when missing.
CARGO_DEB_VERSION := 3.8.0

# `make install`: the package's layout under PREFIX (/usr/local by default). The units run
# $(SBINDIR)/netnat and read $(SYSCONFDIR)/netnat/netnat.toml.
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/vendor-completions
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR ?= $(PREFIX)/share/doc/netnat
SYSCONFDIR ?= /etc

.PHONY: help deps build demo test bench bench-quick man fmt lint check clean deb cargo-deb install uninstall

help:
	@echo "make demo    install what is missing, build, run scripts/demo.sh (root)"
	@echo "make test    install what is missing, run every test (root)"
	@echo "make bench   the benchmark suite, BENCHMARKS.md's figures (root; ~23 min; bench-quick: ~4 min)"
	@echo "make build   cargo build --release"
	@echo "make deb     build the Debian package (cargo-deb) into $(TARGET_DIR)/debian/"
	@echo "make install install the package's files under PREFIX (default /usr/local), DESTDIR"
	@echo "make uninstall  remove what make install installed (not the file in /etc)"
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
	    policy=""; \
	    if [ ! -e /usr/sbin/policy-rc.d ]; then \
	        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1; \
	    fi; \
	    rc=0; apt-get install -y -q --no-install-recommends $$missing || rc=$$?; \
	    if [ -n "$$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	    [ $$rc -eq 0 ] || exit $$rc; \
	    for pu in $(TEST_SERVICES); do \
	        case " $$missing " in *" $${pu%%:*} "*) \
	            if command -v systemctl >/dev/null; then systemctl disable "$${pu#*:}" >/dev/null 2>&1 || true; fi;; \
	        esac; \
	    done; \
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
	NETNAT_BIN=$(BIN) bash scripts/demo.sh

# The kernel tests need root: each re-executes itself in a new network and mount namespace.
# tests/package.rs runs `make deb` and `make install` (cargo-deb is installed here, up front).
test: deps cargo-deb
	$(CARGO) test --all-targets

# The benchmark suite: benches/run.sh installs the Debian packages listed in benches/deps (wrk,
# iperf3, nginx, linux-perf, ...) when missing, builds the release binary and writes bench-results/.
bench: deps
	bash benches/run.sh

bench-quick: deps
	bash benches/run.sh --quick

# Writes man/*.1 and completions/* from the clap definitions (tests/generated_docs.rs);
# without NETNAT_REGENERATE that test fails when the committed files are stale.
man:
	NETNAT_REGENERATE=1 $(CARGO) test --test generated_docs -- --nocapture

# The package is checked by tests/package.rs (contents, modes, lintian, the binary inside).
# The release profile strips symbols; --strip also leaves out any debug info a build was given.
deb: deps cargo-deb
	$(CARGO) deb --strip

cargo-deb:
	@$(CARGO) deb --version 2>/dev/null | grep -qx "cargo-deb $(CARGO_DEB_VERSION)" || \
	    $(CARGO) install cargo-deb --locked --version $(CARGO_DEB_VERSION)

# The files of the .deb but the two that only Debian's tools read (changelog.Debian.gz and the
# lintian overrides); tests/package.rs compares the two lists. An existing netnat.toml is kept.
install: build
	install -D -s -m 755 $(BIN) $(DESTDIR)$(SBINDIR)/netnat
	install -d -m 755 $(DESTDIR)$(MANDIR)/man1
	for page in man/*.1; do \
	    gzip -9 -n -c "$$page" > "$(DESTDIR)$(MANDIR)/man1/$${page#man/}.gz"; \
	    chmod 644 "$(DESTDIR)$(MANDIR)/man1/$${page#man/}.gz"; \
	done
	install -D -m 644 completions/netnat.bash $(DESTDIR)$(BASHCOMPDIR)/netnat
	install -D -m 644 completions/_netnat $(DESTDIR)$(ZSHCOMPDIR)/_netnat
	install -d -m 755 $(DESTDIR)$(UNITDIR)
	for unit in systemd/*.service systemd/*.timer systemd/*.socket; do \
	    sed -e 's|/usr/sbin/netnat|$(SBINDIR)/netnat|g' -e 's|/etc/netnat/|$(SYSCONFDIR)/netnat/|g' \
	        "$$unit" > "$(DESTDIR)$(UNITDIR)/$${unit#systemd/}"; \
	    chmod 644 "$(DESTDIR)$(UNITDIR)/$${unit#systemd/}"; \
	done
	[ -e $(DESTDIR)$(SYSCONFDIR)/netnat/netnat.toml ] || \
	    install -D -m 644 packaging/netnat.toml $(DESTDIR)$(SYSCONFDIR)/netnat/netnat.toml
	install -D -m 644 -t $(DESTDIR)$(DOCDIR)/examples rules/demo.toml rules/example-all-options.toml
	install -D -m 644 packaging/copyright $(DESTDIR)$(DOCDIR)/copyright
	@echo "installed; enable at boot with: systemctl daemon-reload && systemctl enable --now netnat.service netnat-reload.service"
	@echo "metrics for node_exporter's textfile collector every 15 s: systemctl enable --now netnat-metrics.timer"
	@echo "Docker network driver (docker network create -d netnat): systemctl enable --now netnat-docker.socket"

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/netnat $(DESTDIR)$(BASHCOMPDIR)/netnat $(DESTDIR)$(ZSHCOMPDIR)/_netnat
	for page in man/*.1; do rm -f "$(DESTDIR)$(MANDIR)/man1/$${page#man/}.gz"; done
	for unit in systemd/*.service systemd/*.timer systemd/*.socket; do rm -f "$(DESTDIR)$(UNITDIR)/$${unit#systemd/}"; done
	rm -rf $(DESTDIR)$(DOCDIR)

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# What to run before committing.
check: lint test

clean:
	$(CARGO) clean
