#!/usr/bin/env bash
# Prints the path of a python3 that has PyYAML, which deploy/gen/*.py need. Uses the system python3
# when it has PyYAML; otherwise creates .work/deploy-venv (git-ignored) and installs PyYAML there.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if ! command -v python3 >/dev/null 2>&1; then
    echo "python3 is missing: apt-get install -y python3 python3-venv" >&2
    exit 1
fi
if python3 -c 'import yaml' >/dev/null 2>&1; then
    command -v python3
    exit 0
fi
venv="$repo/.work/deploy-venv"
if ! "$venv/bin/python3" -c 'import yaml' >/dev/null 2>&1; then
    echo "installing PyYAML into $venv" >&2
    python3 -m venv "$venv" >&2 || {
        echo "python3 -m venv failed: apt-get install -y python3-venv" >&2
        exit 1
    }
    "$venv/bin/pip" install --quiet 'PyYAML>=6,<7' >&2
fi
echo "$venv/bin/python3"
