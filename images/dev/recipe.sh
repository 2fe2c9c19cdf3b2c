# dev: Debian bookworm with bash, git, curl, ca-certificates, procps, the toolchains
# project detection defaults to (Node: nodejs + npm; Python: python3 + venv + pip)
# and a non-root user "dev" (uid 1000) with a home. Built by mmdebstrap from
# Debian's mirror.
# shellcheck shell=bash
build_rootfs() {
  local root=$1
  rmdir "$root" 2>/dev/null || rm -rf "$root"
  mmdebstrap --quiet --variant=apt --mode=root \
    --include=bash,git,curl,ca-certificates,python3,python3-venv,python3-pip,nodejs,npm,procps,tini \
    --customize-hook='chroot "$1" useradd --create-home --uid 1000 --user-group --shell /bin/bash dev' \
    --customize-hook='mkdir -p "$1/workspace" && chown 1000:1000 "$1/workspace"' \
    --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
    bookworm "$root"
}
image_config=(
  --config.user 1000:1000
  --config.workingdir /workspace
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  --config.env HOME=/home/dev
  --config.env LANG=C.UTF-8
  --config.entrypoint /usr/bin/tini --config.entrypoint --
  --config.cmd /bin/sleep --config.cmd infinity
)
