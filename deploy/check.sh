#!/usr/bin/env bash
# Guards deploy/ against drift and mistakes. Exits non-zero on the first failure, naming the fix.
#
#   1. CRDs: each controller's `crds` output equals deploy/crds/<name>.yaml (else: scripts/gen-deploy.sh).
#   2. Charts and plain manifests equal what deploy/gen/generate.py produces from their sources (the
#      manifests are rendered by real `helm template`).
#   3. Chart tests (deploy/gen/test_*.py), with real Helm: `helm lint --strict`, every chart rendered
#      with each values switch — hardened pod, probes, flags, least-privilege RBAC per issuer, bad
#      values — and every rendered object validated against the Kubernetes OpenAPI schemas.
#   4. Controller audit (deploy/gen/controller_audit.py): the example controller runs with the rendered
#      Deployment's arguments against kube-sim through a recording proxy, issues a CertificateRequest
#      per issuer kind and a Kubernetes CSR; every API call it made must be allowed by the chart's RBAC.
#      Also with kubernetesCSRs off, and with namespacedIssuers off (least-privilege Secret access).
#   5. Monitoring (deploy/gen/test_monitoring.py, with Debian's prometheus package): promtool check
#      and unit tests of every chart's alerts, and a live Prometheus scraping the example controller
#      that must fire CertbridgeIssuerNotReady and answer every dashboard query.
#   6. `helm package` of every chart into $CERTBRIDGE_CHARTS_OUT (default .work/charts): the
#      packages CI publishes (`helm install NAME .work/charts/certbridge-<name>-<version>.tgz`).
#
# Installs Helm (scripts/tools/install-helm.sh) into .work/, Prometheus and promtool
# (scripts/tools/install-prometheus.sh, Debian's package) and PyYAML + kubernetes-validate into
# .work/deploy-venv when missing. Uses $CARGO_TARGET_DIR.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
say() { printf '\n==> deploy: %s\n' "$*"; }
py="$(deploy/gen/python.sh)"
CERTBRIDGE_HELM="${CERTBRIDGE_HELM:-$(scripts/tools/install-helm.sh)}"
export CERTBRIDGE_HELM
prometheus="$(scripts/tools/install-prometheus.sh)"
export CERTBRIDGE_PROMETHEUS="$prometheus" CERTBRIDGE_PROMTOOL="$(dirname "$prometheus")/promtool"
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
"$py" -m unittest discover -s deploy/gen -p 'test_charts.py'

# --- 4. controller audit ----------------------------------------------------------------------------
say "controller audit: every API call the example controller makes is allowed by the chart's RBAC"
"$py" deploy/gen/controller_audit.py --target-dir "$target"
say "controller audit with kubernetesCSRs.enabled=false"
"$py" deploy/gen/controller_audit.py --target-dir "$target" --no-csrs
say "controller audit with namespacedIssuers.enabled=false (Secrets readable only in the cluster resource namespace)"
"$py" deploy/gen/controller_audit.py --target-dir "$target" --no-namespaced-issuers

# --- 5. monitoring ------------------------------------------------------------------------------------
say "monitoring: promtool check/test rules, live Prometheus against the example controller (deploy/gen/test_monitoring.py)"
CERTBRIDGE_TARGET_DIR="$target" "$py" -m unittest discover -s deploy/gen -p 'test_monitoring.py'

# --- 6. packaged charts ------------------------------------------------------------------------------
out="${CERTBRIDGE_CHARTS_OUT:-$repo/.work/charts}"
say "helm package every chart into $out"
mkdir -p "$out"
"$py" -c '
import sys
sys.path.insert(0, "deploy/gen")
import helm
with helm.ChartSet() as charts:
    for chart in charts.issuer_charts():
        print(charts.package(chart, sys.argv[1]))' "$out"
say "all deploy checks passed"
