//! kubectl 1.32 against the embedded API server, spawned as a real process with the
//! kubeconfig the server writes.

use crate::common::*;
use certbridge_testkit::KubeSim;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// A kubectl runner bound to one server, with its own discovery cache.
struct Kubectl {
    dir: tempfile::TempDir,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(sim: &KubeSim) -> Self {
        let dir = tempfile::tempdir().unwrap();
        sim.write_kubeconfig(&dir.path().join("kubeconfig")).unwrap();
        Kubectl { dir }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("kubectl");
        c.args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .env("HOME", self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        c
    }

    async fn run_stdin(&self, args: &[&str], stdin: &str) -> Out {
        use tokio::io::AsyncWriteExt as _;
        let mut child = self.command(args).spawn().expect("kubectl on PATH");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let o = tokio::time::timeout(WAIT, child.wait_with_output()).await.expect("kubectl finished").unwrap();
        Out {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.run_stdin(args, "").await
    }

    async fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args).await;
        assert!(o.ok, "kubectl {args:?} failed: {}\n{}", o.stderr, o.stdout);
        o.stdout
    }

    async fn apply(&self, yaml: &str, extra: &[&str]) -> Out {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(extra);
        self.run_stdin(&args, yaml).await
    }
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd], listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Phase, type: string, jsonPath: .status.phase}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              color: {type: string, default: blue, enum: [blue, red]}
          status:
            type: object
            properties:
              phase: {type: string}
"#;

