#!/usr/bin/env bash
# Builds the container image of a Berth binary, without a Docker engine:
# images/NAME-base (Debian 12 and what the binary runs) and one more layer
# holding the binary, stripped of debug information, as the entrypoint.
# The registry storage ($BERTH_CACHE/registry) then holds it as
# berth/NAME:TAG for whatever registry serves that directory, like the
# workspace images (images/build.sh).
#
#   images/component.sh agent|coordinator BINARY TAG
#       prints the OCI layout directory ("oci:DIR:TAG" is the image)
#
# Cached under $BERTH_CACHE/images keyed by the binary's content, the
# base's and this script's hashes and the tag: an unchanged binary is never
# rebuilt. `make dist` builds both from the release binaries
# (scripts/dist.sh); tests/tests/kubernetes.rs from the test build's.
set -euo pipefail
usage="usage: images/component.sh agent|coordinator BINARY TAG"
name=${1:?$usage}
bin=${2:?$usage}
tag=${3:?$usage}
case $name in agent | coordinator) ;; *) echo "component.sh: $usage" >&2; exit 2 ;; esac
[ -x "$bin" ] || { echo "component.sh: $bin is not an executable" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
cache=${BERTH_CACHE:-/var/cache/berth}
base=$("$here/build.sh" "$name-base")
hash=$( (sha256sum <"$bin"; echo "$base $tag"; sha256sum <"$0") | sha256sum | cut -c1-16)
out=$cache/images/berth-$name-$hash

exec 9>"$cache/.build.lock"
flock 9
if [ ! -f "$out/.done" ]; then
  echo "component.sh: building berth/$name:$tag ($hash)" >&2
  work=$(mktemp -d "$cache/tmp.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  cp -a "$base" "$work/oci"
  rm -f "$work/oci/.done"
  umoci unpack --image "$work/oci:latest" "$work/bundle" >/dev/null
  install -D -m 0755 "$bin" "$work/bundle/rootfs/usr/bin/berth-$name"
  strip --strip-debug "$work/bundle/rootfs/usr/bin/berth-$name"
  umoci repack --image "$work/oci:latest" "$work/bundle"
  umoci config --image "$work/oci:latest" --tag "$tag" \
    --config.entrypoint "/usr/bin/berth-$name" --config.cmd run \
    --config.label "org.opencontainers.image.title=berth-$name" \
    --config.label "org.opencontainers.image.version=$tag"
  umoci rm --image "$work/oci:latest"
  umoci gc --layout "$work/oci"
  rm -rf "$out"
  mv "$work/oci" "$out"
  touch "$out/.done"
  "$here/seed.sh" "$out:$tag" "berth/$name:$tag"
fi
echo "$out"
