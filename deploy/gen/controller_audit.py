#!/usr/bin/env python3
"""Runs a real certbridge controller the way the chart deploys it and checks that the chart's RBAC
allows every Kubernetes API call it makes.

  1. starts the embedded API server (kube-sim) with cert-manager's CRDs and every committed certbridge
     CRD (deploy/crds/, so each must be accepted), creates a CA Secret, a LocalCAIssuer and a LocalCAClusterIssuer;
  2. renders the certbridge-example-ca chart with real Helm (2 replicas, so leader election is on) and starts
     `certbridge-example-ca` with exactly the Deployment's arguments and environment (only the listen
     addresses move to free loopback ports), talking to the API server through a recording proxy;
  3. issues a CertificateRequest through each issuer kind and a Kubernetes CSR through the cluster
     issuer, checks /healthz, /readyz and /metrics on the ports the chart's probes and Service use
     (/metrics over HTTPS, as the chart serves it by default: no token → 401, a tenant's genuine
     ServiceAccount token → 403, Prometheus' token, bound to the chart's metrics-reader ClusterRole
     through metrics.readers and applied to the API server → 200; the controller's TokenReview and
     SubjectAccessReview calls go through the recording proxy like every other call), and stops the
     controller with SIGTERM (it must exit 0); with --no-namespaced-issuers the request naming the
     LocalCAIssuer must stay untouched and the issuer unreconciled instead;
  4. maps every recorded request to its RBAC attributes (plus the `sign` check Kubernetes makes when a
     CSR's certificate is written) and fails if the rendered RBAC does not allow one of them, and
     fails if the rendered RBAC grants the controller something no recorded call used, unless that
     grant is listed in UNEXERCISED with the code path that needs it.

Usage: controller_audit.py --target-dir DIR [--no-csrs] [--no-namespaced-issuers]
       (binaries kube-sim and certbridge-example-ca in DIR/debug)
"""

from __future__ import annotations

import argparse
import base64
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate  # noqa: E402
import helm  # noqa: E402
import rbac  # noqa: E402

REPO = os.path.dirname(generate.DEPLOY)
ISSUER = "example-ca"
RELEASE = "certbridge-example-ca"
NAMESPACE = "certbridge"
GROUP = "example.certbridge.io"
SIGNER = f"localcaclusterissuers.{GROUP}/ca"
# Values the chart is rendered with: 2 replicas turn leader election on. --no-csrs also turns
# Kubernetes CSR support off, and then the controller must not touch CSRs at all;
# --no-namespaced-issuers turns the namespaced kind off, and then the controller must not touch it,
# nor Secrets/ConfigMaps outside the cluster resource namespace (the rendered RBAC no longer allows it).
OVERRIDES: dict = {
    "replicaCount": 2,
    "metrics": {"readers": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}]},
}
# Grants the controller holds that this scenario does not exercise, each with the code path that
# needs it. Any other grant no recorded call used fails the audit: the chart grants nothing more
# than the controller uses.
UNEXERCISED: dict[str, str] = {
    "get cert-manager.io/certificaterequests (cluster-wide)":
        "a request cached before approval lost its CSR to pruning and is read afresh (framework/src/controllers/request/controller.rs)",
    "get certificates.k8s.io/certificatesigningrequests (cluster-wide)":
        "the same fresh read for a Kubernetes CSR cached before approval (framework/src/controllers/request/controller.rs)",
    "patch cert-manager.io/certificaterequests (cluster-wide)":
        "per-request state annotations state.<group>/… (framework/src/controllers/state.rs), written by asynchronous adapters "
        "(EJBCA, AD CS, Venafi; the example signs at once), and the <group>/revoke-on-delete finalizer "
        "(controllers/request/revoke.rs) on a request annotated for it (the audit's requests are not)",
    "patch certificates.k8s.io/certificatesigningrequests (cluster-wide)":
        "the same per-request state annotations and revoke-on-delete finalizer on Kubernetes CSRs",
    "patch events.k8s.io/events (cluster-wide)":
        "kube's Recorder patches the Event it created when the same event repeats (series count)",
    "get core/configmaps (cluster-wide)":
        "a namespaced issuer's ConfigMap reference (caBundle.configMapRef, Resources::config_map_pem via "
        "resources/api_source.rs); the example issuer references none",
    "get core/configmaps in cert-manager": "the same for a cluster issuer's ConfigMap reference",
}
WAIT = 90.0  # seconds before a step is declared hung (a hang guard, not a speed assertion)

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class Failure(Exception):
    pass