#[tokio::test]
async fn kubectl_applies_crds_and_custom_resources() {
    let sim = KubeSim::start().await.unwrap();
    let k = Kubectl::new(&sim);
    let o = k.apply(WIDGET_CRD, &[]).await;
    assert!(o.ok, "{}", o.stderr);
    k.ok(&["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s"]).await;

    let w = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 2\n";
    let o = k.apply(w, &[]).await;
    assert!(o.ok && o.stdout.contains("widget.example.com/w1 created"), "{} {}", o.stdout, o.stderr);
    // Default applied from the schema.
    assert_eq!(k.ok(&["get", "widget", "w1", "-o", "jsonpath={.spec.color}"]).await, "blue");
    let o = k.apply(w, &[]).await;
    assert!(o.stdout.contains("unchanged"), "{}", o.stdout);
    let o = k.apply(&w.replace("size: 2", "size: 3"), &[]).await;
    assert!(o.stdout.contains("configured"), "{} {}", o.stdout, o.stderr);
    assert_eq!(k.ok(&["get", "wd", "w1", "-o", "jsonpath={.spec.size} {.metadata.generation}"]).await, "3 2");

    // Status through kubectl's --subresource, then the table shows printer columns.
    k.ok(&["patch", "widget", "w1", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Ready"}}"#])
        .await;
    let table = k.ok(&["get", "widgets"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["NAME", "SIZE", "PHASE", "AGE"], "{table}");
    assert_eq!(lines[1].split_whitespace().take(3).collect::<Vec<_>>(), ["w1", "3", "Ready"], "{table}");

    // Schema violations are rejected with the field named.
    let o = k.apply(&w.replace("size: 2", "size: 0"), &[]).await;
    assert!(!o.ok && o.stderr.contains("spec.size"), "{}", o.stderr);
    let o =
        k.apply("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w2\nspec:\n  color: red\n", &[]).await;
    assert!(!o.ok && o.stderr.contains("spec.size: Required value"), "{}", o.stderr);
    // kubectl asks for strict field validation: unknown fields are an error, not silently pruned.
    let o = k
        .apply("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w3\nspec:\n  size: 1\n  bogus: 1\n", &[])
        .await;
    assert!(!o.ok && o.stderr.contains("unknown field \"spec.bogus\""), "{}", o.stderr);

    k.ok(&["patch", "widget", "w1", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/size","value":7}]"#]).await;
    assert_eq!(k.ok(&["get", "widget", "w1", "-o", "jsonpath={.spec.size}"]).await, "7");
    k.ok(&["delete", "widget", "w1"]).await;
    let o = k.run(&["get", "widget", "w1"]).await;
    assert!(!o.ok && o.stderr.contains("NotFound"), "{}", o.stderr);
}

#[tokio::test]
async fn kubectl_get_certificaterequests_prints_cert_manager_columns() {
    let sim = KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let k = Kubectl::new(&sim);
    let cr = format!(
        "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: cr1\nspec:\n  request: {}\n  issuerRef:\n    name: my-issuer\n    kind: SimpleIssuer\n    group: testing.certbridge.io\n",
        b64(&fake_csr_pem())
    );
    let o = k.apply(&cr, &[]).await;
    assert!(o.ok, "{}", o.stderr);
    let api = cr_api(&sim.client(), "default");
    let status = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "status": {"conditions": [
        {"type": "Approved", "status": "True", "reason": "cert-manager.io", "message": "approved"},
        {"type": "Ready", "status": "False", "reason": "Pending", "message": "waiting"}]}});
    api.patch_status("cr1", &PatchParams::apply("test").force(), &Patch::Apply(status)).await.unwrap();
    let table = k.ok(&["get", "certificaterequests"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "APPROVED", "DENIED", "READY", "ISSUER", "REQUESTER", "AGE"],
        "{table}"
    );
    // Empty cells (Denied, Requester) collapse in whitespace splitting.
    assert_eq!(
        lines[1].split_whitespace().take(4).collect::<Vec<_>>(),
        ["cr1", "True", "False", "my-issuer"],
        "{table}"
    );
    let wide = k.ok(&["get", "cr", "-o", "wide"]).await;
    assert!(wide.lines().next().unwrap().contains("STATUS") && wide.contains("waiting"), "{wide}");

    // Invalid objects from the real schema.
    let o = k.apply(&cr.replace("cr1", "bad").replace("  request:", "  usages: [bogus]\n  request:"), &[]).await;
    assert!(!o.ok && o.stderr.contains("spec.usages[0]: Unsupported value: \"bogus\""), "{}", o.stderr);

    // kubectl wait on a condition flipping while it waits.
    let mut waiter =
        k.command(&["wait", "--for=condition=Ready", "certificaterequest/cr1", "--timeout=20s"]).spawn().unwrap();
    let ready = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "status": {"conditions": [
        {"type": "Approved", "status": "True", "reason": "cert-manager.io", "message": "approved"},
        {"type": "Ready", "status": "True", "reason": "Issued", "message": "done"}]}});
    api.patch_status("cr1", &PatchParams::apply("test").force(), &Patch::Apply(ready)).await.unwrap();
    let status = tokio::time::timeout(WAIT, waiter.wait()).await.unwrap().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn kubectl_creates_builtins_with_protobuf_bodies() {
    let sim = KubeSim::start().await.unwrap();
    let k = Kubectl::new(&sim);
    k.ok(&["create", "configmap", "cfg", "--from-literal=a=b"]).await;
    k.ok(&["create", "secret", "generic", "sec", "--from-literal=user=admin"]).await;
    k.ok(&["create", "namespace", "team-a"]).await;
    k.ok(&["create", "serviceaccount", "bot", "-n", "team-a"]).await;
    let cm: Api<ConfigMap> = Api::default_namespaced(sim.client());
    assert_eq!(cm.get("cfg").await.unwrap().data.unwrap()["a"], "b");
    let secrets: Api<Secret> = Api::default_namespaced(sim.client());
    assert_eq!(secrets.get("sec").await.unwrap().data.unwrap()["user"].0, b"admin");
    let token = k.ok(&["create", "token", "bot", "-n", "team-a", "--audience=vault"]).await;
    assert_eq!(token.trim().split('.').count(), 3);
    k.ok(&["label", "configmap", "cfg", "tier=web"]).await;
    assert!(k.ok(&["get", "cm", "-l", "tier=web", "-o", "name"]).await.contains("configmap/cfg"));
    k.ok(&["delete", "configmap", "cfg"]).await;
    k.ok(&["delete", "namespace", "team-a"]).await;
}

#[tokio::test]
async fn kubectl_certificate_approve_and_deny() {
    let sim = KubeSim::start().await.unwrap();
    let k = Kubectl::new(&sim);
    for name in ["to-approve", "to-deny"] {
        let csr = format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {}\n  signerName: example.com/signer\n  usages: [digital signature, client auth]\n",
            b64(&fake_csr_pem())
        );
        let o = k.apply(&csr, &[]).await;
        assert!(o.ok, "{}", o.stderr);
    }
    assert!(k.ok(&["certificate", "approve", "to-approve"]).await.contains("approved"));
    assert!(k.ok(&["certificate", "deny", "to-deny"]).await.contains("denied"));
    let api: Api<CertificateSigningRequest> = Api::all(sim.client());
    let a = api.get("to-approve").await.unwrap();
    let conds = a.status.unwrap().conditions.unwrap();
    assert_eq!((conds[0].type_.as_str(), conds[0].status.as_str()), ("Approved", "True"));
    let d = api.get("to-deny").await.unwrap();
    assert_eq!(d.status.unwrap().conditions.unwrap()[0].type_, "Denied");
    let table = k.ok(&["get", "csr"]).await;
    assert!(table.contains("Approved") && table.contains("Denied"), "{table}");
    // Field selector on signerName.
    let names = k.ok(&["get", "csr", "--field-selector=spec.signerName=example.com/signer", "-o", "name"]).await;
    assert_eq!(names.lines().count(), 2);
}

#[tokio::test]
async fn kubectl_server_side_apply_conflicts() {
    let sim = KubeSim::start().await.unwrap();
    let k = Kubectl::new(&sim);
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\ndata:\n  owner: alice\n";
    let o = k.apply(cm, &["--server-side", "--field-manager=alice"]).await;
    assert!(o.ok, "{}", o.stderr);
    let o = k.apply(&cm.replace("owner: alice", "owner: bob"), &["--server-side", "--field-manager=bob"]).await;
    assert!(!o.ok, "expected a conflict");
    assert!(
        o.stderr.contains("conflict") && o.stderr.contains("alice") && o.stderr.contains(".data.owner"),
        "{}",
        o.stderr
    );
    let o = k
        .apply(
            &cm.replace("owner: alice", "owner: bob"),
            &["--server-side", "--field-manager=bob", "--force-conflicts"],
        )
        .await;
    assert!(o.ok, "{}", o.stderr);
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let got = api.get("shared").await.unwrap();
    assert_eq!(got.data.unwrap()["owner"], "bob");
    let managers: Vec<String> = got.metadata.managed_fields.unwrap().into_iter().filter_map(|m| m.manager).collect();
    assert_eq!(managers, ["bob"]);
}

#[tokio::test]
async fn kubectl_get_watch_streams_table_rows() {
    use tokio::io::AsyncBufReadExt as _;
    let sim = KubeSim::start().await.unwrap();
    let k = Kubectl::new(&sim);
    k.ok(&["create", "configmap", "before"]).await;
    let mut child = k.command(&["get", "configmaps", "--watch"]).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().unwrap();
    assert_eq!(next().await.split_whitespace().collect::<Vec<_>>(), ["NAME", "DATA", "AGE"]);
    assert!(next().await.starts_with("before "));
    k.ok(&["create", "configmap", "during", "--from-literal=a=b"]).await;
    let row = next().await;
    assert_eq!(row.split_whitespace().take(2).collect::<Vec<_>>(), ["during", "1"], "{row}");
    child.kill().await.unwrap();
}
