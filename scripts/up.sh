#!/usr/bin/env bash
# Brings up a single-node Berth on this machine with the embedded defaults:
# a private containerd, a loopback registry holding the project's images, and
# berth-agent, then creates (or starts) the workspace "demo" from the dev image.
# Stays in the foreground; Ctrl-C stops the workspaces and the services it
# started (each in its own session, so the signal reaches only this script)
# and keeps the data
# (volumes, images, records under $BERTH_DATA, default /var/lib/berth).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${BERTH_DATA:-/var/lib/berth}
run=${BERTH_RUN:-/run/berth}
port=${BERTH_REGISTRY_PORT:-5000}
cache=${BERTH_CACHE:-/var/cache/berth}
agent=$PWD/target/debug/berth-agent
mkdir -p "$data" "$run"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "up: stopping workspaces and services (data kept in $data)"
  for ws in $("$agent" --config "$data/agent.toml" ctl --json list 2>/dev/null |
      python3 -c 'import json,sys; [print(w["name"]) for w in json.load(sys.stdin)["List"]["workspaces"]]' 2>/dev/null); do
    "$agent" --config "$data/agent.toml" ctl stop "$ws" --grace 5 >/dev/null 2>&1 || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

cat >"$run/containerd.toml" <<CONF
version = 2
root = "$data/containerd"
state = "$run/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$run/containerd.sock"
[ttrpc]
  address = "$run/containerd.sock.ttrpc"
CONF
setsid containerd --config "$run/containerd.toml" >"$run/containerd.log" 2>&1 &
pids+=($!)

cat >"$run/registry.yml" <<CONF
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $cache/registry } }
http: { addr: 127.0.0.1:$port }
CONF
setsid docker-registry serve "$run/registry.yml" >"$run/registry.log" 2>&1 &
pids+=($!)

[ -f "$data/agent.toml" ] || cat >"$data/agent.toml" <<CONF
# berth-agent configuration written by make up; every other setting is its default.
state_dir = "$data/agent"
[containerd]
socket = "$run/containerd.sock"
runc_root = "$run/runc"
CONF
for _ in $(seq 100); do [ -S "$run/containerd.sock" ] && curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
setsid "$agent" --config "$data/agent.toml" 2>"$run/agent.log" &
pids+=($!)
ctl() { "$agent" --config "$data/agent.toml" ctl "$@"; }
for _ in $(seq 100); do ctl list >/dev/null 2>&1 && break; sleep 0.1; done
ctl list >/dev/null || { echo "up: the agent did not start; see $run/agent.log" >&2; exit 1; }

if ctl status demo >/dev/null 2>&1; then
  ctl start demo
else
  ctl create demo --image "127.0.0.1:$port/dev:latest" --cpu-millis 1000 --memory 1G --disk 2G
fi

cat <<MSG

Berth is up: containerd, a registry on 127.0.0.1:$port and berth-agent (logs in $run/).
The workspace "demo" runs the dev image (Debian, uid 1000, /workspace persistent).

  alias berth-agent='$agent --config $data/agent.toml'
  berth-agent ctl list
  berth-agent ctl exec -t demo -- bash
  berth-agent ctl create ws2 --image 127.0.0.1:$port/tiny:latest --memory 256M --disk 1G
  berth-agent ctl stop demo && berth-agent ctl start demo
  berth-agent ctl delete ws2

Ctrl-C stops everything started here; workspaces' data stays in $data.
MSG
wait "${pids[2]}"
