#!/usr/bin/env bash
# Builds a workspace image from images/NAME/ into an OCI layout, without a Docker
# engine, and seeds a registry storage directory with it.
#
#   images/build.sh NAME     prints the OCI layout directory ("oci:DIR:latest" is the image)
#
# A build is cached under $BERTH_CACHE (default /var/cache/berth), keyed by the
# hash of the recipe directory and this script, so an unchanged recipe is never
# rebuilt. The registry storage ($BERTH_CACHE/registry) holds every built image
# as 127.0.0.1:PORT/NAME:latest for whatever registry serves that directory.
set -euo pipefail

name=${1:?usage: images/build.sh NAME}
here=$(cd "$(dirname "$0")" && pwd)
recipe=$here/$name
[ -f "$recipe/recipe.sh" ] || { echo "build.sh: no recipe images/$name/recipe.sh" >&2; exit 2; }
cache=${BERTH_CACHE:-/var/cache/berth}
hash=$( (cd "$here" && find "$name" -type f -print0 | sort -z | xargs -0 sha256sum; sha256sum build.sh seed.sh) | sha256sum | cut -c1-16)
out=$cache/images/$name-$hash
seeded=$cache/registry/.seeded-$name-$hash

mkdir -p "$cache"
# Parallel test processes may ask for the same image: one builds, the others wait.
exec 9>"$cache/.build.lock"
flock 9

if [ ! -f "$out/.done" ]; then
  echo "build.sh: building image '$name' ($hash)" >&2
  work=$(mktemp -d "$cache/tmp.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:latest"
  umoci unpack --image "$work/oci:latest" "$work/bundle" >/dev/null
  # The recipe fills the root filesystem and may set image config through umoci_config.
  . "$recipe/recipe.sh"
  build_rootfs "$work/bundle/rootfs"
  umoci repack --image "$work/oci:latest" "$work/bundle"
  umoci config --image "$work/oci:latest" "${image_config[@]}"
  umoci gc --layout "$work/oci"
  rm -rf "$out"; mkdir -p "$(dirname "$out")"
  mv "$work/oci" "$out"
  touch "$out/.done"
fi

if [ ! -f "$seeded" ]; then
  "$here/seed.sh" "$out:latest" "$name:latest"
  rm -f "$cache"/registry/.seeded-"$name"-*
  touch "$seeded"
fi
echo "$out"
