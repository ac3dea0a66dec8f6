#!/usr/bin/env bash
# Builds the benchmark peer: the node a user would otherwise pick, Debian 12 with
# systemd, running the same kernel, containerd, runc, CNI plugins and kubelet as a
# Keelson node (Debian's packages and the kubelet built from Debian's kubernetes
# source), booted under the same QEMU settings.
#
# Usage: bench/peer/build.sh KUBELET IMAGES_DIR [KERNEL_DEB]
#   KUBELET     the kubelet binary Keelson ships (out/kubernetes/bin/kubelet)
#   IMAGES_DIR  directory of OCI archives to preload (pause and busybox test image)
#   KERNEL_DEB  the linux-image package the Keelson image was built from
#               (bench/peer/inputs.sh finds it); without it the peer keeps
#               the kernel debootstrap installed, which may be older
# Prints the directory holding root.ext4 (the whole-disk root filesystem),
# vmlinuz and initrd.img. Cached in $KEELSON_CACHE/peer/<hash of inputs>.
#
# Console markers (the benchmark waits for them):
#   peer: kubelet started uptime=S            kubelet was just executed
#   peer: node ready uptime=S                 kubelet active for 6 s, as
#                                             Keelson's `keelson: node ready`
#   peer: pid1 rss_kib=N mem_used_kib=M       systemd's RSS, MemTotal-MemAvailable
#
# Per run, the benchmark writes /etc/kubernetes/kubelet.kubeconfig and
# /etc/kubernetes/pki/ca.crt into a copy of root.ext4 with debugfs, so one build
# serves every control plane. Needs root (debootstrap, chroot), like `make deps`.
set -euo pipefail

kubelet=${1:?usage: build.sh KUBELET IMAGES_DIR}
images=${2:?usage: build.sh KUBELET IMAGES_DIR [KERNEL_DEB]}
kernel_deb=${3:-}
cache=${KEELSON_CACHE:-$HOME/.cache/keelson}
here=$(cd "$(dirname "$0")" && pwd)
mirror=http://deb.debian.org/debian

for tool in debootstrap mkfs.ext4 chroot sha256sum; do
  command -v "$tool" >/dev/null || { echo "peer: $tool not found (make deps)" >&2; exit 2; }
done
[ -x "$kubelet" ] || { echo "peer: kubelet not found at $kubelet (make kube)" >&2; exit 2; }
compgen -G "$images/*.tar" >/dev/null || { echo "peer: no OCI archives in $images" >&2; exit 2; }
[ -z "$kernel_deb" ] || [ -f "$kernel_deb" ] || { echo "peer: no kernel package at $kernel_deb" >&2; exit 2; }

