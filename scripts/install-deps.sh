#!/usr/bin/env bash
# Installs the Debian packages the Keelson build and tests need on the host.
# Idempotent: does nothing when every package is already installed.
set -euo pipefail

PACKAGES=(
  # image assembly (no root, no loop devices)
  fdisk dosfstools mtools e2fsprogs squashfs-tools xorriso cpio kmod zstd xz-utils
  grub-efi-amd64-bin grub-pc-bin grub-common ovmf dpkg-dev
  # running nodes
  qemu-system-x86 qemu-utils
  # kubelet, kubectl and the control plane are built from Debian's kubernetes source package
  golang-go rsync etcd-server
  # peer VM for benchmarks
  debootstrap
  # misc
  ca-certificates busybox-static e2fsck-static python3 git gcc libc6-dev iproute2
  # init's network tests: a real DHCP server in a network namespace
  dnsmasq-base
  # network boot scenario: SeaBIOS and the iPXE option ROM of QEMU's virtio-net
  ipxe-qemu seabios
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# qemu-system-x86 must match qemu-utils: a host that carries a newer
# qemu-utils from backports (without backports in its sources) cannot
# install bookworm's qemu-system-x86 beside it, so take both from bookworm.
if [ "${#missing[@]}" -eq 0 ]; then
  echo "deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
args=()
for p in "${missing[@]}"; do
  case "$p" in
    qemu-system-x86|qemu-utils) args+=("$p/bookworm") ;;
    *) args+=("$p") ;;
  esac
done
if printf '%s\n' "${missing[@]}" | grep -qx qemu-system-x86; then
  args+=("qemu-utils/bookworm" "qemu-system-common/bookworm" "qemu-system-data/bookworm")
fi
apt-get install -y -q --no-install-recommends --allow-downgrades "${args[@]}"
