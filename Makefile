# Berth: the commands the README names. Each installs what it needs first.
#   make up      a working single-node Berth on this machine (foreground; Ctrl-C stops it)
#   make test    the whole test suite (unit + end-to-end on real containerd)
#   make bench   benchmarks; tables on stdout, JSON lines in target/bench/
#   make lint    rustfmt and clippy, warnings are errors
#   make dist    Debian packages (berth-agent, berth-coordinator, berth) in target/debian/,
#                and the agent's and coordinator's container images (images/component.sh)

SHELL := /bin/bash
export BERTH_CACHE ?= /var/cache/berth
CARGO ?= cargo

# Debian packages the project needs at run and test time.
DEBIAN_PACKAGES := containerd runc git protobuf-compiler docker-registry umoci skopeo mmdebstrap \
	nftables iproute2 util-linux busybox-static e2fsprogs golang-github-containers-common \
	apache2-utils curl ca-certificates postgresql python3 python3-venv openssh-client openssh-server tmux chromium \
	restic xfsprogs prometheus systemd-container ansible ansible-lint

.PHONY: deps images build up test bench lint dist

deps:
	@scripts/deps.sh $(DEBIAN_PACKAGES)

images: deps
	@images/build.sh tiny >/dev/null
	@images/build.sh dev >/dev/null

build: deps
	$(CARGO) build --locked --workspace

up: build images
	@scripts/up.sh

# The tests spawn target/debug/berth-agent: build every target first so it is current.
test: deps images
	@scripts/schemathesis.sh --version >/dev/null
	@scripts/moto.sh --install
	@scripts/oidc-provider.sh --install
	@scripts/openmetrics-check.sh --install
	@scripts/dist.sh --install-tool
	@scripts/debian-rootfs.sh >/dev/null
	@scripts/kubernetes-validate.sh --install
	@scripts/previous-build.sh >/dev/null
	$(CARGO) build --locked --workspace --all-targets
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --locked --workspace --no-fail-fast; \
	else \
		$(CARGO) test --locked --workspace --no-fail-fast; \
	fi

bench: deps images
	$(CARGO) build --locked --release -p berth-agent -p berth-coordinator -p berth-cli
	BERTH_AGENT_BIN=$(CURDIR)/target/release/berth-agent $(CARGO) bench --locked -p berth-tests --bench agent
	BERTH_AGENT_BIN=$(CURDIR)/target/release/berth-agent $(CARGO) bench --locked -p berth-tests --bench coordinator
	BERTH_AGENT_BIN=$(CURDIR)/target/release/berth-agent $(CARGO) bench --locked -p berth-tests --bench density
	@scripts/deps.sh buildah
	BERTH_AGENT_BIN=$(CURDIR)/target/release/berth-agent $(CARGO) bench --locked -p berth-tests --bench repos
	BERTH_AGENT_BIN=$(CURDIR)/target/release/berth-agent $(CARGO) bench --locked -p berth-tests --bench prebuilds
	BERTH_AGENT_BIN=$(CURDIR)/target/release/berth-agent $(CARGO) bench --locked -p berth-tests --bench cold_start
	BERTH_AGENT_BIN=$(CURDIR)/target/release/berth-agent $(CARGO) bench --locked -p berth-tests --bench backup
	BERTH_AGENT_BIN=$(CURDIR)/target/release/berth-agent $(CARGO) bench --locked -p berth-tests --bench portal

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

dist: deps
	@scripts/dist.sh --images
