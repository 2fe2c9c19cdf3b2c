#!/usr/bin/env bash
# Runs schemathesis (PyPI) from a virtualenv cached outside the clone,
# keyed by the pinned version, so only the first run downloads it.
#   scripts/schemathesis.sh run URL ...   (arguments go to schemathesis)
set -euo pipefail
version=4.32.5
. "$(dirname "$0")/pyvenv.sh"
pyvenv schemathesis "$version" "schemathesis==$version"
exec "$venv/bin/schemathesis" "$@"
