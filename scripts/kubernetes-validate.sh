#!/usr/bin/env bash
# Validates Kubernetes manifests offline against the API's schemas, strictly
# (unknown fields are errors): PyPI kubernetes-validate, pinned, in a
# virtualenv cached outside the clone (its schemas ship in the package).
#   scripts/kubernetes-validate.sh --install       (only make the virtualenv)
#   scripts/kubernetes-validate.sh --json FILE     (a manifest file as JSON, for tests)
#   scripts/kubernetes-validate.sh FILE...         (validate)
set -euo pipefail
version=1.34.1
. "$(dirname "$0")/pyvenv.sh"
pyvenv kubernetes-validate "$version" "kubernetes-validate==$version"
case "${1:-}" in
  --install) exit 0 ;;
  --json)
    exec "$venv/bin/python" -c '
import json, sys, yaml
print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))' "$2" ;;
esac
exec "$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.30.0 "$@"
