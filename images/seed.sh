#!/usr/bin/env bash
# Seeds the shared registry storage ($BERTH_CACHE/registry) with an image
# from an OCI layout, by pushing it through a throwaway registry on loopback:
# any registry then serving that directory serves it as REPO:TAG.
#
#   images/seed.sh LAYOUT_DIR:TAG REPO:TAG
set -euo pipefail
src=${1:?usage: images/seed.sh LAYOUT_DIR:TAG REPO:TAG}
dest=${2:?usage: images/seed.sh LAYOUT_DIR:TAG REPO:TAG}
cache=${BERTH_CACHE:-/var/cache/berth}
mkdir -p "$cache/registry"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
conf=$(mktemp)
cat >"$conf" <<CONF
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $cache/registry }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$port }
CONF
docker-registry serve "$conf" >/dev/null 2>&1 &
reg=$!
trap 'kill "$reg" 2>/dev/null; wait "$reg" 2>/dev/null || true; rm -f "$conf"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
skopeo copy -q --dest-tls-verify=false "oci:$src" "docker://127.0.0.1:$port/$dest"
