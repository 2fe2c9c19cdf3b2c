#!/usr/bin/env bash
# A Debian 12 root file system for tests that install Berth's packages on a
# bare system (tests/tests/packages.rs; the Ansible targets): made once with
# mmdebstrap, kept as a tarball under $BERTH_CACHE/rootfs keyed by the
# hash of this script (so of the package list below). Prints its path.
set -euo pipefail
cache=${BERTH_CACHE:-/var/cache/berth}/rootfs
# What a node needs beside Berth's own packages (their Depends, installed
# from the archive ahead: the tests install with dpkg, offline), systemd to
# boot it, and SSH and Python for Ansible.
include=systemd,systemd-sysv,dbus,passwd,ca-certificates,iproute2,\
containerd,runc,nftables,e2fsprogs,util-linux,golang-github-containers-common,restic,\
openssh-server,python3,python3-apt,sudo
key=$(sha256sum "$0" | cut -c1-16)
tar=$cache/debian12-$key.tar
if [ ! -f "$tar" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if [ ! -f "$tar" ]; then
    echo "rootfs: making Debian 12 ($tar) with mmdebstrap" >&2
    mmdebstrap --quiet --variant=minbase --format=tar --include="$include" \
      bookworm "$tar.tmp" http://deb.debian.org/debian
    mv "$tar.tmp" "$tar"
  fi
  exec 9>&-
fi
echo "$tar"
