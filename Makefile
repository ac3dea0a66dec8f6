# Keelson's front door. `make demo` and `make test` do everything on a fresh
# Debian 12 machine, installing what they need (see README.md).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export KEELSON_CACHE ?= $(HOME)/.cache/keelson
CARGO ?= cargo
OUT := out
# Binaries that run on the node are linked statically (no libc on the
# initramfs; the root carries only what Debian's packages need).
STATIC_RUSTFLAGS := -C target-feature=+crt-static
TARGET := x86_64-unknown-linux-gnu
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# Rust intermediate build output lives outside the clone, per checkout path
# (build-dir in .cargo/config.toml): a fresh clone at the same path finds
# its dependencies compiled.
NODE_BIN := $(TARGET_DIR)/$(TARGET)/release
# Host tools (image-build, the QEMU harness, demo), see host-tools below.
HOST_BIN := $(TARGET_DIR)/debug
CONFIG ?=
# Where `make netboot`'s directory is served over HTTP (stage 1 fetches the
# root from there; the default is a guestfwd address inside QEMU's network).
NETBOOT_URL ?= http://10.0.2.100:8080
# Optional: where a node in maintenance mode fetches its first config
# (keelson.config=; plain HTTP, no hash: an isolated network only).
NETBOOT_CONFIG_URL ?=

.PHONY: help deps host-tools node-binaries kube image image-v2 bundle netboot iso demo test unit scenarios bench fuzz lint clean

help:
	@echo "make demo   - build the image, boot a node in QEMU, show it healthy, shut it down"
	@echo "make test   - every test: unit, property and the QEMU scenarios"
	@echo "make image  - build out/keelson.raw (CONFIG=examples/node.yaml bakes a config in)"
	@echo "make netboot - out/netboot: payloads + keelson.ipxe for PXE (NETBOOT_URL=$(NETBOOT_URL))"
	@echo "make iso    - out/keelson-VERSION.iso: boots live (BIOS/UEFI, CD/USB stick), for installing"
	@echo "make bench  - run the benchmarks, write bench/results.md"
	@echo "make fuzz   - run the cargo-fuzz targets for a bounded time (needs cargo-fuzz)"
	@echo "make deps   - install the Debian packages the build and tests need"

deps:
	@if [ "$$(id -u)" -eq 0 ]; then scripts/install-deps.sh; else sudo scripts/install-deps.sh; fi

# init, apid, nodectl and keelson-drain as they run on the node: static, release.
node-binaries:
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" $(CARGO) build --release --locked --target $(TARGET) -p init -p apid -p nodectl -p drain

# Host tools (image-build, the QEMU harness, demo) build in the dev profile
# the unit tests already compiled: one host build instead of two keeps a
# fresh clone's `make test` short. They are built for the whole workspace
# at once (`cargo run -p X` would resolve other dependency features and
# compile ~70 crates again) and run from $(HOST_BIN). Their hot loops
# (hashing, gzip) are optimised per package in Cargo.toml. Only the node
# binaries and `make bench` build in release.
host-tools:
	$(CARGO) build --workspace --locked --bins

# kubelet and the control plane, built once from Debian's kubernetes source
# package and cached in $(KEELSON_CACHE) keyed by the source's hash.
kube: deps host-tools
	$(HOST_BIN)/image-build kubernetes --out $(OUT)/kubernetes

image: deps kube node-binaries
	$(HOST_BIN)/image-build disk --out $(OUT) --node-bin $(NODE_BIN) \
	  --kubernetes $(OUT)/kubernetes $(if $(CONFIG),--config $(CONFIG),) \
	  $(if $(VERSION),--version $(VERSION),)

# A signed upgrade bundle of the image: `make bundle VERSION=V KEY=FILE`
# writes out/keelson-V.bundle (KEY: the PKCS#8 ed25519 key `nodectl gen
# secrets` writes as upgrade-signing.key; MIN_UPGRADE_FROM=V optional).
# VERSION is also the version of the image built for it.
ifneq ($(filter bundle,$(MAKECMDGOALS)),)
ifeq ($(VERSION),)
$(error make bundle: set VERSION=V, the OS version the bundle installs)
endif
ifeq ($(KEY),)
$(error make bundle: set KEY=FILE, the upgrade signing key (upgrade-signing.key))
endif
endif
bundle: image
	$(HOST_BIN)/image-build bundle --key $(KEY) --version $(VERSION) \
	  --boot $(OUT)/boot --out $(OUT)/keelson-$(VERSION).bundle \
	  $(if $(MIN_UPGRADE_FROM),--min-upgrade-from $(MIN_UPGRADE_FROM),)