key=$( { sha256sum "$0" "$kubelet" "$images"/*.tar $kernel_deb | awk '{print $1}'; } | sha256sum | cut -c1-16)
dest=$cache/peer/$key
if [ -f "$dest/done" ]; then echo "$dest"; exit 0; fi

# Stage 1, slow and independent of our inputs: debootstrap and the kernel,
# cached on its own so a new kubelet or image does not redo it.
base_version=bookworm-v1
base=$cache/peer/base-$base_version
start=$(date +%s)
if [ ! -f "$base/done" ]; then
  rm -rf "$base" && mkdir -p "$base"
  echo "peer: debootstrap bookworm (2-3 min)" >&2
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,udev,dbus,kmod,iptables,containerd,runc,containernetworking-plugins,initramfs-tools,procps,iproute2,e2fsprogs,util-linux,mount,coreutils,ca-certificates \
    bookworm "$base/root" "$mirror" >"$base/debootstrap.log" 2>&1 \
    || { tail -20 "$base/debootstrap.log" >&2; exit 1; }
  echo "peer: kernel and initramfs" >&2
  # The initramfs fsck hook cannot tell the root's type inside a chroot and
  # silently leaves fsck out unless told (NOTES.md).
  echo "FSTYPE=ext4" >>"$base/root/etc/initramfs-tools/initramfs.conf"
  echo "/dev/vda / ext4 defaults,errors=remount-ro 0 1" >"$base/root/etc/fstab"
  mount -t proc proc "$base/root/proc"
  trap 'umount "$base/root/proc" 2>/dev/null || true' EXIT
  DEBIAN_FRONTEND=noninteractive chroot "$base/root" apt-get install -y -q --no-install-recommends linux-image-amd64 \
    >"$base/kernel.log" 2>&1 || { tail -20 "$base/kernel.log" >&2; exit 1; }
  umount "$base/root/proc"; trap - EXIT
  chroot "$base/root" apt-get clean
  touch "$base/done"
fi
[ -n "${PEER_BASE_ONLY:-}" ] && { echo "$base"; exit 0; }

# Stage 2: our inputs and the node's configuration.
work=$cache/peer/work-$key
rm -rf "$work" && mkdir -p "$work"
root=$work/root
cp -a "$base/root" "$root"

if [ -n "$kernel_deb" ]; then
  # The Keelson image's own kernel package, in place of debootstrap's.
  echo "peer: kernel from $(basename "$kernel_deb")" >&2
  cp "$kernel_deb" "$root/tmp/kernel.deb"
  mount -t proc proc "$root/proc"
  trap 'umount "$root/proc" 2>/dev/null || true' EXIT
  old=$(chroot "$root" dpkg-query -W -f '${Package}\n' 'linux-image-*' | tr '\n' ' ')
  { DEBIAN_FRONTEND=noninteractive chroot "$root" dpkg -i /tmp/kernel.deb &&
    new=$(chroot "$root" dpkg-deb -f /tmp/kernel.deb Package) &&
    for p in $old; do [ "$p" = "$new" ] || DEBIAN_FRONTEND=noninteractive chroot "$root" dpkg --purge "$p"; done
  } >"$work/kernel.log" 2>&1 || { tail -20 "$work/kernel.log" >&2; exit 1; }
  umount "$root/proc"; trap - EXIT
  rm -f "$root/tmp/kernel.deb"
fi

echo "peer: node configuration" >&2
install -m 0755 "$kubelet" "$root/usr/bin/kubelet"
echo peer >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 peer\n' >"$root/etc/hosts"
rm -f "$root/etc/resolv.conf"
echo "nameserver 10.0.2.3" >"$root/etc/resolv.conf"
chroot "$root" passwd -d root >/dev/null
mkdir -p "$root/etc/systemd/network" "$root/etc/containerd" "$root/etc/cni/net.d" "$root/usr/local/sbin" \
  "$root/etc/kubernetes/pki" "$root/usr/share/keelson/images" "$root/var/lib/kubelet"
cp "$images"/*.tar "$root/usr/share/keelson/images/"
cat >"$root/etc/systemd/network/10-dhcp.network" <<'EOF'
[Match]
Name=en* eth*
[Network]
DHCP=ipv4
EOF
cat >"$root/etc/modules-load.d/k8s.conf" <<'EOF'
overlay
br_netfilter
EOF
cat >"$root/etc/sysctl.d/90-k8s.conf" <<'EOF'
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
EOF
# The same containerd settings a Keelson node renders (cgroupfs, Debian's runc
# and CNI paths, the preloaded pause image).
cat >"$root/etc/containerd/config.toml" <<'EOF'
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "keelson.local/pause:1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
EOF
cat >"$root/etc/cni/net.d/10-bridge.conflist" <<'EOF'
{
  "cniVersion": "0.4.0",
  "name": "pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.244.0.0/24" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
cat >"$root/etc/kubernetes/kubelet.yaml" <<'EOF'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: true
nodeStatusUpdateFrequency: 2s
resolvConf: /etc/resolv.conf
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: /etc/kubernetes/pki/ca.crt }
authorization:
  mode: Webhook
EOF
cat >"$root/etc/systemd/system/keelson-preload.service" <<'EOF'
[Unit]
Description=Import preloaded images into containerd
After=containerd.service
Requires=containerd.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for f in /usr/share/keelson/images/*.tar; do ctr -n k8s.io images import --all-platforms "$f"; done'
[Install]
WantedBy=multi-user.target
EOF
cat >"$root/etc/systemd/system/kubelet.service" <<'EOF'
[Unit]
Description=kubelet
After=containerd.service keelson-preload.service network-online.target
Wants=network-online.target
Requires=containerd.service keelson-preload.service
[Service]
ExecStart=/usr/bin/kubelet --config=/etc/kubernetes/kubelet.yaml \
  --kubeconfig=/etc/kubernetes/kubelet.kubeconfig \
  --container-runtime=remote \
  --container-runtime-endpoint=unix:///run/containerd/containerd.sock \
  --image-service-endpoint=unix:///run/containerd/containerd.sock \
  --hostname-override=peer --root-dir=/var/lib/kubelet --cert-dir=/var/lib/kubelet/pki
ExecStartPost=/bin/sh -c 'echo "peer: kubelet started uptime=$(cut -d" " -f1 /proc/uptime)" >/dev/console'
Restart=always
RestartSec=2
[Install]
WantedBy=multi-user.target
EOF
# Console markers the benchmark waits for. Keelson prints `node ready` once
# kubelet has kept running for 6 s, then init's RSS: the same here, with
# systemd (PID 1) in init's place.
cat >"$root/usr/local/sbin/peer-ready" <<'EOF'
#!/bin/sh
# Waits until kubelet has been active for 6 s in one go (counted from when
# systemd saw it active, by the monotonic clock /proc/uptime also reads),
# then reports.
# One systemctl call: "ActiveEnterTimestampMonotonic=<us> ActiveState=<state> ".
state() { systemctl show -p ActiveState -p ActiveEnterTimestampMonotonic kubelet | sort | tr '\n' ' '; }
while :; do
  s=$(state)
  since=${s#ActiveEnterTimestampMonotonic=}
  since=${since%% *}
  case "$s" in
    *"ActiveState=active "*)
      sleep "$(awk -v t="$since" '{ w = t / 1e6 + 6 - $1; print (w > 0 ? w : 0) }' /proc/uptime)"
      [ "$(state)" = "$s" ] && break ;;
    *) sleep 0.2 ;;
  esac
done
now=$(cut -d' ' -f1 /proc/uptime)
echo "peer: node ready uptime=$now" >/dev/console
rss=$(awk '/^VmRSS:/ { print $2 }' /proc/1/status)
used=$(awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 } END { print t - a }' /proc/meminfo)
echo "peer: pid1 rss_kib=$rss mem_used_kib=$used" >/dev/console
EOF
chmod 0755 "$root/usr/local/sbin/peer-ready"
cat >"$root/etc/systemd/system/peer-ready.service" <<'EOF'
[Unit]
Description=Report node ready and PID 1 memory
After=kubelet.service
Requires=kubelet.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/peer-ready
[Install]
WantedBy=multi-user.target
EOF
for unit in systemd-networkd kubelet keelson-preload peer-ready serial-getty@ttyS0; do
  chroot "$root" systemctl enable "$unit" >/dev/null 2>&1 || true
done
chroot "$root" systemctl enable systemd-networkd >/dev/null

echo "peer: root filesystem image" >&2
mkdir -p "$dest"
kver=$(ls "$root/lib/modules" | sort -V | tail -1)
cp "$root/boot/vmlinuz-$kver" "$dest/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$dest/initrd.img"
echo "$kver" >"$dest/kernel-version"
mkfs.ext4 -q -L peer-root -d "$root" "$dest/root.ext4" 3G >&2
rm -rf "$work"
touch "$dest/done"
echo "peer: built in $(( $(date +%s) - start )) s" >&2
echo "$dest"
