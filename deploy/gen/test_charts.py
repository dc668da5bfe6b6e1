"""Tests of the charts, rendered by real Helm (scripts/tools/install-helm.sh) with several values.

Run: deploy/gen/python.sh → python -m unittest discover -s deploy/gen -p 'test_*.py'   (deploy/check.sh does)
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate  # noqa: E402
import helm  # noqa: E402
import schemas  # noqa: E402
from helm import HelmError  # noqa: E402

ISSUERS = generate.load_issuers()
CHARTS: helm.ChartSet | None = None


def setUpModule():
    global CHARTS
    CHARTS = helm.ChartSet()


def tearDownModule():
    if CHARTS:
        CHARTS.close()


def render(name: str, overrides: dict | None = None, namespace: str = "certbridge") -> list[helm.Document]:
    assert CHARTS
    return CHARTS.render(f"certbridge-{name}", "rel", namespace, overrides)


# Every values switch the charts have, each rendered, linted and schema-checked for every chart.
PKCS11_MOUNTS = {
    "pkcs11": {
        "allowedModules": ["/opt/hsm/libcs.so", "/usr/lib/softhsm/libsofthsm2.so"],
        "env": [{"name": "SOFTHSM2_CONF", "value": "/etc/pkcs11/softhsm2.conf"}],
        "mounts": [
            {"name": "hsm-config", "mountPath": "/etc/pkcs11", "volume": {"secret": {"secretName": "cfg"}}},
            {"name": "tokens", "mountPath": "/var/lib/softhsm/tokens", "writable": True,
             "volume": {"persistentVolumeClaim": {"claimName": "tokens"}}},
        ],
        "tokenPolicy": {"grants": [{"cluster": True, "token": {"label": "root-ca"}},
                                   {"namespaces": ["team-a"], "token": {"serial": "8a3f2c1d9e7b4a60"},
                                    "keys": [{"label": "team-a"}], "maxDuration": "2160h", "allowCA": False}]},
    }
}  # fmt: skip
VAULT_TOKENS = {"vault": {"serviceAccountTokens": [{"namespace": "team-a", "name": "vault-issuer"},
                                                   {"namespace": "team-a", "name": "other"},
                                                   {"namespace": "vault-creds", "name": "vault-issuer"}]}}  # fmt: skip
# Every values switch the charts have, in as few combinations as cover them all (each Helm call costs
# a process start on a shared 2-core CI machine); each combination is linted and schema-checked for
# every chart. The Values tests below check what each switch does on its own.
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "switches-on": {
        "replicaCount": 2,
        "approver": {"enabled": False},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "dashboard": {"enabled": True, "namespace": "monitoring"},
        "clusterResourceNamespace": "vault-creds",
        "watchNamespace": "team-a",
        "serviceAccount": {"create": False, "name": "existing"},
        "controller": {"maxRetryDuration": "10m", "concurrency": 8, "logFormat": "text"},
        "extraArgs": ["--issuer-recheck-interval=1m"],
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "extraVolumes": [{"name": "extra", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra"}],
        "image": {"digest": "sha256:abc"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "podAnnotations": {"a": "b"},
        "podLabels": {"team": "pki"},
        "commonLabels": {"env": "test"},
        "priorityClassName": "system-cluster-critical",
        "metrics": {"tlsSecretName": "metrics-tls",
                    "readers": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}]},
        "csr": {"maxPemBytes": 65536, "maxSans": 100, "maxNameBytes": 1024},
    },
    "switches-off": {
        "leaderElection": {"enabled": True},
        "namespacedIssuers": {"enabled": False},
        "kubernetesCSRs": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
        "metrics": {"secure": False},
        "serviceMonitor": {"enabled": True},
    },
}


def variants(issuer: dict):
    for name, overrides in VARIANTS.items():
        if issuer["name"] == "pkcs11" and name == "switches-on":
            overrides = {**overrides, **PKCS11_MOUNTS}
        if issuer["name"] == "vault" and name == "switches-on":
            overrides = {**overrides, **VAULT_TOKENS}
        yield name, overrides


def objects(docs, kind):
    return [d.obj for d in docs if d.kind == kind]


def one(docs, kind, name=None):
    found = [o for o in objects(docs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(docs):
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def rules_of(docs, kind, name):
    return one(docs, kind, name)["rules"]


def grants(rules, group, resource, verb, resource_name=None):
    """Kubernetes RBAC rule matching (no wildcards are used by these charts, so none are honoured)."""
    for r in rules:
        if group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", []):
            names = r.get("resourceNames")
            if not names or resource_name is None or resource_name in names:
                return True
    return False


class EveryChart(unittest.TestCase):
    def test_hardened_pod_and_probes(self):
        for issuer in ISSUERS:
            with self.subTest(issuer=issuer["name"]):
                docs = render(issuer["name"])
                pod = one(docs, "Deployment")["spec"]["template"]["spec"]
                c = container(docs)
                self.assertTrue(pod["securityContext"]["runAsNonRoot"])
                self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
                sc = c["securityContext"]
                self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
                self.assertTrue(sc["readOnlyRootFilesystem"])
                self.assertFalse(sc["allowPrivilegeEscalation"])
                self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "health"})
                self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "health"})
                self.assertIn("limits", c["resources"])
                self.assertEqual(c["image"], f"ghcr.io/certbridge/{issuer['binary']}:{generate.APP_VERSION}")
                self.assertEqual(c["args"][0], "run")
                self.assertIn("--cluster-resource-namespace=cert-manager", c["args"])
                self.assertNotIn("--leader-elect", c["args"])
                self.assertEqual(one(docs, "Deployment")["spec"]["strategy"]["type"], "Recreate")
                self.assertEqual(objects(docs, "PodDisruptionBudget"), [])
                self.assertEqual(objects(docs, "ServiceMonitor"), [])
                self.assertEqual(objects(docs, "PrometheusRule"), [], "monitoring is off by default")
                self.assertEqual(objects(docs, "ConfigMap"), [], "the dashboard is off by default")
                svc = one(docs, "Service")
                self.assertEqual(svc["spec"]["selector"], one(docs, "Deployment")["spec"]["selector"]["matchLabels"])

    def test_rbac_is_derived_from_the_issuer_kinds(self):
        for issuer in ISSUERS:
            with self.subTest(issuer=issuer["name"]):
                docs = render(issuer["name"])
                g, k = issuer["group"], issuer["kind"].lower()
                rules = rules_of(docs, "ClusterRole", "rel-certbridge-" + issuer["name"])
                for plural in (f"{k}issuers", f"{k}clusterissuers"):
                    for verb in ("list", "watch"):
                        self.assertTrue(grants(rules, g, plural, verb), plural)
                    self.assertFalse(grants(rules, g, plural, "get"), "watched, never read one by one (controller audit)")
                    self.assertTrue(grants(rules, g, f"{plural}/status", "patch"))
                    self.assertFalse(grants(rules, g, plural, "update"), "issuer specs are the user's")
                self.assertTrue(grants(rules, "certificates.k8s.io", "signers", "sign", f"{k}clusterissuers.{g}/*"))
                self.assertFalse(
                    grants(rules, "certificates.k8s.io", "signers", "sign", f"{k}issuers.{g}/*"),
                    "Kubernetes CSRs are served by the cluster-scoped kind only",
                )
                self.assertFalse(grants(rules, "", "secrets", "create"))
                self.assertFalse(grants(rules, "", "secrets", "update"))
                approver = rules_of(docs, "ClusterRole", f"rel-certbridge-{issuer['name']}-approver")
                self.assertEqual(approver[0]["resourceNames"], [f"{k}issuers.{g}/*", f"{k}clusterissuers.{g}/*"])
                binding = one(docs, "ClusterRoleBinding", f"rel-certbridge-{issuer['name']}-approver")
                self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": "cert-manager",
                                                        "namespace": "cert-manager"}])  # fmt: skip
                role = one(docs, "Role", f"rel-certbridge-{issuer['name']}-cluster-resources")
                self.assertEqual(role["metadata"]["namespace"], "cert-manager")
                for kind in ("ClusterRole", "Role"):
                    for o in objects(docs, kind):
                        self.assertFalse(grants(o["rules"], "", "serviceaccounts/token", "create"),
                                         f"{kind} {o['metadata']['name']}: no token grant by default")  # fmt: skip

    def test_notes_name_the_kinds_and_signer(self):
        notes = CHARTS.notes("certbridge-vault", "rel", "certbridge")
        self.assertIn("Kinds: VaultIssuer and VaultClusterIssuer (vault.certbridge.io/v1alpha1)", notes)
        self.assertIn("signerName vaultclusterissuers.vault.certbridge.io/<cluster-issuer-name>", notes)
        self.assertIn("namespace cert-manager", notes)
        self.assertIn("bind ClusterRole\nrel-certbridge-vault-metrics-reader", notes)
        self.assertIn("No ServiceAccount tokens are granted", notes)
        self.assertIn("every namespaced Pkcs11Issuer is refused", CHARTS.notes("certbridge-pkcs11", "rel", "certbridge"))

    def test_no_lease_rights_without_leader_election(self):
        docs = render("example-ca")
        self.assertFalse(any("leases" in r["resources"] for o in objects(docs, "Role") for r in o["rules"]))


class Values(unittest.TestCase):
    def test_replicas_turn_on_leader_election_and_pdb(self):
        docs = render("ejbca", {"replicaCount": 2})
        self.assertIn("--leader-elect", container(docs)["args"])
        self.assertIn("--leader-election-namespace=certbridge", container(docs)["args"])
        dep = one(docs, "Deployment")
        self.assertEqual(dep["spec"]["replicas"], 2)
        self.assertEqual(dep["spec"]["strategy"]["rollingUpdate"], {"maxSurge": 1, "maxUnavailable": 0})
        self.assertEqual(one(docs, "PodDisruptionBudget")["spec"]["minAvailable"], 1)
        lease = rules_of(docs, "Role", "rel-certbridge-ejbca-leader-election")
        self.assertEqual(one(docs, "Role", "rel-certbridge-ejbca-leader-election")["metadata"]["namespace"], "certbridge")
        for verb in ("get", "create", "patch"):
            self.assertTrue(grants(lease, "coordination.k8s.io", "leases", verb))
        for verb in ("update", "delete"):
            self.assertFalse(grants(lease, "coordination.k8s.io", "leases", verb), "kube-lease-manager patches")

    def test_leader_election_forced_with_one_replica(self):
        docs = render("ejbca", {"leaderElection": {"enabled": True}})
        self.assertIn("--leader-elect", container(docs)["args"])
        self.assertEqual(objects(docs, "PodDisruptionBudget"), [])
        self.assertEqual(one(docs, "Deployment")["spec"]["strategy"]["type"], "RollingUpdate")

    def test_disabling_namespaced_issuers_drops_cluster_wide_secret_reads(self):
        docs = render("vault", {"namespacedIssuers": {"enabled": False}})
        rules = rules_of(docs, "ClusterRole", "rel-certbridge-vault")
        for res in ("secrets", "configmaps", "serviceaccounts/token"):
            for verb in ("get", "list", "watch", "create"):
                self.assertFalse(grants(rules, "", res, verb), f"{res} {verb}")
        role = rules_of(docs, "Role", "rel-certbridge-vault-cluster-resources")
        self.assertTrue(grants(role, "", "secrets", "watch"))
        self.assertFalse(grants(role, "", "serviceaccounts/token", "create"))
        approver = rules_of(docs, "ClusterRole", "rel-certbridge-vault-approver")
        self.assertEqual(approver[0]["resourceNames"], ["vaultclusterissuers.vault.certbridge.io/*"])
        # The controller is told, and the namespaced kind's grants go with it.
        self.assertIn("--disable-namespaced-issuers", container(docs)["args"])
        for res, verb in (("vaultissuers", "watch"), ("vaultissuers", "list"), ("vaultissuers/status", "patch")):
            self.assertFalse(grants(rules, "vault.certbridge.io", res, verb), f"{res} {verb}")
        for res, verb in (("vaultclusterissuers", "watch"), ("vaultclusterissuers/status", "patch")):
            self.assertTrue(grants(rules, "vault.certbridge.io", res, verb), f"{res} {verb}")

    def test_namespaced_issuers_on_by_default(self):
        docs = render("vault")
        self.assertNotIn("--disable-namespaced-issuers", container(docs)["args"])
        rules = rules_of(docs, "ClusterRole", "rel-certbridge-vault")
        self.assertTrue(grants(rules, "", "secrets", "watch"))
        self.assertTrue(grants(rules, "vault.certbridge.io", "vaultissuers", "watch"))
        self.assertTrue(grants(rules, "vault.certbridge.io", "vaultissuers/status", "patch"))

    def test_disabling_kubernetes_csrs_drops_their_grants(self):
        docs = render("ejbca", {"kubernetesCSRs": {"enabled": False}})
        self.assertIn("--disable-certificate-signing-requests", container(docs)["args"])
        rules = rules_of(docs, "ClusterRole", "rel-certbridge-ejbca")
        self.assertFalse(any(r["apiGroups"] == ["certificates.k8s.io"] for r in rules))
        self.assertTrue(grants(rules, "cert-manager.io", "certificaterequests/status", "patch"))
        self.assertNotIn("--disable-certificate-signing-requests", container(render("ejbca"))["args"])

    def test_approver_and_service_monitor_switches(self):
        docs = render("pkcs11", {"approver": {"enabled": False}, "serviceMonitor": {"enabled": True}})
        self.assertEqual([o["metadata"]["name"] for o in objects(docs, "ClusterRole")],
                         ["rel-certbridge-pkcs11", "rel-certbridge-pkcs11-metrics-reader"])  # fmt: skip
        sm = one(docs, "ServiceMonitor")
        self.assertEqual(sm["spec"]["endpoints"][0]["port"], "metrics")
        self.assertEqual(sm["spec"]["endpoints"][0]["path"], "/metrics")

    def test_prometheus_rule_and_dashboard_switches(self):
        docs = render("vault", {"prometheusRule": {"enabled": True, "job": "vault", "labels": {"release": "kps"}},
                                "dashboard": {"enabled": True, "namespace": "monitoring"}})  # fmt: skip
        rule = one(docs, "PrometheusRule")
        self.assertEqual(rule["metadata"]["labels"]["release"], "kps")
        exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
        self.assertTrue(all('job="vault"' in e for e in exprs), exprs)
        cm = one(docs, "ConfigMap", "rel-certbridge-vault-dashboard")
        self.assertEqual(cm["metadata"]["namespace"], "monitoring")
        self.assertEqual(cm["metadata"]["labels"]["grafana_dashboard"], "1")
        import json

        self.assertEqual(json.loads(cm["data"]["rel-certbridge-vault.json"])["uid"], "certbridge")

    def test_cluster_resource_namespace_and_watch_namespace(self):
        docs = render("vault", {"clusterResourceNamespace": "vault-creds", "watchNamespace": "team-a"})
        args = container(docs)["args"]
        self.assertIn("--cluster-resource-namespace=vault-creds", args)
        self.assertIn("--namespace=team-a", args)
        self.assertEqual(one(docs, "Role", "rel-certbridge-vault-cluster-resources")["metadata"]["namespace"], "vault-creds")
        docs = render("vault", {"clusterResourceNamespace": ""}, namespace="issuers")
        self.assertIn("--cluster-resource-namespace=issuers", container(docs)["args"])

    def test_controller_flags_and_extras(self):
        docs = render(
            "example-ca",
            {
                "controller": {"maxRetryDuration": "10m", "concurrency": 8, "logFormat": "text"},
                "extraArgs": ["--issuer-recheck-interval=1m"],
                "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
                "image": {"digest": "sha256:abc"},
                "nodeSelector": {"kubernetes.io/os": "linux"},
            },
        )
        c = container(docs)
        self.assertIn("--max-retry-duration=10m", c["args"])
        self.assertIn("--concurrency=8", c["args"])
        self.assertIn("--log-format=text", c["args"])
        self.assertEqual(c["args"][-1], "--issuer-recheck-interval=1m")
        self.assertIn({"name": "HTTPS_PROXY", "value": "http://proxy:3128"}, c["env"])
        self.assertEqual(c["image"], "ghcr.io/certbridge/certbridge-example-ca@sha256:abc")
        self.assertEqual(one(docs, "Deployment")["spec"]["template"]["spec"]["nodeSelector"], {"kubernetes.io/os": "linux"})

    def test_tracing_otlp_endpoint_value(self):
        args = container(render("example-ca", {}))["args"]
        self.assertFalse([a for a in args if a.startswith("--otlp-endpoint")], "tracing is off by default")
        args = container(render("example-ca", {"tracing": {"otlpEndpoint": "http://otel-collector.monitoring:4318"}}))["args"]
        self.assertIn("--otlp-endpoint=http://otel-collector.monitoring:4318", args)

    def test_pkcs11_module_allow_list_and_mounts(self):
        docs = render(
            "pkcs11",
            {
                "pkcs11": {
                    "allowedModules": ["/opt/hsm/libcs.so", "/usr/lib/softhsm/libsofthsm2.so"],
                    "env": [{"name": "SOFTHSM2_CONF", "value": "/etc/pkcs11/softhsm2.conf"}],
                    "mounts": [
                        {"name": "hsm-config", "mountPath": "/etc/pkcs11", "volume": {"secret": {"secretName": "cfg"}}},
                        {"name": "tokens", "mountPath": "/var/lib/softhsm/tokens", "writable": True,
                         "volume": {"persistentVolumeClaim": {"claimName": "tokens"}}},
                    ],
                }
            },
        )  # fmt: skip
        c = container(docs)
        env = {e["name"]: e.get("value") for e in c["env"]}
        self.assertEqual(env[generate_env_name()], "/opt/hsm/libcs.so:/usr/lib/softhsm/libsofthsm2.so")
        self.assertEqual(env["SOFTHSM2_CONF"], "/etc/pkcs11/softhsm2.conf")
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        self.assertTrue(mounts["hsm-config"]["readOnly"])
        self.assertFalse(mounts["tokens"]["readOnly"])
        vols = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(vols["hsm-config"]["secret"], {"secretName": "cfg"})
        self.assertEqual(vols["tokens"]["persistentVolumeClaim"], {"claimName": "tokens"})
        # Other charts have no PKCS#11 settings at all.
        self.assertNotIn(generate_env_name(), {e["name"] for e in container(render("vault"))["env"]})

    def test_vault_service_account_tokens_only_for_listed_service_accounts(self):
        docs = render("vault", VAULT_TOKENS)
        # Nothing cluster-wide, nothing in the cluster resource namespace's general Role.
        self.assertFalse(grants(rules_of(docs, "ClusterRole", "rel-certbridge-vault"), "", "serviceaccounts/token", "create"))
        self.assertFalse(grants(rules_of(docs, "Role", "rel-certbridge-vault-cluster-resources"), "", "serviceaccounts/token", "create"))
        roles = {o["metadata"]["namespace"]: o for o in objects(docs, "Role") if o["metadata"]["name"] == "rel-certbridge-vault-serviceaccount-tokens"}
        self.assertEqual(sorted(roles), ["team-a", "vault-creds"])
        self.assertEqual(roles["team-a"]["rules"], [{"apiGroups": [""], "resources": ["serviceaccounts/token"],
                                                     "resourceNames": ["other", "vault-issuer"], "verbs": ["create"]}])  # fmt: skip
        self.assertEqual(roles["vault-creds"]["rules"][0]["resourceNames"], ["vault-issuer"])
        bindings = [o for o in objects(docs, "RoleBinding") if o["metadata"]["name"] == "rel-certbridge-vault-serviceaccount-tokens"]
        self.assertEqual(sorted(b["metadata"]["namespace"] for b in bindings), ["team-a", "vault-creds"])
        for b in bindings:
            self.assertEqual(b["subjects"], [{"kind": "ServiceAccount", "name": "rel-certbridge-vault", "namespace": "certbridge"}])
            self.assertEqual(b["roleRef"]["kind"], "Role")
        # What the API server would decide for the controller.
        import rbac

        authz = rbac.Authorizer([d.obj for d in docs], "certbridge", "rel-certbridge-vault")
        ok = rbac.request_attributes("POST", "/api/v1/namespaces/team-a/serviceaccounts/vault-issuer/token")
        self.assertTrue(authz.allows(ok))
        for path in ("/api/v1/namespaces/team-a/serviceaccounts/default/token",
                     "/api/v1/namespaces/team-b/serviceaccounts/vault-issuer/token",
                     "/api/v1/namespaces/cert-manager/serviceaccounts/cert-manager/token"):  # fmt: skip
            self.assertFalse(authz.allows(rbac.request_attributes("POST", path)), path)
        # Default: no Role at all.
        self.assertEqual([o for o in objects(render("vault"), "Role") if "token" in o["metadata"]["name"]], [])

    def test_metrics_are_https_with_authn_and_authz_by_default(self):
        docs = render("example-ca", {"serviceMonitor": {"enabled": True}})
        args = container(docs)["args"]
        self.assertIn("--metrics-addr=0.0.0.0:9402", args)
        self.assertNotIn("--metrics-insecure", args)
        rules = rules_of(docs, "ClusterRole", "rel-certbridge-example-ca")
        self.assertTrue(grants(rules, "authentication.k8s.io", "tokenreviews", "create"))
        self.assertTrue(grants(rules, "authorization.k8s.io", "subjectaccessreviews", "create"))
        reader = rules_of(docs, "ClusterRole", "rel-certbridge-example-ca-metrics-reader")
        self.assertEqual(reader, [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
        self.assertEqual([o for o in objects(docs, "ClusterRoleBinding") if "metrics" in o["metadata"]["name"]], [],
                         "the reader role is bound only to the subjects listed in metrics.readers")  # fmt: skip
        ep = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
        self.assertEqual(ep["scheme"], "https")
        self.assertEqual(ep["bearerTokenFile"], "/var/run/secrets/kubernetes.io/serviceaccount/token")
        self.assertEqual(ep["tlsConfig"], {"insecureSkipVerify": True})

        readers = [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}]
        docs = render("example-ca", {"metrics": {"tlsSecretName": "metrics-tls", "readers": readers}})
        binding = one(docs, "ClusterRoleBinding", "rel-certbridge-example-ca-metrics-reader")
        self.assertEqual(binding["subjects"], readers)
        self.assertEqual(binding["roleRef"]["name"], "rel-certbridge-example-ca-metrics-reader")
        c = container(docs)
        self.assertIn("--metrics-cert-file=/etc/certbridge/metrics-tls/tls.crt", c["args"])
        self.assertIn("--metrics-key-file=/etc/certbridge/metrics-tls/tls.key", c["args"])
        self.assertIn({"name": "metrics-tls", "mountPath": "/etc/certbridge/metrics-tls", "readOnly": True}, c["volumeMounts"])
        vols = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(vols["metrics-tls"]["secret"], {"secretName": "metrics-tls"})

    def test_plain_http_metrics_switch_drops_the_review_grants(self):
        docs = render("example-ca", {"metrics": {"secure": False}, "serviceMonitor": {"enabled": True}})
        self.assertIn("--metrics-insecure", container(docs)["args"])
        rules = rules_of(docs, "ClusterRole", "rel-certbridge-example-ca")
        self.assertFalse(grants(rules, "authentication.k8s.io", "tokenreviews", "create"))
        self.assertFalse(grants(rules, "authorization.k8s.io", "subjectaccessreviews", "create"))
        self.assertEqual([o for o in objects(docs, "ClusterRole") if "metrics" in o["metadata"]["name"]], [])
        ep = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
        self.assertNotIn("scheme", ep)
        self.assertNotIn("bearerTokenFile", ep)

    def test_pkcs11_token_policy_is_a_mounted_config_map(self):
        docs = render("pkcs11", PKCS11_MOUNTS)
        cm = one(docs, "ConfigMap", "rel-certbridge-pkcs11-token-policy")
        self.assertEqual(cm["metadata"]["namespace"], "certbridge")
        import yaml

        self.assertEqual(yaml.safe_load(cm["data"]["token-policy.yaml"]), PKCS11_MOUNTS["pkcs11"]["tokenPolicy"])
        c = container(docs)
        self.assertIn("--token-policy=/etc/certbridge/pkcs11/token-policy.yaml", c["args"])
        self.assertIn({"name": "token-policy", "mountPath": "/etc/certbridge/pkcs11", "readOnly": True}, c["volumeMounts"])
        pod = one(docs, "Deployment")["spec"]["template"]
        vols = {v["name"]: v for v in pod["spec"]["volumes"]}
        self.assertEqual(vols["token-policy"]["configMap"], {"name": "rel-certbridge-pkcs11-token-policy"})
        self.assertIn("checksum/token-policy", pod["metadata"]["annotations"])
        # Without a policy: no ConfigMap, no flag (namespaced Pkcs11Issuers are then refused).
        docs = render("pkcs11")
        self.assertEqual(objects(docs, "ConfigMap"), [])
        self.assertFalse(any(a.startswith("--token-policy") for a in container(docs)["args"]))
        with self.assertRaisesRegex(HelmError, "pkcs11.tokenPolicy.grants must be a list"):
            render("pkcs11", {"pkcs11": {"tokenPolicy": {"grant": []}}})

    def test_csr_limits_are_values(self):
        for issuer in ISSUERS:
            with self.subTest(issuer=issuer["name"]):
                args = container(render(issuer["name"]))["args"]
                self.assertIn("--csr-max-pem-bytes=131072", args)
                self.assertIn("--csr-max-sans=1000", args)
                self.assertIn("--csr-max-name-bytes=2048", args)
        args = container(render("ejbca", {"csr": {"maxPemBytes": 65536, "maxSans": 10, "maxNameBytes": 255}}))["args"]
        for a in ("--csr-max-pem-bytes=65536", "--csr-max-sans=10", "--csr-max-name-bytes=255"):
            self.assertIn(a, args)

    def test_bad_values_fail_with_a_message_naming_the_value(self):
        with self.assertRaisesRegex(HelmError, "rbac.serviceAccountTokens was removed"):
            render("vault", {"rbac": {"serviceAccountTokens": True}})
        with self.assertRaisesRegex(HelmError, "vault.serviceAccountTokens\\[\\].name is required"):
            render("vault", {"vault": {"serviceAccountTokens": [{"namespace": "team-a"}]}})
        with self.assertRaisesRegex(HelmError, "team-a/vault-issuer is outside clusterResourceNamespace"):
            render("vault", {"namespacedIssuers": {"enabled": False}, **VAULT_TOKENS})
        with self.assertRaisesRegex(HelmError, "serviceAccount.name is required"):
            render("vault", {"serviceAccount": {"create": False}})
        with self.assertRaisesRegex(HelmError, r"pkcs11.mounts\[\].volume is required"):
            render("pkcs11", {"pkcs11": {"mounts": [{"name": "x", "mountPath": "/x"}]}})
        with self.assertRaisesRegex(HelmError, "pkcs11.allowedModules: \"lib.so\" must be an absolute path"):
            render("pkcs11", {"pkcs11": {"allowedModules": ["lib.so"]}})
        docs = render("vault", {"serviceAccount": {"create": False, "name": "existing"}})
        self.assertEqual(objects(docs, "ServiceAccount"), [])
        self.assertEqual(one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"], "existing")
        self.assertEqual(one(docs, "ClusterRoleBinding", "rel-certbridge-vault")["subjects"][0]["name"], "existing")


def generate_env_name() -> str:
    return "CERTBRIDGE_PKCS11_ALLOWED_MODULES"


class RbacEvaluation(unittest.TestCase):
    """The request → attributes → RBAC decision the controller audit in check.sh relies on."""

    def setUp(self):
        import rbac

        self.rbac = rbac
        docs = render("vault", {"replicaCount": 2, "namespacedIssuers": {"enabled": False}})
        self.authz = rbac.Authorizer([d.obj for d in docs], "certbridge", "rel-certbridge-vault")

    def allowed(self, method, path):
        a = self.rbac.request_attributes(method, path)
        self.assertIsNotNone(a, path)
        return self.authz.allows(a)

    def test_request_attributes(self):
        ra = self.rbac.request_attributes
        self.assertEqual(str(ra("GET", "/apis/cert-manager.io/v1/certificaterequests?watch=true&resourceVersion=5")),
                         "watch cert-manager.io/certificaterequests (cluster-wide)")  # fmt: skip
        self.assertEqual(ra("PATCH", "/apis/cert-manager.io/v1/namespaces/a/certificaterequests/r/status").resource,
                         "certificaterequests/status")  # fmt: skip
        self.assertEqual(ra("POST", "/api/v1/namespaces/cert-manager/serviceaccounts/vault/token").verb, "create")
        self.assertEqual(ra("GET", "/api/v1/namespaces/x/secrets").verb, "list")
        self.assertIsNone(ra("GET", "/apis/cert-manager.io/v1"))
        self.assertIsNone(ra("GET", "/version"))

    def test_grants_and_denials(self):
        self.assertTrue(self.allowed("PATCH", "/apis/cert-manager.io/v1/namespaces/a/certificaterequests/r/status"))
        self.assertTrue(self.allowed("GET", "/apis/vault.certbridge.io/v1alpha1/vaultclusterissuers?watch=1"))
        self.assertFalse(self.allowed("GET", "/apis/vault.certbridge.io/v1alpha1/vaultissuers?watch=1"))
        self.assertTrue(self.allowed("GET", "/api/v1/namespaces/cert-manager/secrets/creds"))
        self.assertTrue(self.allowed("PATCH", "/apis/coordination.k8s.io/v1/namespaces/certbridge/leases/l"))
        self.assertFalse(self.allowed("PUT", "/apis/coordination.k8s.io/v1/namespaces/certbridge/leases/l"))
        # namespaced issuers are off: no Secret reads outside the cluster resource namespace
        self.assertFalse(self.allowed("GET", "/api/v1/namespaces/team-a/secrets/creds"))
        self.assertFalse(self.allowed("GET", "/api/v1/secrets?watch=true"))
        self.assertFalse(self.allowed("PATCH", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l"))
        self.assertFalse(self.allowed("DELETE", "/apis/coordination.k8s.io/v1/namespaces/certbridge/leases/l"))
        self.assertFalse(self.allowed("PUT", "/apis/vault.certbridge.io/v1alpha1/vaultclusterissuers/x"))
        self.assertFalse(self.allowed("POST", "/api/v1/namespaces/team-a/events"), "core events are not granted")
        sign = self.rbac.Attributes("sign", "certificates.k8s.io", "signers", "", "vaultclusterissuers.vault.certbridge.io/x")
        self.assertTrue(self.authz.allows(sign))
        other = self.rbac.Attributes("sign", "certificates.k8s.io", "signers", "", "vaultissuers.vault.certbridge.io/x")
        self.assertFalse(self.authz.allows(other))


class RealHelm(unittest.TestCase):
    """`helm lint --strict` and the Kubernetes OpenAPI schemas, for every chart and values switch."""

    def test_lint_strict_with_every_values_switch(self):
        for issuer in ISSUERS:
            for variant, overrides in variants(issuer):
                with self.subTest(issuer=issuer["name"], values=variant):
                    CHARTS.lint(f"certbridge-{issuer['name']}", overrides)

    def test_every_rendered_object_matches_the_kubernetes_schemas(self):
        for issuer in ISSUERS:
            for variant, overrides in variants(issuer):
                with self.subTest(issuer=issuer["name"], values=variant):
                    docs = render(issuer["name"], overrides)
                    self.assertTrue(docs)
                    self.assertEqual([e for d in docs for e in schemas.errors(d.obj)], [])

    def test_the_committed_manifests_match_the_kubernetes_schemas(self):
        import yaml

        for issuer in ISSUERS:
            with self.subTest(issuer=issuer["name"]):
                with open(os.path.join(generate.DEPLOY, "manifests", f"{issuer['name']}.yaml"), encoding="utf-8") as f:
                    objs = [o for o in yaml.safe_load_all(f) if o]
                self.assertIn("CustomResourceDefinition", {o["kind"] for o in objs})
                self.assertEqual([e for o in objs for e in schemas.errors(o)], [])

    def test_a_misspelled_security_context_field_fails(self):
        values = {"securityContext": {"readOnlyRootFilesytem": True}}
        dep = one(render("example-ca", values), "Deployment")
        errs = schemas.errors(dep)
        self.assertTrue(errs)
        self.assertIn("readOnlyRootFilesytem", errs[0])
        self.assertIn("securityContext", errs[0])
        pod = copy.deepcopy(one(render("example-ca"), "Deployment"))
        pod["spec"]["template"]["spec"]["securityContext"]["runAsNonroot"] = True
        self.assertIn("runAsNonroot", " ".join(schemas.errors(pod)))
        self.assertEqual(schemas.errors(one(render("example-ca"), "Deployment")), [])

    def test_a_new_issuer_is_one_entry_and_no_template_code(self):
        """What the AD CS and Venafi charts will be: an issuers.yaml entry, rendered by the shared templates."""
        entry = {"name": "acme-ca", "crate": "certbridge-acme-ca", "binary": "certbridge-acme-ca",
                 "group": "acme-ca.certbridge.io", "kind": "AcmeCA", "description": "a new issuer"}  # fmt: skip
        files = generate.chart_files(entry, "")
        templates = {k: v for k, v in files.items() if "/templates/" in k and not k.endswith("NOTES.txt")}
        self.assertTrue(all(v.startswith('{{- include "certbridge.') and v.count("\n") == 1 for v in templates.values()))
        with tempfile.TemporaryDirectory() as tmp:
            charts = os.path.join(tmp, "charts")
            os.makedirs(charts)
            import shutil

            shutil.copytree(os.path.join(generate.DEPLOY, "charts", "certbridge-common"), os.path.join(charts, "certbridge-common"))
            for rel, content in files.items():
                if rel.endswith(".yaml") and "/crds/" in rel:
                    continue
                path = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(content)
            with helm.ChartSet(charts) as cs:
                cs.lint("certbridge-acme-ca")
                docs = cs.render("certbridge-acme-ca", "rel", "certbridge")
        rules = rules_of(docs, "ClusterRole", "rel-certbridge-acme-ca")
        self.assertTrue(grants(rules, "acme-ca.certbridge.io", "acmecaclusterissuers/status", "patch"))
        self.assertEqual(container(docs)["image"], f"ghcr.io/certbridge/certbridge-acme-ca:{generate.APP_VERSION}")
        self.assertEqual([e for d in docs for e in schemas.errors(d.obj)], [])

    def test_package(self):
        with tempfile.TemporaryDirectory() as out:
            tgz = CHARTS.package("certbridge-vault", out)
            self.assertEqual(os.path.basename(tgz), f"certbridge-vault-{generate.CHART_VERSION}.tgz")
            self.assertTrue(os.path.exists(tgz))