def render() -> list[helm.Document]:
    """The example chart as real `helm template` renders it with OVERRIDES."""
    with helm.ChartSet() as charts:
        return charts.render(RELEASE, RELEASE, NAMESPACE, OVERRIDES)


# --- the recording proxy ------------------------------------------------------------------------------


class RecordingProxy(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        u = urlsplit(upstream)
        self.upstream_host, self.upstream_port = u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80)
        self.upstream_tls = ssl_context if u.scheme == "https" else None
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def connect(self) -> http.client.HTTPConnection:
        if self.upstream_tls:
            return http.client.HTTPSConnection(self.upstream_host, self.upstream_port, context=self.upstream_tls)
        return http.client.HTTPConnection(self.upstream_host, self.upstream_port)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingProxy

    def log_message(self, *_: object) -> None:  # the recording is the log
        pass

    def _forward(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.command, self.path))
        body = None
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if not size:
                    break
                chunks.append(chunk)
            body = b"".join(chunks)
        elif self.headers.get("Content-Length"):
            body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        conn = self.server.connect()
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            self.send_response_only(resp.status, resp.reason)
            length = resp.getheader("Content-Length")
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            if length is not None:
                self.send_header("Content-Length", length)
                self.end_headers()
                self.wfile.write(resp.read())
            else:  # streamed (watch): re-chunk as it arrives
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while data := resp.read1(65536):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, http.client.HTTPException, OSError):
            self.close_connection = True
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward


# --- helpers -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float = WAIT, logs: str | None = None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - keep polling; report the last error on timeout
            last = e
        time.sleep(0.3)
    tail = ""
    if logs and os.path.exists(logs):
        with open(logs, encoding="utf-8", errors="replace") as f:
            tail = "\n--- controller log (tail) ---\n" + "".join(f.readlines()[-40:])
    raise Failure(f"timed out waiting for {what}" + (f" (last error: {last})" if last else "") + tail)


