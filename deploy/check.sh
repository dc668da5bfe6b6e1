#!/usr/bin/env bash
# Guards deploy/ against drift and mistakes. Exits non-zero on the first failure, naming the fix.
#
#   1. CRDs: each controller's `crds` output equals deploy/crds/<name>.yaml (else: scripts/gen-deploy.sh).
#   2. Charts and plain manifests equal what deploy/gen/generate.py produces from their sources.
#   3. Chart tests (deploy/gen/test_charts.py): every chart rendered with several values — hardened
#      pod, probes, flags, least-privilege RBAC per issuer, the values switches, bad values.
#   4. Controller audit (deploy/gen/controller_audit.py): the example controller runs with the rendered
#      Deployment's arguments against kube-sim through a recording proxy, issues a CertificateRequest
#      per issuer kind and a Kubernetes CSR; every API call it made must be allowed by the chart's RBAC.
#      Also with kubernetesCSRs off, and with namespacedIssuers off (least-privilege Secret access).
#   5. With helm on PATH: `helm lint` and `helm template` == the committed plain manifests.
#
# Installs PyYAML into .work/deploy-venv when the system python3 lacks it. Uses $CARGO_TARGET_DIR.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
say() { printf '\n==> deploy: %s\n' "$*"; }
py="$(deploy/gen/python.sh)"
target="${CARGO_TARGET_DIR:-$repo/target}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mapfile -t issuers < <("$py" -c '
import yaml
for i in yaml.safe_load(open("deploy/gen/issuers.yaml"))["issuers"]:
    print(i["crate"], i["binary"], i["name"], sep="\t")')

# --- 1. CRDs --------------------------------------------------------------------------------------
say "CRDs printed by the controllers equal deploy/crds/"
pkgs=()
for line in "${issuers[@]}"; do
    IFS=$'\t' read -r crate binary name <<<"$line"
    pkgs+=(-p "$crate" --bin "$binary")
done
cargo build -q "${pkgs[@]}" -p certbridge-testkit --bin kube-sim
for line in "${issuers[@]}"; do
    IFS=$'\t' read -r crate binary name <<<"$line"
    "$target/debug/$binary" crds >"$work/$name.yaml"
    if ! diff -u "deploy/crds/$name.yaml" "$work/$name.yaml" >"$work/$name.diff"; then
        head -60 "$work/$name.diff"
        echo "deploy/crds/$name.yaml is stale: run scripts/gen-deploy.sh and commit the result" >&2
        exit 1
    fi
done

# --- 2. generated charts and manifests ------------------------------------------------------------
say "charts and manifests are up to date (deploy/gen/generate.py --check)"
"$py" deploy/gen/generate.py --check

# --- 3. chart tests -------------------------------------------------------------------------------
say "chart tests (deploy/gen/test_charts.py)"
"$py" -m unittest discover -s deploy/gen -p 'test_*.py'

# --- 4. controller audit ----------------------------------------------------------------------------
say "controller audit: every API call the example controller makes is allowed by the chart's RBAC"
"$py" deploy/gen/controller_audit.py --target-dir "$target"
say "controller audit with kubernetesCSRs.enabled=false"
"$py" deploy/gen/controller_audit.py --target-dir "$target" --no-csrs
say "controller audit with namespacedIssuers.enabled=false (Secrets readable only in the cluster resource namespace)"
"$py" deploy/gen/controller_audit.py --target-dir "$target" --no-namespaced-issuers

# --- 5. real Helm, when available ------------------------------------------------------------------
if command -v helm >/dev/null 2>&1; then
    say "helm lint and helm template == deploy/manifests"
    "$py" deploy/gen/helm_compare.py
else
    say "helm is not on PATH: charts were rendered by deploy/gen/gotemplate.py only (see deploy/README.md)"
fi
say "all deploy checks passed"
