#!/usr/bin/env bash
# Creates a SoftHSM2 token in DIR (its own SOFTHSM2_CONF, no global state), CA keys generated
# inside it (RSA-2048, P-256, P-384, Ed25519 — or the --kind list), and self-signed CA
# certificates signed by those keys through PKCS#11. Idempotent: a second run reuses the token,
# keys and certificates.
#
#   softhsm/setup-token.sh DIR [--label L] [--pin P] [--so-pin S] [--kind K]...
#
# Writes DIR/softhsm2.conf, DIR/tokens/, DIR/<L>.pin (mode 600), DIR/<L>-ca-<kind>.pem and
# DIR/<L>.env (shell exports), and prints the exports.
#
# The certificates are made by `certbridge-pkcs11-token` (this repository's crate). Set
# CERTBRIDGE_PKCS11_TOKEN_BIN to a built binary (tests pass theirs); otherwise it is built with cargo.
set -euo pipefail

usage() { echo "usage: $0 DIR [--label L] [--pin P] [--so-pin S] [--kind rsa2048|rsa3072|rsa4096|p256|p384|ed25519]..." >&2; exit 2; }
[ $# -ge 1 ] || usage
DIR=$1; shift
LABEL=certbridge PIN=1234 SO_PIN=5678 KINDS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --label) LABEL=${2:?}; shift 2 ;;
    --pin) PIN=${2:?}; shift 2 ;;
    --so-pin) SO_PIN=${2:?}; shift 2 ;;
    --kind) KINDS+=("--kind" "${2:?}"); shift 2 ;;
    *) usage ;;
  esac
done
MODULE=/usr/lib/softhsm/libsofthsm2.so
REPO=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v softhsm2-util >/dev/null 2>&1 || [ ! -e "$MODULE" ]; then
  echo "installing softhsm2 from Debian…" >&2
  if [ "$(id -u)" -ne 0 ]; then echo "softhsm2 is missing and this is not root: run 'apt-get install -y softhsm2' as root" >&2; exit 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >&2
fi

mkdir -p "$DIR/tokens"
DIR=$(cd "$DIR" && pwd)
CONF=$DIR/softhsm2.conf
if [ ! -f "$CONF" ]; then
  cat > "$CONF" <<EOF
directories.tokendir = $DIR/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
fi
export SOFTHSM2_CONF=$CONF

if ! softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]+$LABEL[[:space:]]*$"; then
  softhsm2-util --init-token --free --label "$LABEL" --so-pin "$SO_PIN" --pin "$PIN" >/dev/null
fi
PIN_FILE=$DIR/$LABEL.pin
( umask 077; printf '%s' "$PIN" > "$PIN_FILE" )

TOOL=${CERTBRIDGE_PKCS11_TOKEN_BIN:-}
if [ -z "$TOOL" ]; then
  echo "building certbridge-pkcs11-token…" >&2
  (cd "$REPO" && cargo build -q --release -p certbridge-pkcs11 --bin certbridge-pkcs11-token >&2)
  TOOL=${CARGO_TARGET_DIR:-$REPO/target}/release/certbridge-pkcs11-token
fi
"$TOOL" init --module "$MODULE" --token-label "$LABEL" --pin-file "$PIN_FILE" --out "$DIR" ${KINDS[@]+"${KINDS[@]}"} >&2

ENV_FILE=$DIR/$LABEL.env
cat > "$ENV_FILE" <<EOF
export SOFTHSM2_CONF=$CONF
export CERTBRIDGE_PKCS11_MODULE=$MODULE
export CERTBRIDGE_PKCS11_TOKEN_LABEL=$LABEL
export CERTBRIDGE_PKCS11_PIN_FILE=$PIN_FILE
export CERTBRIDGE_PKCS11_CA_DIR=$DIR
EOF
cat "$ENV_FILE"
