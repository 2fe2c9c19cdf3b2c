#!/usr/bin/env bash
# Runs moto's S3-compatible server (PyPI) from a virtualenv cached outside
# the clone, keyed by the pinned version, so only the first run downloads it.
#   scripts/moto.sh --install          (only make the virtualenv)
#   scripts/moto.sh -H HOST -p PORT    (arguments go to moto_server)
set -euo pipefail
version=5.2.5
. "$(dirname "$0")/pyvenv.sh"
pyvenv moto "$version" "moto[server]==$version"
[ "${1:-}" = "--install" ] && exit 0
exec "$venv/bin/moto_server" "$@"
