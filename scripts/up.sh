#!/usr/bin/env bash
# Brings up a single-node Berth on this machine with the embedded defaults:
# a private containerd, a loopback registry holding the project's images,
# berth-coordinator (SQLite store, API on 127.0.0.1:8080, agent link on
# 127.0.0.1:7443) and berth-agent joined to it with a one-time token; then
# creates (or starts) the workspace "demo" from the dev image through the API,
# and "hello" from a demo repository (scripts/demo-repo.sh), and "fast" from
# a prebuild of it.
# Stays in the foreground; Ctrl-C stops the workspaces (through the API, so the
# coordinator records them as stopped) and the services it started (each in its
# own session, so the signal reaches only this script) and keeps the data
# (store, volumes, images, node identity under $BERTH_DATA, default /var/lib/berth).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${BERTH_DATA:-/var/lib/berth}
run=${BERTH_RUN:-/run/berth}
port=${BERTH_REGISTRY_PORT:-5000}
api=${BERTH_API:-127.0.0.1:8080}
link=${BERTH_LINK:-127.0.0.1:7443}
cache=${BERTH_CACHE:-/var/cache/berth}
bin=$PWD/target/debug
mkdir -p "$data" "$run"
# Logs are the admin's: not world-readable. (Not a umask: containerd's state
# dirs must stay traversable by the workspaces' mapped root, whose runc
# mounts the rootfs from there.)
private_log() { : >"$run/$1"; chmod 600 "$run/$1"; echo "$run/$1"; }
export BERTH_URL=http://$api

# One make up at a time: a second containerd and agent beside the first
# would take the node's link from each other.
lock=$run/up.pid
if [ -f "$lock" ] && kill -0 "$(cat "$lock")" 2>/dev/null; then
  echo "up: Berth is already up here (make up, pid $(cat "$lock")); stop it with Ctrl-C first" >&2
  exit 1
fi
# Services left running by a make up that was killed: say so rather than start twins.
if curl -fs -m 1 "$BERTH_URL/v1/openapi.json" >/dev/null 2>&1 ||
    pgrep -f "containerd --config $run/containerd.toml" >/dev/null; then
  echo "up: a coordinator or containerd of an earlier make up still runs (pgrep -af berth; $run/)" >&2
  exit 1
fi
echo $$ >"$lock"

pids=()
berth() { "$bin/berth" "$@"; }
say() { echo "$@" 2>/dev/null || true; }
# Ends a service: SIGTERM, then SIGKILL after 5 s.
end() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}
cleanup() {
  trap - INT TERM EXIT
  # The output may be a closed pipe (make up | tee, then Ctrl-C): writing
  # must not end the cleanup.
  trap '' PIPE
  set +e
  local stops=()
  say; say "up: stopping workspaces and services (data kept in $data)"
  if [ -n "${BERTH_TOKEN:-}" ]; then
    for ws in $(berth list --state running --json 2>/dev/null |
        python3 -c 'import json,sys; [print(w["name"]) for w in json.load(sys.stdin)]' 2>/dev/null); do
      berth stop "$ws" -q --timeout 15s >/dev/null 2>&1 &
      stops+=($!)
    done
    for j in "${stops[@]}"; do wait "$j" 2>/dev/null; done
  fi
  # Agent first (it holds workspaces' tasks), containerd last.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    end "${pids[$i]}"
  done
  scripts/demo-repo.sh down
  rm -f "$lock"
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
setsid containerd --config "$run/containerd.toml" >"$(private_log containerd.log)" 2>&1 &
pids+=($!)

cat >"$run/registry.yml" <<CONF
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $cache/registry } }
http: { addr: 127.0.0.1:$port }
CONF
setsid docker-registry serve "$run/registry.yml" >"$(private_log registry.log)" 2>&1 &
pids+=($!)

# A new store means a new cluster CA: an identity from an older one is void.
coord_dir=$data/coordinator
if [ ! -f "$coord_dir/berth.db" ]; then rm -rf "$data/agent/identity"; fi
setsid "$bin/berth-coordinator" --data-dir "$coord_dir" --api "$api" --link "$link" \
  --default-image "127.0.0.1:$port/dev:latest" --backup-repository "$data/backups" \
  >"$(private_log coordinator.log)" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "$BERTH_URL/v1/openapi.json" >/dev/null && break; sleep 0.1; done
curl -fs "$BERTH_URL/v1/openapi.json" >/dev/null ||
  { echo "up: the coordinator did not start; see $run/coordinator.log" >&2; exit 1; }
BERTH_TOKEN=$(cat "$coord_dir/admin.token")
export BERTH_TOKEN

cat >"$data/agent.toml" <<CONF
# berth-agent configuration written by make up; every other setting is its default.
state_dir = "$data/agent"
[containerd]
socket = "$run/containerd.sock"
runc_root = "$run/runc"
[network]
# The demo git server (scripts/demo-repo.sh): a private address workspaces may reach.
egress_allow = ["10.254.254.2/32"]
[coordinator]
address = "$link"
CONF
for _ in $(seq 100); do [ -S "$run/containerd.sock" ] && curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
# The one-time join token goes by the environment, not the command line (ps).
join=
if [ ! -f "$data/agent/identity/cert.pem" ]; then
  join=$(berth admin join-token create --ttl 10m)
