# coordinator-base: Debian 12 (essential) with restic (the coordinator lists
# shared backups) and CA certificates, and the user berth (10001) the
# Deployment runs as. images/component.sh adds the binary on top.
# shellcheck shell=bash
build_rootfs() {
  mmdebstrap --quiet --variant=essential --format=tar \
    --include=restic,ca-certificates \
    --customize-hook='echo "berth:x:10001:10001:Berth:/var/lib/berth:/usr/sbin/nologin" >>"$1"/etc/passwd' \
    --customize-hook='echo "berth:x:10001:" >>"$1"/etc/group' \
    --customize-hook='mkdir -p "$1"/var/lib/berth/coordinator && chown -R 10001:10001 "$1"/var/lib/berth' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    bookworm - http://deb.debian.org/debian | tar -x -C "$1"
}
image_config=(
  --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin
  --config.user 10001:10001
  --config.label org.opencontainers.image.title=berth-coordinator-base
)
