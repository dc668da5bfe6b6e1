#!/usr/bin/env bash
# Regenerates everything under deploy/ that is derived from code:
#   1. deploy/crds/<name>.yaml from each controller binary's `crds` subcommand;
#   2. the per-issuer Helm charts deploy/charts/certbridge-<name>/ (with the CRDs in their crds/ dir)
#      and the plain manifests deploy/manifests/<name>.yaml, via deploy/gen/generate.py.
# Run it after changing an issuer's spec type, deploy/gen/ or deploy/charts/certbridge-common/, and
# commit the result; deploy/check.sh fails while anything is stale.
#
#   scripts/gen-deploy.sh            # build the binaries (debug) and regenerate everything
#   scripts/gen-deploy.sh --no-crds  # only re-render charts and manifests from the committed CRDs
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
py="$(deploy/gen/python.sh)"

if [[ ${1:-} != --no-crds ]]; then
    # crate<TAB>binary<TAB>name for every issuer
    mapfile -t issuers < <("$py" -c '
import yaml
for i in yaml.safe_load(open("deploy/gen/issuers.yaml"))["issuers"]:
    print(i["crate"], i["binary"], i["name"], sep="\t")')
    pkgs=()
    for line in "${issuers[@]}"; do
        IFS=$'\t' read -r crate binary name <<<"$line"
        pkgs+=(-p "$crate" --bin "$binary")
    done
    echo "building ${#issuers[@]} controller binaries" >&2
    cargo build -q "${pkgs[@]}"
    target="${CARGO_TARGET_DIR:-$repo/target}"
    mkdir -p deploy/crds
    for line in "${issuers[@]}"; do
        IFS=$'\t' read -r crate binary name <<<"$line"
        tmp="$(mktemp)"
        if ! "$target/debug/$binary" crds >"$tmp"; then
            rm -f "$tmp"
            echo "$binary crds failed" >&2
            exit 1
        fi
        if ! grep -q '^kind: CustomResourceDefinition' "$tmp"; then
            rm -f "$tmp"
            echo "$binary crds printed no CustomResourceDefinition" >&2
            exit 1
        fi
        chmod 644 "$tmp"
        mv "$tmp" "deploy/crds/$name.yaml"
        echo "wrote deploy/crds/$name.yaml" >&2
    done
fi

"$py" deploy/gen/generate.py
