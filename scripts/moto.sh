#!/usr/bin/env bash
# Runs moto's S3-compatible server (PyPI) from a virtualenv cached outside
# the clone, keyed by the pinned version, so only the first run downloads it.
#   scripts/moto.sh --install          (only make the virtualenv)
#   scripts/moto.sh -H HOST -p PORT    (arguments go to moto_server)
set -euo pipefail
version=5.2.5
cache=${BERTH_CACHE:-/var/cache/berth}
venv=$cache/venv/moto-$version
if [ ! -f "$venv/.complete" ]; then
  mkdir -p "$cache/venv"
  exec 9>"$cache/venv/.lock"
  flock 9
  if [ ! -f "$venv/.complete" ]; then
    echo "moto: installing $version into $venv" >&2
    rm -rf "$venv"
    py=/usr/bin/python3 # Debian's (python3-venv), whatever else is on PATH
    [ -x "$py" ] || py=python3
    "$py" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$version"
    touch "$venv/.complete"
  fi
  exec 9>&-
fi
[ "${1:-}" = "--install" ] && exit 0
exec "$venv/bin/moto_server" "$@"
