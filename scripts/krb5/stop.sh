#!/usr/bin/env bash
# Stops the KDC started by scripts/krb5/start.sh DIR (by its recorded process ID) and removes DIR.
set -euo pipefail
dir="$1"
if [[ -f "$dir/kdc.pid" ]]; then
    kill "$(cat "$dir/kdc.pid")" 2>/dev/null || true
fi
rm -rf "$dir"