fi
env ${join:+BERTH_JOIN_TOKEN=$join} setsid "$bin/berth-agent" --config "$data/agent.toml" --coordinator "$link" \
  2>"$(private_log agent.log)" &
pids+=($!)
node=
for _ in $(seq 150); do
  node=$(berth nodes --json 2>/dev/null | python3 -c \
    'import json,sys; print(next((n["id"] for n in json.load(sys.stdin) if n["status"]=="ready" and n["connected_here"]), ""))' \
    2>/dev/null || true)
  [ -n "$node" ] && break
  sleep 0.1
done
[ -n "$node" ] || { echo "up: the agent did not join; see $run/agent.log" >&2; exit 1; }

# A secret of the admin's, given to their workspaces at each start
# (docs/admin.md, "Secrets").
printf 'hello from a secret' | berth secret set DEMO_GREETING >/dev/null
if berth get demo >/dev/null 2>&1; then
  berth start demo -q >/dev/null
else
  berth create demo --cpu 1 --memory 1G --disk 2G >/dev/null   # the default image: dev
fi
# A workspace from a repository: cloned, its Dockerfile built on the node,
# its lifecycle commands run (docs/repositories.md).
{ read -r git_pid; read -r repo_url; } < <(scripts/demo-repo.sh up "$data/demo-git" "127.0.0.1:$port")
pids+=("$git_pid")
# Connections forwarded to a just-made veth are refused for a few seconds
# (seen here, cause not found yet): wait until a workspace reaches the server.
for _ in $(seq 20); do
  berth exec demo -- curl -fs -m 2 -o /dev/null "$repo_url/info/refs" >/dev/null 2>&1 && break
  sleep 1
done
hello=$(berth get hello --json 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || echo none)
if [ "$hello" = failed ]; then berth delete hello -q >/dev/null 2>&1 || true; hello=none; fi
if [ "$hello" = none ]; then
  berth create hello --repo "$repo_url" --cpu 1 --memory 1G --disk 2G -q >/dev/null ||
    echo "up: the workspace hello failed: berth get hello; berth logs hello --init" >&2
else
  berth start hello -q >/dev/null || echo "up: the workspace hello did not start: berth get hello" >&2
fi
# A prebuild of the same repository (its onCreateCommand run once, the result
# kept as a layer), and the workspace "fast" started from it (docs/prebuilds.md).
if berth get fast >/dev/null 2>&1; then
  berth start fast -q >/dev/null || echo "up: the workspace fast did not start: berth get fast" >&2
else
  berth prebuild run --repo "$repo_url" -q >/dev/null ||
    echo "up: the prebuild failed: berth prebuild list" >&2
  berth create fast --repo "$repo_url" --cpu 1 --memory 1G --disk 2G -q >/dev/null ||
    echo "up: the workspace fast failed: berth get fast" >&2
fi

cat <<MSG

Berth is up: containerd, a registry on 127.0.0.1:$port, berth-coordinator (API $BERTH_URL,
agent link $link) and berth-agent on node "$node" (logs in $run/).
The workspace "demo" runs the dev image (Debian, uid 1000, /workspace persistent).

  export PATH=$bin:\$PATH BERTH_URL=$BERTH_URL BERTH_TOKEN=\$(cat $coord_dir/admin.token)
  berth list
  berth exec demo -- uname -a
  berth create ws2 --image 127.0.0.1:$port/tiny:latest --memory 256M --disk 1G
  berth port-forward demo 8000   # localhost:8000 -> port 8000 in demo
  berth ssh-key add && berth ssh demo   # OpenSSH into demo (key: ~/.ssh/id_ed25519.pub)
  berth config-ssh                      # then: ssh berth.demo, scp, VS Code Remote-SSH
  berth open                            # a one-time sign-in link to the web portal
  berth open demo --editor              # ... to demo's editor (files, Monaco, terminal)
  berth open demo                       # ... to demo's web terminal
  # previews: $BERTH_URL/w/demo/8000/ (an HTTP server on port 8000 in demo)
  berth stop demo && berth start demo
  berth exec demo -- sh -c 'echo \$DEMO_GREETING'   # a secret: berth secret list, berth secret set
  berth admin capacity && berth admin audit          # for admins (docs/admin.md)
  berth delete ws2
  # "hello" is made from a repository ($repo_url):
  berth get hello                       # clone, build (cached the next time), init steps
  berth logs hello --init               # their output
  berth ports hello                     # forwarded ports and their labels
  berth exec hello -- cat /etc/motd     # written by a RUN of its Dockerfile
  berth exec hello -- greet             # installed by a devcontainer feature
  berth prebuild list                   # the repository's prebuild: a layer on the node
  berth get fast                        # started from it: "Prebuild: ...", onCreateCommand skipped
  berth prebuild run --repo $repo_url   # build another (reused: same commit and config)
  berth nodes
  # Every workspace is backed up every 5 min and after each stop (docs/backups.md):
  berth backup demo                     # one now; berth backups demo lists them
  berth stop demo && berth restore demo --at \$(date -u -d '10 min ago' +%FT%TZ) && berth start demo

Ctrl-C stops everything started here; the data stays in $data.
MSG
wait "${pids[3]}"