# A network-boot directory of the image: vmlinuz, initramfs.img,
# rootfs.squashfs, the iPXE script keelson.ipxe and netboot.json. Serve it
# over TFTP or HTTP for iPXE, and over HTTP at NETBOOT_URL for stage 1.
netboot: image
	$(HOST_BIN)/image-build netboot --boot $(OUT)/boot --base-url $(NETBOOT_URL) \
	  $(if $(NETBOOT_CONFIG_URL),--config-url $(NETBOOT_CONFIG_URL),) --out $(OUT)/netboot

# A boot ISO of the image, out/keelson-VERSION.iso: BIOS and UEFI, as a CD
# or written raw to a USB stick; the live system in maintenance mode plus
# the root and the disk's ESP tree an installer writes (see
# crates/image-build/README.md).
iso: image
	$(HOST_BIN)/image-build iso --boot $(OUT)/boot --out-dir $(OUT)

unit:
	$(CARGO) test --workspace --locked

# The upgrade scenario's second image: same inputs, another version
# (out/v2/boot holds the payloads the test signs into bundles).
V2_VERSION := 0.2.0-upgrade-test
image-v2: image
	$(HOST_BIN)/image-build disk --out $(OUT)/v2 --node-bin $(NODE_BIN) \
	  --kubernetes $(OUT)/kubernetes --version $(V2_VERSION)

# The QEMU and control-plane scenarios, two at a time on two cores (each
# guest has one vCPU): see scripts/scenarios.sh.
scenarios: image image-v2 netboot iso
	CARGO="$(CARGO)" scripts/scenarios.sh

test: deps kube unit scenarios

demo: image
	$(HOST_BIN)/demo

bench: image image-v2 iso
	$(CARGO) run --release --locked -q -p machine-config --example parse_bench > bench/.parse.md
	$(CARGO) build --release --locked -q -p apid --bins --examples
	$(TARGET_DIR)/release/examples/version_load 64 10 > bench/.apid.md
	# The Debian 12 + systemd peer, with the image's kernel package and
	# preloaded images (built once, cached under $(KEELSON_CACHE)/peer).
	bench/peer/inputs.sh $(OUT)/keelson.raw $(OUT)/version.json bench/.peer-inputs
	bench/peer/build.sh $(OUT)/kubernetes/bin/kubelet bench/.peer-inputs/images \
	  bench/.peer-inputs/kernel.deb > bench/.peer-dir
	$(CARGO) build --release --locked -q -p keelson-tests --bins
	# Keelson (direct kernel) and the peer, three boots each; each boot
	# then runs 0, 3 or 10 pods and is shut down by the power button
	# (issue 6); the first Keelson boot also times live sysctl changes
	# (issue 5). One more Keelson boot drains 10 evictable pods at its
	# shutdown (issue 9, --drain-pods). The GRUB variant (add grub to
	# --only) would add ~15 min to the ~35 under TCG on 2 shared cores.
	$(TARGET_DIR)/release/bench --parse-results bench/.parse.md --out bench/results.md \
	  --image $(OUT)/keelson.raw --peer "$$(cat bench/.peer-dir)" \
	  --boots 3 --pods 0,3,10 --drain-pods 10 --only direct,peer
	printf "\n" >> bench/results.md
	cat bench/.apid.md >> bench/results.md
	# A/B upgrade on the node against dd in the same VM, and command to
	# healthy on the new slot (issue 7; ~6 min).
	$(TARGET_DIR)/release/bench upgrade --out bench/.upgrade.md
	printf "\n" >> bench/results.md
	cat bench/.upgrade.md >> bench/results.md
	# Bundle reader throughput on the host (issue 7).
	printf "\n" >> bench/results.md
	$(CARGO) run --release --locked -q -p bundle --example throughput >> bench/results.md
	# Install from the ISO: its sizes, and power-on to installed and
	# running (issue 8; two runs, ~5 min).
	$(TARGET_DIR)/release/bench install --out bench/.install.md
	printf "\n" >> bench/results.md
	cat bench/.install.md >> bench/results.md
	rm -rf bench/.parse.md bench/.apid.md bench/.upgrade.md bench/.install.md bench/.peer-inputs bench/.peer-dir
	@echo "wrote bench/results.md"

fuzz:
	scripts/fuzz.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

clean:
	rm -rf $(OUT)