class Cluster:
    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        p = subprocess.run(["kubectl", "--kubeconfig", self.kubeconfig, *args], input=stdin,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        if p.returncode:
            raise Failure(f"kubectl {' '.join(args)} failed: {p.stderr.strip()}")
        return p.stdout

    def apply(self, obj: dict | str) -> None:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        self.kubectl("apply", "--server-side", "--field-manager=audit", "-f", "-", stdin=text)

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", "-o", "json", *args))


def ready(obj: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in obj.get("status", {}).get("conditions", []))


def openssl(*args: str, cwd: str) -> None:
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if p.returncode:
        raise Failure(f"openssl {' '.join(args)} failed: {p.stderr.strip()}")


# --- the scenario -------------------------------------------------------------------------------------


def run(target_dir: str, csrs: bool, namespaced: bool) -> list[tuple[str, str]]:
    kube_sim = os.path.join(target_dir, "debug", "kube-sim")
    controller = os.path.join(target_dir, "debug", "certbridge-example-ca")
    for b in (kube_sim, controller):
        if not os.access(b, os.X_OK):
            raise Failure(f"{b} is missing: build it (deploy/check.sh runs cargo build for it)")
    for tool in ("kubectl", "openssl"):
        if not shutil.which(tool):
            raise Failure(f"{tool} is missing: run scripts/test.sh, which installs what the tests need")

    docs = render()
    deployment = next(d.obj for d in docs if d.kind == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe_port = container["livenessProbe"]["httpGet"]["port"]
    metrics_service = next(d.obj for d in docs if d.kind == "Service")
    metrics_port = metrics_service["spec"]["ports"][0]["targetPort"]

    procs: list[subprocess.Popen] = []
    proxy: RecordingProxy | None = None
    with tempfile.TemporaryDirectory(prefix="certbridge-audit-") as work:
        try:
            admin = os.path.join(work, "admin.kubeconfig")
            sim = subprocess.Popen(
                [kube_sim, "--addr", "127.0.0.1:0", "--kubeconfig-out", admin, "--cert-manager-crds",
                 # every committed CRD must be accepted by the API server
                 "--crds", os.path.join(generate.DEPLOY, "crds")],
                stdout=subprocess.PIPE, stderr=open(os.path.join(work, "kube-sim.log"), "w"), text=True,
            )  # fmt: skip
            procs.append(sim)
            # kube-sim prints its address once the kubeconfig is written and it serves.
            line = sim.stdout.readline() if sim.stdout else ""
            if "listening" not in line:
                raise Failure(f"kube-sim did not start (printed {line!r}); see its log in {work}")
            with open(admin, encoding="utf-8") as f:
                kc = yaml.safe_load(f)
            cluster = kc["clusters"][0]["cluster"]
            ctx = None
            if cluster["server"].startswith("https"):
                ctx = ssl.create_default_context()
                if cluster.get("certificate-authority-data"):
                    ctx.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
                elif cluster.get("insecure-skip-tls-verify"):
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
            proxy = RecordingProxy(cluster["server"], ctx)
            threading.Thread(target=proxy.serve_forever, daemon=True).start()
            # The controller's kubeconfig: same credentials, through the proxy.
            ckc = json.loads(json.dumps(kc))
            ckc["clusters"][0]["cluster"] = {"server": proxy.url}
            controller_kc = os.path.join(work, "controller.kubeconfig")
            with open(controller_kc, "w", encoding="utf-8") as f:
                yaml.safe_dump(ckc, f)

            k = Cluster(admin)
            wait_for("the API server", lambda: k.kubectl("get", "namespaces") is not None)
            for ns in (NAMESPACE, "cert-manager", "team-a"):
                k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=audit CA",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                    cwd=work)  # fmt: skip
            tls = {}
            for key, fname in (("tls.crt", "ca.crt"), ("tls.key", "ca.key")):
                with open(os.path.join(work, fname), "rb") as f:
                    tls[key] = base64.b64encode(f.read()).decode()
            for ns in ("team-a", "cert-manager"):
                k.apply({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                         "metadata": {"name": "ca", "namespace": ns}, "data": tls})  # fmt: skip
            k.apply({"apiVersion": f"{GROUP}/v1alpha1", "kind": "LocalCAIssuer",
                     "metadata": {"name": "ca", "namespace": "team-a"}, "spec": {"secretName": "ca"}})  # fmt: skip
            k.apply({"apiVersion": f"{GROUP}/v1alpha1", "kind": "LocalCAClusterIssuer",
                     "metadata": {"name": "ca"}, "spec": {"secretName": "ca"}})  # fmt: skip

            # The controller, exactly as the Deployment runs it.
            health, metrics = free_port(), free_port()
            args = []
            for a in container["args"]:
                if a.startswith("--health-addr="):
                    a = f"--health-addr=127.0.0.1:{health}"
                elif a.startswith("--metrics-addr="):
                    a = f"--metrics-addr=127.0.0.1:{metrics}"
                args.append(a)
            env = {"PATH": os.environ.get("PATH", ""), "KUBECONFIG": controller_kc}
            for e in container["env"]:
                if "value" in e:
                    env[e["name"]] = e["value"]
                elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                    env[e["name"]] = NAMESPACE
                else:
                    raise Failure(f"env {e['name']}: the audit cannot reproduce {e}")
            log = os.path.join(work, "controller.log")
            ctrl = subprocess.Popen([controller, *args], env=env, stdout=open(log, "w"),
                                    stderr=subprocess.STDOUT)  # fmt: skip
            procs.append(ctrl)
            for kind in ("localcaissuer/ca -n team-a", "localcaclusterissuer/ca")[0 if namespaced else 1 :]:
                wait_for(f"{kind} Ready", lambda kind=kind: ready(k.get(*kind.split())), logs=log)

            # Probes and metrics on the ports the chart wires (health → probes, metrics → Service).
            assert probe_port == "health" and metrics_port == "metrics" and set(ports) == {"health", "metrics"}
            wait_for("/healthz = 200", lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{health}/healthz", timeout=5).status == 200, logs=log)  # fmt: skip

            # A CertificateRequest through each kind, approved the way cmctl does.
            for name, kind in (("via-issuer", "LocalCAIssuer"), ("via-cluster-issuer", "LocalCAClusterIssuer")):
                openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}.example.com",
                        "-addext", f"subjectAltName=DNS:{name}.example.com", cwd=work)  # fmt: skip
                with open(os.path.join(work, f"{name}.csr"), "rb") as f:
                    csr = base64.b64encode(f.read()).decode()
                k.apply({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
                         "metadata": {"name": name, "namespace": "team-a"},
                         "spec": {"request": csr, "duration": "24h", "usages": ["digital signature", "server auth"],
                                  "issuerRef": {"group": GROUP, "kind": kind, "name": "ca"}}})  # fmt: skip
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                k.kubectl("patch", "certificaterequest", name, "-n", "team-a", "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": {"conditions": [{"type": "Approved", "status": "True",
                          "reason": "cmctl", "message": "approved by the audit", "lastTransitionTime": now}]}}))  # fmt: skip
                if kind == "LocalCAIssuer" and not namespaced:
                    continue  # addressed to a disabled kind: checked below, once the next one is issued
                cr = wait_for(f"CertificateRequest {name} Ready",
                              lambda n=name: (lambda o: o if ready(o) else None)(k.get("certificaterequest", n, "-n", "team-a")),
                              logs=log)  # fmt: skip
                if "BEGIN CERTIFICATE" not in base64.b64decode(cr["status"].get("certificate", "")).decode():
                    raise Failure(f"CertificateRequest {name} is Ready without a certificate")

            if not namespaced:
                # The cluster issuer's request, approved after it, is issued: this one was seen too.
                cr = k.get("certificaterequest", "via-issuer", "-n", "team-a")
                types = [c.get("type") for c in cr.get("status", {}).get("conditions", [])]
                if types != ["Approved"] or cr["status"].get("certificate"):
                    raise Failure("namespaced issuers are disabled, yet the controller wrote the status of a request "
                                  f"naming LocalCAIssuer (conditions {types}, certificate set: {'certificate' in cr['status']})")
                issuer = k.get("localcaissuer", "ca", "-n", "team-a")
                if issuer.get("status"):
                    raise Failure(f"namespaced issuers are disabled, yet LocalCAIssuer got {issuer['status']}")

            # A Kubernetes CSR through the cluster issuer.
            if not csrs:
                check_metrics(k, docs, metrics, log)
                return finish(ctrl, log, proxy)
            openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", "kcsr.key", "-out", "kcsr.csr", "-subj", "/CN=kube-csr.example.com", cwd=work)  # fmt: skip
            with open(os.path.join(work, "kcsr.csr"), "rb") as f:
                req = base64.b64encode(f.read()).decode()
            k.apply({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                     "metadata": {"name": "audit-csr"},
                     "spec": {"request": req, "signerName": SIGNER, "expirationSeconds": 86400,
                              "usages": ["digital signature", "key encipherment", "server auth"]}})  # fmt: skip
            k.kubectl("certificate", "approve", "audit-csr")
            wait_for("CSR audit-csr certificate", lambda: k.get("csr", "audit-csr").get("status", {}).get("certificate"),
                     logs=log)  # fmt: skip

            # Ready: by now every cache has synced (it has signed through both kinds).
            wait_for("/readyz = 200", lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{health}/readyz", timeout=5).status == 200, logs=log)  # fmt: skip
            check_metrics(k, docs, metrics, log)
            return finish(ctrl, log, proxy)
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if proxy:
                proxy.shutdown()
                proxy.server_close()


def scrape(port: int, token: str | None) -> tuple[int, str]:
    """GET /metrics over HTTPS (the serving certificate is self-signed: not verified, as the
    chart's ServiceMonitor does by default); (status, body)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(f"https://127.0.0.1:{port}/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def metrics_readers(k: Cluster, docs: list[helm.Document]) -> str:
    """Applies the chart's metrics-reader ClusterRole and its binding (metrics.readers) to the API
    server, creates Prometheus' and a tenant's ServiceAccounts; returns Prometheus' token."""
    for d in docs:
        if d.kind in ("ClusterRole", "ClusterRoleBinding") and d.name.endswith("-metrics-reader"):
            k.apply(d.obj)
    k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "monitoring"}})
    for ns, name in (("monitoring", "prometheus"), ("team-a", "tenant")):
        k.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}})
    return k.kubectl("create", "token", "prometheus", "-n", "monitoring").strip()


