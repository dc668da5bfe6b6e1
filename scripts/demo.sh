#!/usr/bin/env bash
# certbridge demo: a throw-away API server, the cert-manager CRDs, a certbridge issuer controller,
# and one certificate signed end to end. Explains each step; stops everything it started on exit.
#
#   ./scripts/demo.sh                    # sign with a CA key inside a SoftHSM2 token (the PKCS#11 issuer)
#   ./scripts/demo.sh --issuer example   # sign with the LocalCA example issuer (CA key in a Secret)
#
# Needs: the Rust toolchain, kubectl and openssl; softhsm2 is installed by softhsm/setup-token.sh
# when missing (as root), like ./scripts/test.sh does.
# Files are left in .work/demo/ for inspection.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

issuer=pkcs11
while (($#)); do
    case "$1" in
        --issuer) issuer="${2:?--issuer needs a value: pkcs11 or example}"; shift 2 ;;
        --issuer=*) issuer="${1#--issuer=}"; shift ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$issuer" in
    pkcs11) controller=certbridge-pkcs11 kind=Pkcs11Issuer group=pkcs11.certbridge.io ;;
    example) controller=certbridge-example-ca kind=LocalCAIssuer group=example.certbridge.io ;;
    *) echo "unknown issuer \"$issuer\": use --issuer pkcs11 or --issuer example" >&2; exit 2 ;;
esac

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf '\033[31mdemo failed: %s\033[0m\n' "$*" >&2; exit 1; }

for tool in cargo kubectl openssl base64; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (./scripts/test.sh installs openssl; kubectl must be on PATH)"
done

