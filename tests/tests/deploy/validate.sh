#!/usr/bin/env bash
# Renders and checks every kustomization under deploy/ (validate_overlays.py) with $KUBECTL
# (default kubectl). Runs in the schema-check virtualenv of controller/tests/schema/validate.sh
# (same place, same pinned kubernetes-validate); when it is missing, that script makes it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${FAULTLINE_PYENV:-${XDG_CACHE_HOME:-$HOME/.cache}/faultline/pyenv}"
if ! "$venv/bin/python" -c "import kubernetes_validate, yaml, jsonschema" 2>/dev/null; then
  "$root/controller/tests/schema/validate.sh" >/dev/null || true
fi
exec "$venv/bin/python" "$here/validate_overlays.py" "${KUBECTL:-kubectl}"
