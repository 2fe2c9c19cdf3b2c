#!/usr/bin/env bash
# Runs oidc-provider-mock (PyPI), a real OpenID Connect provider for tests,
# from a virtualenv cached outside the clone, keyed by the pinned version,
# so only the first run downloads it.
#   scripts/oidc-provider.sh --install          (only make the virtualenv)
#   scripts/oidc-provider.sh --host H --port P  (arguments go to the server)
set -euo pipefail
version=0.3.4
. "$(dirname "$0")/pyvenv.sh"
pyvenv oidc-provider-mock "$version" "oidc-provider-mock==$version"
[ "${1:-}" = "--install" ] && exit 0
exec "$venv/bin/oidc-provider-mock" "$@"