started=$(date +%s)
work="$repo/.work/demo"
rm -rf "$work"
mkdir -p "$work"
pids=()
cleanup() {
    local rc=$?
    if ((${#pids[@]})); then
        step "stopping what the demo started (pids ${pids[*]})"
        for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
        for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    fi
    if ((rc != 0)); then
        echo "logs: $work/kube-sim.log $work/controller.log" >&2
        [[ -f $work/controller.log ]] && tail -n 20 "$work/controller.log" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

# --- 1. build ---------------------------------------------------------------------------------------
step "1/9 building kube-sim (the embedded Kubernetes API server) and the $controller controller"
bins=(--bin kube-sim --bin "$controller")
[[ $issuer == pkcs11 ]] && bins+=(--bin certbridge-pkcs11-token)
cargo build "${bins[@]}"
target="${CARGO_TARGET_DIR:-target}"
[[ $target = /* ]] || target="$repo/$target"
bin="$target/debug"
note "binaries: $bin/kube-sim, $bin/$controller"
build_done=$(date +%s)

# --- 2. API server ----------------------------------------------------------------------------------
step "2/9 starting kube-sim on 127.0.0.1 (a free port) over HTTPS with a throwaway CA, writing a kubeconfig for kubectl and the controller"
export KUBECONFIG="$work/kubeconfig"
"$bin/kube-sim" --addr 127.0.0.1:0 --tls --kubeconfig-out "$KUBECONFIG" >"$work/kube-sim.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    [[ -s $KUBECONFIG ]] && kubectl get --raw /version >/dev/null 2>&1 && break
    kill -0 "${pids[0]}" 2>/dev/null || die "kube-sim exited: $(cat "$work/kube-sim.log")"
    sleep 0.1
done
kubectl get --raw /version >/dev/null || die "kube-sim did not become ready"
note "$(head -n 1 "$work/kube-sim.log")"
note "KUBECONFIG=$KUBECONFIG"

# --- 3. CRDs ----------------------------------------------------------------------------------------
step "3/9 installing the cert-manager CRDs and the issuer's CRDs ($controller crds | kubectl apply)"
kubectl apply -f framework/testkit/crds/cert-manager.io_certificaterequests.yaml
"$bin/$controller" crds >"$work/issuer-crds.yaml"
kubectl apply -f "$work/issuer-crds.yaml"
plural="$(tr '[:upper:]' '[:lower:]' <<<"$kind")s"
kubectl wait --for condition=established --timeout=30s crd/certificaterequests.cert-manager.io "crd/$plural.$group"
for ns in cert-manager demo; do
    kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
done

# --- 4. CA ------------------------------------------------------------------------------------------
if [[ $issuer == pkcs11 ]]; then
    step "4/9 creating a SoftHSM2 token whose CA key (ECDSA P-256) is generated inside it and never leaves it"
    note "softhsm/setup-token.sh: token 'demo' in $work/softhsm, a random user PIN, a self-signed CA certificate"
    CERTBRIDGE_PKCS11_TOKEN_BIN="$bin/certbridge-pkcs11-token" \
        softhsm/setup-token.sh "$work/softhsm" --label demo --pin "$(openssl rand -hex 8)" --kind p256 >/dev/null
    # shellcheck disable=SC1091 # written by setup-token.sh
    source "$work/softhsm/demo.env"
    export SOFTHSM2_CONF
    cp "$work/softhsm/demo-ca-p256.pem" "$work/ca.crt"
    note "CA certificate $work/ca.crt; the controller gets the PIN from Secret demo/hsm-pin"
    kubectl -n demo create secret generic hsm-pin --from-file=pin="$CERTBRIDGE_PKCS11_PIN_FILE"
    kubectl -n demo create secret generic hsm-ca --from-file=ca.crt="$work/ca.crt"
    # Namespaced issuers may use only the tokens the controller's token policy grants their namespace.
    printf 'grants:\n- namespaces: [demo]\n  token: {label: demo}\n' >"$work/token-policy.yaml"
    export CERTBRIDGE_PKCS11_TOKEN_POLICY="$work/token-policy.yaml"
    issuer_spec="module: $CERTBRIDGE_PKCS11_MODULE
  token: {label: demo}
  key: {label: ca-p256}
  pinSecretRef: {name: hsm-pin, key: pin}
  caChain: {secretRef: {name: hsm-ca, key: ca.crt}}
  policy: {allowedDnsDomains: [demo.example]}"
else
    step "4/9 creating a CA with openssl; its certificate and key go into a kubernetes.io/tls Secret"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/O=certbridge demo/CN=certbridge demo CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
    note "CA certificate $work/ca.crt, key $work/ca.key -> Secret demo/demo-ca"
    kubectl -n demo create secret tls demo-ca --cert "$work/ca.crt" --key "$work/ca.key"
    issuer_spec="secretName: demo-ca"
fi

# --- 5. controller ----------------------------------------------------------------------------------
step "5/9 starting the controller: $controller run (logs in $work/controller.log)"
"$bin/$controller" run >"$work/controller.log" 2>&1 &
pids+=($!)
note "controller pid ${pids[1]}, watching all namespaces"

# --- 6. issuer --------------------------------------------------------------------------------------
step "6/9 creating the $kind demo/demo-ca and waiting for the controller to check it (Ready=True)"
kubectl apply -f - <<YAML
apiVersion: $group/v1alpha1
kind: $kind
metadata:
  name: demo-ca
  namespace: demo
spec:
  $issuer_spec
YAML
kubectl -n demo wait --for condition=Ready --timeout=60s "$(tr '[:upper:]' '[:lower:]' <<<"$kind")/demo-ca"
kubectl -n demo get "$plural"
issuer_ref="{name: demo-ca, kind: $kind, group: $group}"

# --- 7. request -------------------------------------------------------------------------------------
step "7/9 generating a fresh key and CSR with openssl, and a CertificateRequest for it"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=web.demo.example" -addext "subjectAltName=DNS:web.demo.example,DNS:www.demo.example" \
    -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
note "private key $work/tls.key (never leaves this machine), CSR $work/tls.csr"
kubectl apply -f - <<YAML
apiVersion: cert-manager.io/v1
kind: CertificateRequest
metadata:
  name: web
  namespace: demo
spec:
  request: $(base64 -w0 "$work/tls.csr")
  issuerRef: $issuer_ref
  duration: 24h
  usages: [digital signature, key encipherment, server auth]
YAML
note "not approved yet, so the controller leaves it alone:"
kubectl -n demo get certificaterequest web

# --- 8. approve -------------------------------------------------------------------------------------
step "8/9 approving it the way 'cmctl approve' does: Approved=True on the status subresource"
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
kubectl -n demo patch certificaterequest web --subresource=status --type=merge -p "$(cat <<JSON
{"status":{"conditions":[{"type":"Approved","status":"True","reason":"KubectlCertManager",
 "message":"manually approved by cmctl","lastTransitionTime":"$now"}]}}
JSON
)"
note "waiting for the controller to sign it (Ready=True)"
kubectl -n demo wait --for condition=Ready --timeout=60s certificaterequest/web
kubectl -n demo get certificaterequest web

# --- 9. result --------------------------------------------------------------------------------------
step "9/9 the issued certificate"
kubectl -n demo get certificaterequest web -o jsonpath='{.status.certificate}' | base64 -d >"$work/tls.crt"
kubectl -n demo get certificaterequest web -o jsonpath='{.status.ca}' | base64 -d >"$work/ca-from-status.crt"
openssl x509 -in "$work/tls.crt" -noout -subject -issuer -dates -serial \
    -ext subjectAltName,keyUsage,extendedKeyUsage | sed 's/^/    /'
openssl verify -CAfile "$work/ca-from-status.crt" "$work/tls.crt" | sed 's/^/    /'
[[ "$(openssl x509 -in "$work/tls.crt" -noout -pubkey)" == "$(openssl pkey -in "$work/tls.key" -pubout)" ]] ||
    die "the certificate does not carry the CSR's key"
note "the certificate carries the public key of $work/tls.key"
echo
note "files in $work:"
note "  tls.crt            the signed chain (status.certificate)"
note "  tls.key, tls.csr   the key and CSR made in step 7"
note "  ca-from-status.crt the CA (status.ca)"
note "  ca.crt             the issuing CA's certificate"
[[ $issuer == pkcs11 ]] && note "  softhsm/           the SoftHSM2 token holding the CA key (SOFTHSM2_CONF=$work/softhsm/softhsm2.conf)"
note "  kubeconfig, kube-sim.log, controller.log"
note "took $(($(date +%s) - build_done))s after the build ($(($(date +%s) - started))s in all)"
