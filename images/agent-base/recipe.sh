# agent-base: Debian 12 (essential) with what berth-agent runs beside the
# host's containerd: mount and losetup, mkfs.ext4 and fstrim, nft, restic
# (backups), the containers seccomp profile, CA certificates.
# images/component.sh adds the binary on top as its own layer.
# shellcheck shell=bash
build_rootfs() {
  mmdebstrap --quiet --variant=essential --format=tar \
    --include=mount,util-linux,e2fsprogs,nftables,restic,golang-github-containers-common,ca-certificates \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    bookworm - http://deb.debian.org/debian | tar -x -C "$1"
}
image_config=(
  --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin
  --config.label org.opencontainers.image.title=berth-agent-base
)
