#!/usr/bin/env bash
# Installs what the certbridge-adcs tests need: the certsrv simulator's Python environment
# (pyspnego as the independent NTLM acceptor, cryptography for the CA) in the repository's
# git-ignored .work/adcs-venv, unless it is already there. Prints the path of its python.
#
#   issuers/adcs/scripts/install-sim.sh
#
# The tests look for .work/adcs-venv/bin/python (or $CERTBRIDGE_ADCS_PYTHON) and fail with a
# message naming this script when it is missing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
venv="${ADCS_VENV:-$repo/.work/adcs-venv}"
py="$venv/bin/python"

if [[ -x "$py" ]] && "$py" -c 'import spnego, cryptography' >/dev/null 2>&1; then
    echo "$py"
    exit 0
fi

python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet "pyspnego==0.12.4" "cryptography>=42" >&2
"$py" -c 'import spnego, cryptography' >&2
echo "$py"
