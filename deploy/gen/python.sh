#!/usr/bin/env bash
# Prints the path of a python3 that has what deploy/gen/*.py need: PyYAML, and kubernetes-validate
# (the Kubernetes OpenAPI schemas of each release, as JSON schemas, with jsonschema) for checking every
# rendered object. Creates .work/deploy-venv (git-ignored) and installs the pinned versions there when
# missing.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
requirements=('PyYAML>=6,<7' 'kubernetes-validate==1.37.0')
if ! command -v python3 >/dev/null 2>&1; then
    echo "python3 is missing: apt-get install -y python3 python3-venv" >&2
    exit 1
fi
venv="$repo/.work/deploy-venv"
if ! "$venv/bin/python3" -c 'import yaml, kubernetes_validate' >/dev/null 2>&1 ||
    [[ "$("$venv/bin/python3" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))')" != 1.37.0 ]]; then
    echo "installing ${requirements[*]} into $venv" >&2
    python3 -m venv "$venv" >&2 || {
        echo "python3 -m venv failed: apt-get install -y python3-venv" >&2
        exit 1
    }
    "$venv/bin/pip" install --quiet "${requirements[@]}" >&2
fi
echo "$venv/bin/python3"
