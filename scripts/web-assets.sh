#!/usr/bin/env bash
# Fetches the web terminal's front-end packages from the npm registry and
# puts the files the coordinator bundles into OUT (default target/web).
# Tarballs are pinned by their npm integrity (sha512) and cached outside
# the clone (/var/cache/berth/npm), so only the first run downloads them.
#   scripts/web-assets.sh [OUT]
set -euo pipefail
out=${1:-target/web}
cache=${BERTH_CACHE:-/var/cache/berth}/npm
registry=${NPM_REGISTRY:-https://registry.npmjs.org}
mkdir -p "$cache" "$out"

# name version integrity files...
fetch() {
  local name=$1 version=$2 integrity=$3; shift 3
  local base=${name#*/}
  local tgz=$cache/$base-$version.tgz
  if [ ! -f "$tgz" ]; then
    echo "web-assets: fetching $name@$version" >&2
    curl -fsSL --retry 3 -o "$tgz.part" "$registry/$name/-/$base-$version.tgz"
    mv "$tgz.part" "$tgz"
  fi
  local got
  got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  if [ "$got" != "$integrity" ]; then
    rm -f "$tgz"
    echo "web-assets: $name@$version: integrity $got, expected $integrity" >&2
    exit 1
  fi
  local f
  for f in "$@"; do
    tar -xzf "$tgz" -O "package/$f" >"$out/$(basename "$f").part"
    mv "$out/$(basename "$f").part" "$out/$(basename "$f")"
  done
}

fetch @xterm/xterm 6.0.0 \
  'sha512-TQwDdQGtwwDt+2cgKDLn0IRaSxYu1tSUjgKarSDkUM0ZNiSRXFpjxEsvc/Zgc5kq5omJ+V0a8/kIM2WD3sMOYg==' \
  lib/xterm.js css/xterm.css LICENSE
mv "$out/LICENSE" "$out/xterm.LICENSE"
fetch @xterm/addon-fit 0.11.0 \
  'sha512-jYcgT6xtVYhnhgxh3QgYDnnNMYTcf8ElbxxFzX0IZo+vabQqSPAjC3c1wJrKB5E19VwQei89QCiZZP86DCPF7g==' \
  lib/addon-fit.js

# Monaco, the portal's editor: its whole minified AMD tree (min/vs, without
# the translated messages), served under /w/assets/monaco/ and loaded only by
# the editor page.
fetch_tree() {
  local name=$1 version=$2 integrity=$3 dir=$4 dest=$5
  fetch "$name" "$version" "$integrity"
  local tgz=$cache/$name-$version.tgz
  rm -rf "$out/$dest.part" && mkdir -p "$out/$dest.part"
  tar -xzf "$tgz" -C "$out/$dest.part" --strip-components=3 --exclude='*/nls.messages.*' "package/$dir"
  tar -xzf "$tgz" -O package/LICENSE >"$out/$dest.part/LICENSE"
  rm -rf "$out/$dest" && mv "$out/$dest.part" "$out/$dest"
}
fetch_tree monaco-editor 0.52.2 \
  'sha512-GEQWEZmfkOGLdd3XK8ryrfWz3AIP8YymVXiPHEdewrUq7mh0qrKrfHLNCXcbB6sTnMLnOZ3ztSiKcciFUkIJwQ==' \
  min/vs monaco
