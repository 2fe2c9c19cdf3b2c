#!/usr/bin/env bash
# Debian packages of Berth: berth-agent, berth-coordinator and berth (the CLI),
# made by cargo-deb (pinned, installed once under $BERTH_CACHE/tools) from
# the metadata in each crate's Cargo.toml and the files in packaging/.
#
#   scripts/dist.sh                   release build, packages in target/debian/
#   scripts/dist.sh --profile dev -o DIR --no-build
#                                     the debug binaries as they are (tests)
#   scripts/dist.sh --deb-version 0.1.1-1 ...
#                                     another version (the upgrade test)
#   scripts/dist.sh --images ...      also the container images of the agent
#                                     and the coordinator (images/component.sh),
#                                     berth/NAME:VERSION in $BERTH_CACHE/registry
#   scripts/dist.sh --install-tool    only install cargo-deb
set -euo pipefail
cd "$(dirname "$0")/.."
version=2.12.1
cache=${BERTH_CACHE:-/var/cache/berth}
tool=$cache/tools/cargo-deb-$version
profile=release out=target/debian build=1 only_tool=0 images=0 deb_version=()
while [ $# -gt 0 ]; do
  case $1 in
    --profile) profile=$2; shift 2 ;;
    -o) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --deb-version) deb_version=(--deb-version "$2"); shift 2 ;;
    --install-tool) only_tool=1; shift ;;
    --images) images=1; shift ;;
    *) echo "dist: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ ! -x "$tool/bin/cargo-deb" ]; then
  mkdir -p "$cache/tools"
  exec 9>"$cache/tools/.lock"
  flock 9
  if [ ! -x "$tool/bin/cargo-deb" ]; then
    echo "dist: installing cargo-deb $version into $tool" >&2
    cargo install --quiet --locked cargo-deb --version "$version" --root "$tool.tmp"
    rm -rf "$tool" && mv "$tool.tmp" "$tool"
  fi
  exec 9>&-
fi
[ $only_tool = 1 ] && exit 0
packages=(berth-agent berth-coordinator berth-cli)
if [ $build = 1 ]; then
  cargo build --locked --profile "$profile" "${packages[@]/#/-p}"
fi
mkdir -p "$out"
for p in "${packages[@]}"; do
  # Stripped: line tables stay in the build tree, not on every node.
  PATH=$tool/bin:$PATH cargo deb --locked --no-build --strip --profile "$profile" \
    "${deb_version[@]}" -p "$p" -o "$out" 2> >(grep -v "dev profile\|debug symbols set" >&2)
done
rm -f "$out"/*.tmp*-stripped
if [ $images = 1 ]; then
  bin_dir=target/$([ "$profile" = dev ] && echo debug || echo "$profile")
  v=$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="berth-agent"))')
  for name in agent coordinator; do
    images/component.sh "$name" "$bin_dir/berth-$name" "$v" >/dev/null
    echo "dist: image berth/$name:$v in ${cache}/registry" >&2
  done
fi
