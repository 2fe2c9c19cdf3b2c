#!/usr/bin/env bash
# Checks an OpenMetrics exposition on standard input with the Prometheus
# Python client's own strict parser (PyPI prometheus-client, pinned, in a
# virtualenv cached outside the clone): exit 0 when it parses, else 1 with
# the parser's complaint.
#   scripts/openmetrics-check.sh --install   (only make the virtualenv)
set -euo pipefail
version=0.21.1
. "$(dirname "$0")/pyvenv.sh"
pyvenv prometheus-client "$version" "prometheus-client==$version"
[ "${1:-}" = "--install" ] && exit 0
exec "$venv/bin/python" -c '
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
try:
    families = list(text_string_to_metric_families(sys.stdin.read()))
except Exception as e:
    print(f"invalid OpenMetrics: {e}", file=sys.stderr)
    sys.exit(1)
print(f"{len(families)} metric families")
'
