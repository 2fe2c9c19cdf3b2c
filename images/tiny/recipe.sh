# tiny: busybox-static only. Builds in about a second; the image tests use.
# shellcheck shell=bash
build_rootfs() {
  local root=$1
  mkdir -p "$root"/{bin,etc,tmp,workspace,home/dev,proc,sys,dev}
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1000:dev:/home/dev:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\ndev:x:1000:\n' >"$root/etc/group"
  chown 1000:1000 "$root/home/dev" "$root/workspace"
}
# The main process waits for SIGTERM and exits 0 on it.
image_config=(
  --config.user 1000:1000
  --config.workingdir /workspace
  --config.env PATH=/bin
  --config.env HOME=/home/dev
  --config.cmd /bin/sh --config.cmd -c
  --config.cmd "trap 'exit 0' TERM; while :; do sleep 3600 & wait \$!; done"
)
