#!/usr/bin/env bash
# The previous release's binaries (berth-agent, berth-coordinator), for the
# upgrade tests (tests/tests/upgrade.rs): the tree at the commit below,
# checked out from this repository's history and built once, cached under
# $BERTH_CACHE/previous/COMMIT. Prints that directory.
#
# v0.1.0 is b23de51, the state every stop until issue 17's upgrade work
# landed on (store schema 0001-0023, link ALPN berth/1). Move it forward
# when a release is cut.
set -euo pipefail
commit=b23de512b3584c291bb7fa3d463221f3ddc4d264
cd "$(dirname "$0")/.."
cache=${BERTH_CACHE:-/var/cache/berth}/previous
out=$cache/$commit
if [ ! -x "$out/berth-coordinator" ] || [ ! -x "$out/berth-agent" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if [ ! -x "$out/berth-coordinator" ] || [ ! -x "$out/berth-agent" ]; then
    git cat-file -e "$commit^{commit}" 2>/dev/null || {
      echo "previous-build: commit $commit is not in this clone's history" >&2
      exit 2
    }
    echo "previous-build: building v0.1.0 ($commit) into $out" >&2
    src=$cache/src-$commit
    rm -rf "$src" && mkdir -p "$src"
    git archive "$commit" | tar -x -C "$src"
    # Its own target directory (removed after: only the binaries are kept).
    (cd "$src" && CARGO_TARGET_DIR=$cache/target cargo build --locked --quiet \
      -p berth-agent -p berth-coordinator)
    mkdir -p "$out.tmp"
    cp "$cache/target/debug/berth-agent" "$cache/target/debug/berth-coordinator" "$out.tmp/"
    rm -rf "$out" && mv "$out.tmp" "$out"
    rm -rf "$src" "$cache/target"
  fi
  exec 9>&-
fi
echo "$out"