def check_metrics(k: Cluster, docs: list[helm.Document], port: int, log: str) -> None:
    """/metrics is HTTPS and answers only a token allowed to get it (TokenReview + SubjectAccessReview)."""
    prometheus = metrics_readers(k, docs)
    tenant = k.kubectl("create", "token", "tenant", "-n", "team-a").strip()
    status, body = wait_for("/metrics over HTTPS", lambda: (lambda r: r if r[0] else None)(scrape(port, None)), logs=log)
    if status != 401:
        raise Failure(f"/metrics without a token answered {status}, not 401: {body[:200]}")
    status, body = scrape(port, tenant)
    if status != 403 or "system:serviceaccount:team-a:tenant" not in body:
        raise Failure(f"/metrics with a tenant's token answered {status}, not 403: {body[:200]}")
    status, body = scrape(port, prometheus)
    if status != 200 or "certbridge_" not in body:
        raise Failure(f"/metrics with Prometheus' token (metrics-reader bound) answered {status}: {body[:300]}")


def finish(ctrl: subprocess.Popen, log: str, proxy: RecordingProxy) -> list[tuple[str, str]]:
    """Stops the controller with SIGTERM (it must exit 0) and returns what it asked the API server."""
    ctrl.send_signal(signal.SIGTERM)
    try:
        code = ctrl.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        raise Failure("the controller did not exit after SIGTERM") from None
    if code != 0:
        with open(log, encoding="utf-8", errors="replace") as f:
            raise Failure(f"the controller exited {code} after SIGTERM:\n" + "".join(f.readlines()[-30:]))
    with proxy.lock:
        return list(proxy.requests)


