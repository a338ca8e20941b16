#!/usr/bin/env bash
# Validates deploy/crds and docs/examples (see validate_manifests.py). Installs kubernetes-validate
# from PyPI into a virtualenv on first use (idempotent; FAULTLINE_PYENV overrides where).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${FAULTLINE_PYENV:-${XDG_CACHE_HOME:-$HOME/.cache}/faultline/pyenv}"
version="1.37.0"
if ! "$venv/bin/python" -c "import kubernetes_validate, yaml, jsonschema" 2>/dev/null \
   || [ "$("$venv/bin/python" -c 'import kubernetes_validate.version as v; print(v.__version__)' 2>/dev/null)" != "$version" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$version" pyyaml jsonschema
fi
exec "$venv/bin/python" "$here/validate_manifests.py"
