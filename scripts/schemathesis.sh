#!/usr/bin/env bash
# Runs schemathesis (PyPI) from a virtualenv cached outside the clone,
# keyed by the pinned version, so only the first run downloads it.
#   scripts/schemathesis.sh run URL ...   (arguments go to schemathesis)
set -euo pipefail
version=4.32.5
cache=${BERTH_CACHE:-/var/cache/berth}
venv=$cache/venv/schemathesis-$version
if [ ! -f "$venv/.complete" ]; then
  mkdir -p "$cache/venv"
  exec 9>"$cache/venv/.lock"
  flock 9
  if [ ! -f "$venv/.complete" ]; then
    echo "schemathesis: installing $version into $venv" >&2
    rm -rf "$venv"
    # Built in place: a venv's scripts name its own path.
    py=/usr/bin/python3 # Debian's (python3-venv), whatever else is on PATH
    [ -x "$py" ] || py=python3
    "$py" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
    touch "$venv/.complete"
  fi
  exec 9>&-
fi
exec "$venv/bin/schemathesis" "$@"
