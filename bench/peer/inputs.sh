#!/usr/bin/env bash
# Gathers the inputs the benchmark peer shares with a Keelson image, so both
# run the same bytes: the preloaded OCI archives (read from the image's
# SYSTEM-A squashfs) and the kernel package the image was built from (named
# in its version manifest; taken from image-build's package cache, else
# downloaded with apt-get).
#
# Usage: bench/peer/inputs.sh IMAGE VERSION_JSON DEST
#   IMAGE         a Keelson disk image (out/keelson.raw)
#   VERSION_JSON  its version manifest (out/version.json)
#   DEST          output directory: DEST/images/*.tar and DEST/kernel.deb
# No mounting: unsquashfs reads the partition at its offset.
set -euo pipefail

image=${1:?usage: inputs.sh IMAGE VERSION_JSON DEST}
manifest=${2:?usage: inputs.sh IMAGE VERSION_JSON DEST}
dest=${3:?usage: inputs.sh IMAGE VERSION_JSON DEST}
cache=${KEELSON_CACHE:-$HOME/.cache/keelson}

for tool in sfdisk unsquashfs; do
  command -v "$tool" >/dev/null || { echo "peer: $tool not found (make deps)" >&2; exit 2; }
done
[ -f "$image" ] || { echo "peer: no image at $image (make image)" >&2; exit 2; }
[ -f "$manifest" ] || { echo "peer: no version manifest at $manifest (make image)" >&2; exit 2; }

rm -rf "$dest" && mkdir -p "$dest/images"

# SYSTEM-A's first sector, from the GPT.
start=$(sfdisk -d "$image" | sed -n 's/.*start= *\([0-9]*\),.*name="SYSTEM-A".*/\1/p')
[ -n "$start" ] || { echo "peer: no SYSTEM-A partition in $image" >&2; exit 1; }
unsquashfs -q -n -o $((start * 512)) -d "$dest/squash" "$image" usr/share/keelson/images >/dev/null
mv "$dest/squash/usr/share/keelson/images/"*.tar "$dest/images/"
rm -rf "$dest/squash"

# The kernel package: "name": "linux-image-…" followed by its "version".
read -r name version < <(awk -F'"' '
  $2 == "name" && $4 ~ /^linux-image-/ { name = $4; next }
  name != "" && $2 == "version" { print name, $4; exit }' "$manifest")
[ -n "${name:-}" ] || { echo "peer: no linux-image package in $manifest" >&2; exit 1; }
deb=$cache/debs/${name}_${version//:/%3a}_amd64.deb
if [ -f "$deb" ]; then
  cp "$deb" "$dest/kernel.deb"
else
  echo "peer: downloading $name=$version" >&2
  (cd "$dest" && apt-get download -q "$name=$version" >/dev/null)
  mv "$dest"/"${name}"_*.deb "$dest/kernel.deb"
fi
echo "peer: inputs in $dest ($name $version, $(ls "$dest/images" | tr '\n' ' '))" >&2
