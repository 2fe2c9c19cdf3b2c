#!/usr/bin/env bash
# make up's demo repository: a small project with a devcontainer.json (a
# Dockerfile build, a feature pushed to the local registry, forwarded ports,
# lifecycle commands), served read-only
# over git's "dumb" HTTP protocol by python3's http.server inside its own
# network namespace (berth-demo-git, 10.254.254.2), so that workspaces reach
# it as they would reach a git host: forwarded through the node, allowed by
# the agent's network.egress_allow. Usage:
#   demo-repo.sh up DIR REGISTRY   prints the server's pid, then the repository URL
#   demo-repo.sh down              removes the namespace and its link
set -euo pipefail
ns=berth-demo-git host_if=berthdemo0 host_ip=10.254.254.1 ip=10.254.254.2 port=8418

down() {
  ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  ip link del "$host_if" 2>/dev/null || true
}

# Uploads file $3 as a blob of repository $2 of registry $1; prints its digest.
push_blob() {
  local digest location
  digest=sha256:$(sha256sum "$3" | cut -d' ' -f1)
  location=$(curl -fsS -X POST -D - -o /dev/null "http://$1/v2/$2/blobs/uploads/" |
    tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case $location in http*) ;; *) location="http://$1$location" ;; esac
  case $location in *\?*) location="$location&" ;; *) location="$location?" ;; esac
  curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$3" \
    "${location}digest=$digest" >/dev/null
  echo "$digest"
}

# Pushes the directory $3 as the devcontainer feature $1/$2:1 (an empty
# config of type application/vnd.devcontainers and one tar layer, as
# `devcontainer features publish` lays it out).
push_feature() {
  local layer config layer_digest config_digest
  layer=$(mktemp) config=$(mktemp)
  tar -C "$3" -cf "$layer" . && printf '{}' >"$config"
  layer_digest=$(push_blob "$1" "$2" "$layer")
  config_digest=$(push_blob "$1" "$2" "$config")
  curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary @- "http://$1/v2/$2/manifests/1" >/dev/null <<JSON
{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
 "config": {"mediaType": "application/vnd.devcontainers", "digest": "$config_digest", "size": 2},
 "layers": [{"mediaType": "application/vnd.devcontainers.layer.v1+tar", "digest": "$layer_digest",
             "size": $(stat -c %s "$layer")}]}
JSON
  rm -f "$layer" "$config"
}

up() {
  local dir=$1 registry=$2 work=$1/hello.work bare=$1/hello.git feature=$1/greet.feature
  down
  ip netns add "$ns"
  ip link add "$host_if" type veth peer name eth0 netns "$ns"
  ip addr add "$host_ip/30" dev "$host_if" && ip link set "$host_if" up
  ip -n "$ns" addr add "$ip/30" dev eth0 && ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up
  ip -n "$ns" route add default via "$host_ip"
  # A feature: install.sh runs as the workspace's root with its options.
  rm -rf "$feature" && mkdir -p "$feature"
  cat >"$feature/devcontainer-feature.json" <<'JSON'
{ "id": "greet", "version": "1.0.0", "name": "Greet",
  "options": { "name": { "type": "string", "default": "world" } } }
JSON
  cat >"$feature/install.sh" <<'SH'
#!/bin/sh
set -e
printf '#!/bin/sh\necho "hello, %s (installed for %s by a devcontainer feature)"\n' \
  "$NAME" "$_REMOTE_USER" >/usr/local/bin/greet
chmod 755 /usr/local/bin/greet
SH
  chmod 755 "$feature/install.sh"
  push_feature "$registry" berth-demo/features/greet "$feature" >&2
  rm -rf "$work" "$bare" && mkdir -p "$work/.devcontainer"
  cat >"$work/.devcontainer/devcontainer.json" <<JSON
// Built by the agent on containerd: no Docker anywhere.
{
  "name": "hello",
  "build": { "dockerfile": "Dockerfile", "context": ".." },
  "features": { "$registry/berth-demo/features/greet:1": { "name": "Berth" } },
  "containerEnv": { "GREETING": "hello from Berth" },
  "forwardPorts": [8000],
  "portsAttributes": { "8000": { "label": "Web app" } },
  "onCreateCommand": "git log --oneline -1 > .first-commit",
  "postCreateCommand": "python3 -c 'import os; print(os.environ[\"GREETING\"])'"
}
JSON
  cat >"$work/.devcontainer/Dockerfile" <<DOCKERFILE
FROM $registry/dev:latest
USER root
COPY index.html /srv/www/index.html
RUN echo "built by Berth's run-and-commit builder" > /etc/motd
USER 1000
DOCKERFILE
  echo '<h1>hello from a Berth workspace</h1>' >"$work/index.html"
  printf '# hello\n\nThe demo repository of make up: python3 -m http.server 8000 -d /srv/www\n' >"$work/README.md"
  git -C "$work" init -q -b main
  git -C "$work" add -A
  git -C "$work" -c user.name=berth -c user.email=berth@localhost commit -q -m "hello"
  git clone -q --bare "$work" "$bare"
  git -C "$bare" update-server-info
  ip netns exec "$ns" setsid python3 -m http.server "$port" --bind "$ip" --directory "$dir" \
    >/dev/null 2>&1 </dev/null &
  echo $!
  for _ in $(seq 50); do
    curl -fs -o /dev/null "http://$ip:$port/hello.git/info/refs" && break
    sleep 0.1
  done
  echo "http://$ip:$port/hello.git"
}

case "${1:-}" in
  up) up "$2" "$3" ;;
  down) down ;;
  *) echo "usage: $0 up DIR REGISTRY | down" >&2; exit 2 ;;
esac
