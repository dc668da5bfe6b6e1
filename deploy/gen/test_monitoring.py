"""The charts' monitoring, tested with real Prometheus tools (Debian's `prometheus` package, installed
by scripts/tools/install-prometheus.sh):

* `promtool check rules` on every chart's rendered PrometheusRule;
* `promtool test rules` with deploy/gen/monitoring/alerts_test.yaml: every alert fires and resolves;
* end to end: the example controller runs as the chart deploys it against kube-sim, a real
  `prometheus` on loopback scrapes it the way the chart's ServiceMonitor does (HTTPS, its own
  ServiceAccount token, bound to the chart's metrics-reader ClusterRole; the controller checks it
  with TokenReview and SubjectAccessReview against kube-sim) and evaluates the chart's rules (with
  short `for:` values);
  breaking the issuer's CA Secret must take CertbridgeIssuerNotReady through pending to firing in
  Prometheus's HTTP API; an approved request for the broken issuer must show up in the
  unfinished-request and request-age gauges, and every PromQL expression of the dashboard must
  return series there.

Run by deploy/check.sh (binaries kube-sim and certbridge-example-ca from $CERTBRIDGE_TARGET_DIR/debug).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import controller_audit as audit  # noqa: E402
import generate  # noqa: E402
import helm  # noqa: E402

RELEASE = "certbridge-example-ca"
JOB = f"{RELEASE}-metrics"  # the metrics Service's name: the job a ServiceMonitor gives the target
HERE = os.path.dirname(os.path.abspath(__file__))
ISSUERS = generate.load_issuers()
CHARTS: helm.ChartSet | None = None


def setUpModule():
    global CHARTS
    CHARTS = helm.ChartSet()


def tearDownModule():
    if CHARTS:
        CHARTS.close()


def tool(name: str) -> str:
    path = os.environ.get(f"CERTBRIDGE_{name.upper()}") or shutil.which(name)
    if not path:
        path = subprocess.run([os.path.join(helm.REPO, "scripts", "tools", "install-prometheus.sh")],
                              check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
        path = os.path.join(os.path.dirname(path), name)
    return path


def render_monitoring(chart: str, overrides: dict | None = None) -> tuple[dict, dict]:
    """(the PrometheusRule's spec, the dashboard) of a chart rendered with both switched on."""
    values = {"prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}}
    values = _merge(values, overrides or {})
    # Release = chart name: the job is "<chart>-metrics", as in the plain manifests.
    docs = CHARTS.render(chart, chart, "certbridge", values)
    rule = next(d.obj for d in docs if d.kind == "PrometheusRule")
    cm = next(d.obj for d in docs if d.kind == "ConfigMap" and d.name.endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", "the Grafana sidecar label"
    (dashboard,) = (json.loads(v) for v in cm["data"].values())
    return rule["spec"], dashboard


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_rules(spec: dict, directory: str) -> str:
    path = os.path.join(directory, "rules.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": spec["groups"]}, f, sort_keys=False)
    return path


def promtool(*args: str, cwd: str) -> str:
    p = subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True)
    if p.returncode:
        raise AssertionError(f"promtool {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every panel target, and the job variable's query."""
    out = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for v in dashboard["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.+), *\w+\)", v.get("definition", ""))
        if m:
            out.append((f"variable {v['name']}", m.group(1)))
    return out


class Rules(unittest.TestCase):
    def test_promtool_check_rules_on_every_chart(self):
        for issuer in ISSUERS:
            with self.subTest(issuer=issuer["name"]), tempfile.TemporaryDirectory() as tmp:
                spec, _ = render_monitoring(f"certbridge-{issuer['name']}")
                write_rules(spec, tmp)
                out = promtool("check", "rules", "rules.yaml", cwd=tmp)
                self.assertIn("SUCCESS: 8 rules found", out)
                alerts = [r["alert"] for g in spec["groups"] for r in g["rules"]]
                for r in (r for g in spec["groups"] for r in g["rules"]):
                    self.assertIn(f"#{r['alert'].lower()}", r["annotations"]["runbook_url"])
                self.assertEqual(len(set(alerts)), 8)

    def test_every_alert_has_a_runbook_section_and_a_unit_test(self):
        spec, _ = render_monitoring(RELEASE)
        with open(os.path.join(generate.DEPLOY, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        with open(os.path.join(HERE, "monitoring", "alerts_test.yaml"), encoding="utf-8") as f:
            tests = yaml.safe_load(f)
        tested = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
        resolved = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"] if not t["exp_alerts"]}
        for r in (r for g in spec["groups"] for r in g["rules"]):
            self.assertIn(f"\n### {r['alert']}\n", readme, "a runbook section in deploy/README.md")
            self.assertIn(r["alert"], tested, "a unit test where it fires")
            self.assertIn(r["alert"], resolved, "a unit test where it does not (yet, or any more)")

    def test_promtool_unit_tests_fire_and_resolve_every_alert(self):
        spec, _ = render_monitoring(RELEASE)
        with tempfile.TemporaryDirectory() as tmp:
            write_rules(spec, tmp)
            shutil.copy(os.path.join(HERE, "monitoring", "alerts_test.yaml"), tmp)
            self.assertIn("SUCCESS", promtool("test", "rules", "alerts_test.yaml", cwd=tmp))

    def test_dashboard_queries_only_exported_metrics(self):
        _, dashboard = render_monitoring(RELEASE)
        # framework/src/metrics.rs, and Prometheus's own `up`.
        exported = {"certbridge_requests_total", "certbridge_sign_duration_seconds_bucket",
                    "certbridge_sign_duration_seconds_count", "certbridge_issuer_ready",
                    "certbridge_reconcile_errors_total", "certbridge_reconciles_in_flight",
                    "certbridge_requests_unfinished", "certbridge_request_oldest_unfinished_age_seconds",
                    "certbridge_leader", "up"}  # fmt: skip
        for title, expr in dashboard_queries(dashboard):
            names = set(re.findall(r"\b(certbridge_\w+|up)\b(?=\{|\[|\)|$)", expr))
            self.assertTrue(names, f"{title}: {expr}")
            self.assertLessEqual(names, exported, f"{title}: {expr}")


class LivePrometheus(unittest.TestCase):
    """A real controller, a real Prometheus, a broken issuer."""

    def test_issuer_not_ready_alert_and_dashboard_against_a_live_prometheus(self):
        target = os.environ.get("CERTBRIDGE_TARGET_DIR") or os.environ.get("CARGO_TARGET_DIR") or os.path.join(helm.REPO, "target")
        kube_sim, controller = (os.path.join(target, "debug", b) for b in ("kube-sim", "certbridge-example-ca"))
        for b in (kube_sim, controller):
            if not os.access(b, os.X_OK):
                self.fail(f"{b} is missing: cargo build -p certbridge-testkit --bin kube-sim -p certbridge-example-ca")
        started = time.monotonic()
        # Short windows so the alert goes pending → firing in seconds: evaluated every second.
        spec, dashboard = render_monitoring(RELEASE, {"prometheusRule": {"issuerNotReady": {"for": "3s"}}})
        readers = [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}]
        docs = CHARTS.render(RELEASE, RELEASE, "certbridge", {"metrics": {"readers": readers}})
        container = next(d.obj for d in docs if d.kind == "Deployment")["spec"]["template"]["spec"]["containers"][0]
        procs: list[subprocess.Popen] = []
        with tempfile.TemporaryDirectory(prefix="certbridge-prom-") as work:
            try:
                k, env = self.start_cluster(kube_sim, work, procs)
                for e in container.get("env", []):
                    ref = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                    env[e["name"]] = e["value"] if "value" in e else "certbridge" if ref == "metadata.namespace" else ""
                metrics = audit.free_port()
                args = [a for a in container["args"] if not a.startswith(("--health-addr=", "--metrics-addr="))]
                args += [f"--health-addr=127.0.0.1:{audit.free_port()}", f"--metrics-addr=127.0.0.1:{metrics}"]
                log = os.path.join(work, "controller.log")
                procs.append(subprocess.Popen([controller, *args], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT))
                self.assertNotIn("--metrics-insecure", args, "the chart serves HTTPS /metrics by default")
                token = os.path.join(work, "prometheus.token")
                with open(token, "w", encoding="utf-8") as f:
                    f.write(audit.metrics_readers(k, docs))
                prom = self.start_prometheus(work, metrics, spec, procs, token)

                audit.wait_for("LocalCAClusterIssuer ca Ready", lambda: audit.ready(k.get("localcaclusterissuer", "ca")), logs=log)
                self.issue(k, work, log)
                audit.wait_for("Prometheus to see the issuer Ready", lambda: query(prom, 'certbridge_issuer_ready{name="ca"} == 1'))
                self.assertEqual(alert_states(prom, "CertbridgeIssuerNotReady"), set())

                # Break the issuer: its CA Secret no longer holds a key.
                k.kubectl("patch", "secret", "ca", "-n", "cert-manager", "--type=merge",
                          "-p", json.dumps({"data": {"tls.key": base64.b64encode(b"not a key").decode()}}))  # fmt: skip
                audit.wait_for("the issuer to turn not Ready", lambda: not audit.ready(k.get("localcaclusterissuer", "ca")), logs=log)
                seen: set[str] = set()

                def firing() -> bool:
                    seen.update(alert_states(prom, "CertbridgeIssuerNotReady"))
                    return "firing" in seen

                audit.wait_for("CertbridgeIssuerNotReady to fire", firing)
                self.assertIn("pending", seen, "the alert waits for its `for:` before firing")
                alert = next(a for a in get(prom, "/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == "CertbridgeIssuerNotReady")
                self.assertEqual(alert["labels"]["name"], "ca")
                self.assertEqual(alert["labels"]["job"], JOB)

                # An approved request for the broken issuer stays unfinished: the request-age and
                # unfinished-request gauges get series (the panels' `or vector(0)` would hide their absence).
                self.request(k, work, "stuck")
                unfinished = f'certbridge_requests_unfinished{{job="{JOB}",issuer="ca",approved="true"}} == 1'
                audit.wait_for("Prometheus to see the unfinished request", lambda: query(prom, unfinished))
                self.assertTrue(query(prom, f'certbridge_request_oldest_unfinished_age_seconds{{job="{JOB}",issuer="ca",approved="true"}}'))
                self.assertTrue(query(prom, f'certbridge_leader{{job="{JOB}"}} == 1'), "runs without leader election: leads")
                self.assertTrue(query(prom, f'certbridge_reconciles_in_flight{{job="{JOB}"}}'))

                # Every dashboard query returns series from this controller.
                for title, expr in dashboard_queries(dashboard):
                    expr = expr.replace("$job", JOB).replace("$__rate_interval", "1m")
                    with self.subTest(panel=title):
                        self.assertTrue(query(prom, expr), f"{title}: {expr} returned no series")
            finally:
                for p in reversed(procs):
                    if p.poll() is None:
                        p.terminate()
                        try:
                            p.wait(timeout=10)
                        except subprocess.TimeoutExpired:
                            p.kill()
                            p.wait()
        print(f"\n  live Prometheus test: {time.monotonic() - started:.1f}s", file=sys.stderr)

    def start_cluster(self, kube_sim: str, work: str, procs: list) -> tuple[audit.Cluster, dict]:
        kubeconfig = os.path.join(work, "kubeconfig")
        sim = subprocess.Popen([kube_sim, "--addr", "127.0.0.1:0", "--kubeconfig-out", kubeconfig, "--cert-manager-crds",
                                "--crds", os.path.join(generate.DEPLOY, "crds", "example-ca.yaml")],
                               stdout=subprocess.PIPE, stderr=open(os.path.join(work, "kube-sim.log"), "w"), text=True)  # fmt: skip
        procs.append(sim)
        line = sim.stdout.readline() if sim.stdout else ""
        self.assertIn("listening", line)
        k = audit.Cluster(kubeconfig)
        for ns in ("certbridge", "cert-manager", "team-a"):
            k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        audit.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=monitoring CA",
                      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                      cwd=work)  # fmt: skip
        tls = {}
        for key, fname in (("tls.crt", "ca.crt"), ("tls.key", "ca.key")):
            with open(os.path.join(work, fname), "rb") as f:
                tls[key] = base64.b64encode(f.read()).decode()
        k.apply({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                 "metadata": {"name": "ca", "namespace": "cert-manager"}, "data": tls})  # fmt: skip
        k.apply({"apiVersion": f"{audit.GROUP}/v1alpha1", "kind": "LocalCAClusterIssuer",
                 "metadata": {"name": "ca"}, "spec": {"secretName": "ca"}})  # fmt: skip
        return k, {"PATH": os.environ.get("PATH", ""), "KUBECONFIG": kubeconfig}

    def issue(self, k: audit.Cluster, work: str, log: str) -> None:
        self.request(k, work, "web")
        audit.wait_for("CertificateRequest web Ready", lambda: audit.ready(k.get("certificaterequest", "web", "-n", "team-a")), logs=log)

    def request(self, k: audit.Cluster, work: str, name: str) -> None:
        """An approved CertificateRequest `name` in team-a for LocalCAClusterIssuer ca."""
        audit.openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}.example.com",
                      "-addext", f"subjectAltName=DNS:{name}.example.com", cwd=work)  # fmt: skip
        with open(os.path.join(work, f"{name}.csr"), "rb") as f:
            csr = base64.b64encode(f.read()).decode()
        k.apply({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
                 "metadata": {"name": name, "namespace": "team-a"},
                 "spec": {"request": csr, "duration": "24h", "usages": ["digital signature", "server auth"],
                          "issuerRef": {"group": audit.GROUP, "kind": "LocalCAClusterIssuer", "name": "ca"}}})  # fmt: skip
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        k.kubectl("patch", "certificaterequest", name, "-n", "team-a", "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": {"conditions": [{"type": "Approved", "status": "True", "reason": "test",
                                                               "message": "approved", "lastTransitionTime": now}]}}))  # fmt: skip

    def start_prometheus(self, work: str, metrics_port: int, spec: dict, procs: list, token_file: str) -> str:
        write_rules(spec, work)
        # What the chart's ServiceMonitor asks of the Prometheus Operator: HTTPS, the self-signed
        # serving certificate not verified, Prometheus' own ServiceAccount token as the bearer.
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [os.path.join(work, "rules.yaml")],
            "scrape_configs": [{"job_name": JOB, "scheme": "https", "tls_config": {"insecure_skip_verify": True},
                                "authorization": {"type": "Bearer", "credentials_file": token_file},
                                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }  # fmt: skip
        with open(os.path.join(work, "prometheus.yml"), "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f)
        port = audit.free_port()
        procs.append(subprocess.Popen(
            [tool("prometheus"), f"--config.file={os.path.join(work, 'prometheus.yml')}",
             f"--storage.tsdb.path={os.path.join(work, 'tsdb')}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "prometheus.log"), "w")))  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        audit.wait_for("Prometheus ready", lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=5).status == 200)
        audit.wait_for("the controller's target up", lambda: query(url, f'up{{job="{JOB}"}} == 1'))
        return url


def get(url: str, path: str, **params: str) -> dict:
    q = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}{path}{q}", timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def query(url: str, expr: str) -> list:
    return get(url, "/api/v1/query", query=expr)["result"]


def alert_states(url: str, name: str) -> set[str]:
    return {a["state"] for a in get(url, "/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == name}


if __name__ == "__main__":
    unittest.main()
