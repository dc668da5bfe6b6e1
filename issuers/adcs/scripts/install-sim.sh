#!/usr/bin/env bash
# Installs what the certbridge-adcs tests need: the certsrv simulator's Python environment
# (pyspnego as the independent NTLM acceptor, python-gssapi over MIT krb5 as the Kerberos acceptor,
# cryptography for the CA) in the repository's git-ignored .work/adcs-venv, and Debian's MIT
# Kerberos KDC (krb5-kdc, krb5-admin-server; libkrb5-dev to build gssapi), unless already there.
# Prints the path of the venv's python. python-gssapi builds from source (a few minutes, once).
#
#   issuers/adcs/scripts/install-sim.sh
#
# The tests look for .work/adcs-venv/bin/python (or $CERTBRIDGE_ADCS_PYTHON) and fail with a
# message naming this script when it is missing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
venv="${ADCS_VENV:-$repo/.work/adcs-venv}"
py="$venv/bin/python"

if ! [[ -x /usr/sbin/krb5kdc && -x /usr/sbin/kdb5_util && -e /usr/include/krb5.h ]]; then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq krb5-kdc krb5-admin-server libkrb5-dev gcc >&2
fi

if [[ -x "$py" ]] && "$py" -c 'import spnego, cryptography, gssapi' >/dev/null 2>&1; then
    echo "$py"
    exit 0
fi

[[ -x "$py" ]] || python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet "pyspnego==0.12.4" "cryptography>=42" "gssapi>=1.8" >&2
"$py" -c 'import spnego, cryptography, gssapi' >&2
echo "$py"