def audit(requests: list[tuple[str, str]], csrs: bool, namespaced: bool) -> int:
    docs = render()
    sa = next(d.obj for d in docs if d.kind == "ServiceAccount")["metadata"]["name"]
    authz = rbac.Authorizer([d.obj for d in docs], NAMESPACE, sa)
    used: dict[str, rbac.Attributes] = {}
    for method, path in requests:
        a = rbac.request_attributes(method, path)
        if a is None:
            continue
        if a.group == "certificates.k8s.io" and a.resource == "certificatesigningrequests/status" and a.verb in ("update", "patch"):
            # Kubernetes also requires `sign` on the CSR's signer to set status.certificate.
            implied = rbac.Attributes("sign", "certificates.k8s.io", "signers", "", SIGNER)
            used[str(implied)] = implied
        shape = rbac.Attributes(a.verb, a.group, a.resource, a.namespace, "" if a.resource != "signers" else a.name)
        used[str(shape)] = a
    denied = [key for key, a in sorted(used.items()) if not authz.allows(a)]
    for key in sorted(used):
        print(f"  {'DENIED ' if key in denied else 'allowed'}  {key}")
    expected = [
        "watch cert-manager.io/certificaterequests (cluster-wide)",
        "patch cert-manager.io/certificaterequests/status in team-a",
        f"patch {GROUP}/localcaclusterissuers/status (cluster-wide)",
        "watch core/secrets in cert-manager",
    ]
    if csrs:
        expected.append(f"sign certificates.k8s.io/signers {SIGNER} (cluster-wide)")
    elif any(a.group == "certificates.k8s.io" for a in used.values()):
        print("Kubernetes CSR support is off, yet the controller called the certificates.k8s.io API", file=sys.stderr)
        return 1
    if not namespaced and any(a.resource.startswith("localcaissuers") for a in used.values()):
        print("namespaced issuers are off, yet the controller called the LocalCAIssuer API", file=sys.stderr)
        return 1
    # HTTPS /metrics (the chart's default): every scrape's token is reviewed.
    expected += ["create authentication.k8s.io/tokenreviews (cluster-wide)",
                 "create authorization.k8s.io/subjectaccessreviews (cluster-wide)"]  # fmt: skip
    missing = [e for e in expected if e not in used]
    if missing:
        print(f"the recording lacks calls every run makes ({missing}): the audit saw too little to judge", file=sys.stderr)
        return 1
    if denied:
        print(f"\n{len(denied)} API call(s) the controller makes are not allowed by the chart's RBAC: add them to "
              "deploy/charts/certbridge-common/templates/_rbac.tpl and the RBAC table in deploy/README.md", file=sys.stderr)  # fmt: skip
        return 1
    print(f"all {len(used)} kinds of API call the controller made are allowed by the chart's RBAC")
    # Nothing more: every grant was used by some call, or is listed with the code path needing it.
    unused = authz.unused(list(used.values()))
    unexplained = [g for g in unused if g not in UNEXERCISED]
    for g in unused:
        print(f"  {'UNUSED ' if g in unexplained else 'listed '}  {g}" + (f"  ({UNEXERCISED[g]})" if g in UNEXERCISED else ""))
    if unexplained:
        print(f"\n{len(unexplained)} grant(s) of the chart were used by no call of the controller: drop them from "
              "deploy/charts/certbridge-common/templates/_rbac.tpl, or list them in UNEXERCISED "
              "(deploy/gen/controller_audit.py) with the code path that needs them", file=sys.stderr)  # fmt: skip
        return 1
    print(f"every grant of the chart was used, or is listed with its reason ({len(unused)} listed)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")))
    ap.add_argument("--no-csrs", action="store_true", help="render with kubernetesCSRs.enabled=false")
    ap.add_argument("--no-namespaced-issuers", action="store_true", help="render with namespacedIssuers.enabled=false")
    args = ap.parse_args()
    if args.no_csrs:
        OVERRIDES["kubernetesCSRs"] = {"enabled": False}
    if args.no_namespaced_issuers:
        OVERRIDES["namespacedIssuers"] = {"enabled": False}
    csrs, namespaced = not args.no_csrs, not args.no_namespaced_issuers
    try:
        requests = run(args.target_dir, csrs, namespaced)
    except Failure as e:
        print(f"controller audit failed: {e}", file=sys.stderr)
        return 1
    return audit(requests, csrs, namespaced)


if __name__ == "__main__":
    sys.exit(main())
