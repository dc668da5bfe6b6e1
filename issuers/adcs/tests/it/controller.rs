//! The real controllers (`certbridge::runtime`) on the embedded API server, signing at the certsrv
//! simulator: NTLM and Kerberos (real MIT KDC) with EPA required and channel binding (namespaced issuers) and a
//! client certificate (cluster issuer); pending → approved across a controller restart, submitted once; pending → denied and
//! template errors Failed; refused credentials holding the issuer not ready; the binary's offline
//! `check -f` / `sign -f`.

use std::process::Command;
use std::time::Duration;

use certbridge::api::CertificateRequest;
use certbridge::runtime::{ControllerHandle, Options};
use certbridge::testing::{
    approve, certificate_request, create_certificate_request, create_issuer, generate_csr, install_crds,
    wait_condition, wait_issuer_not_ready, wait_issuer_ready, wait_ready,
};
use certbridge::{IssuerScope, KeyKind};
use certbridge_adcs::spec::ChannelBindingMode;
use certbridge_adcs::{AdcsIssuerSpec, AdcsSigner};
use certbridge_testkit::KubeSim;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams};

use crate::common::*;

const TIMEOUT: Duration = Duration::from_secs(30);
/// The namespace cluster issuers read their Secrets and ConfigMaps from (`Options::default()`).
const CLUSTER_NS: &str = "cert-manager";

struct Cluster {
    kube: KubeSim,
    client: kube::Client,
    sim: Sim,
    scope: IssuerScope,
}

impl Cluster {
    async fn new(opts: SimOpts, scope: IssuerScope, password: &str) -> Cluster {
        let mut kopts = certbridge_testkit::SimOptions::default();
        kopts.namespaces.push(NS.into());
        let kube = KubeSim::start_with(kopts).await.expect("kube-sim starts");
        kube.install_cert_manager_crds().await.expect("cert-manager CRDs");
        let client = kube.client();
        install_crds::<AdcsIssuerSpec>(&client).await.expect("AD CS issuer CRDs");
        let sim = Sim::start(opts);
        let ns = match scope {
            IssuerScope::Namespaced => NS,
            IssuerScope::Cluster => CLUSTER_NS,
        };
        let (secrets, cms) = objects(&sim, ns, password);
        for s in secrets {
            Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &s).await.expect("Secret");
        }
        for c in cms {
            Api::<ConfigMap>::namespaced(client.clone(), ns).create(&PostParams::default(), &c).await.expect("CM");
        }
        Cluster { kube, client, sim, scope }
    }

    async fn start(&self) -> ControllerHandle {
        certbridge::runtime::start(AdcsSigner::new(), self.client.clone(), Options::default())
            .await
            .expect("controllers start")
    }

    async fn issuer(&self, spec: &AdcsIssuerSpec) {
        create_issuer(&self.client, self.scope, NS, "adcs", spec).await.expect("issuer");
    }

    async fn issuer_ready(&self, spec: &AdcsIssuerSpec) {
        self.issuer(spec).await;
        wait_issuer_ready::<AdcsIssuerSpec>(&self.client, self.scope, NS, "adcs", TIMEOUT).await.expect("issuer Ready");
    }

    async fn request(&self, name: &str) -> String {
        let (csr, _key) = generate_csr(&KeyKind::EcP256, &[&format!("{name}.team-a.example")]).expect("CSR");
        let cr = certificate_request::<AdcsIssuerSpec>(NS, name, &csr, self.scope, "adcs");
        create_certificate_request(&self.client, &cr).await.expect("CertificateRequest");
        approve(&self.client, NS, name).await.expect("approve");
        csr
    }
}

fn message(cr: &CertificateRequest) -> String {
    cr.condition("Ready").and_then(|c| c.message.clone()).unwrap_or_default()
}

fn assert_issued(sim: &Sim, cr: &CertificateRequest) {
    let status = cr.status.as_ref().expect("status");
    let chain = String::from_utf8(status.certificate.as_ref().expect("status.certificate").0.clone()).unwrap();
    let ca = String::from_utf8(status.ca.as_ref().expect("status.ca").0.clone()).unwrap();
    assert_eq!(
        pem::parse(&ca).unwrap().contents(),
        pem::parse(&sim.root_pem).unwrap().contents(),
        "status.ca is the root"
    );
    openssl_verify(&chain, &sim.root_pem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntlm_and_kerberos_epa_required_and_client_certificate_issue_through_the_controller() {
    for (opts, scope) in [
        (SimOpts { epa: "required", ..Default::default() }, IssuerScope::Namespaced),
        (SimOpts { mode: Mode::Cert, ..Default::default() }, IssuerScope::Cluster),
        (SimOpts { mode: Mode::Kerberos, epa: "required", ..Default::default() }, IssuerScope::Namespaced),
    ] {
        let c = Cluster::new(opts.clone(), scope, PASSWORD).await;
        let handle = c.start().await;
        let mut s = spec(&c.sim);
        if let Some(n) = s.auth.ntlm.as_mut() {
            n.channel_binding = Some(ChannelBindingMode::Required);
        }
        if let Some(k) = s.auth.kerberos.as_mut() {
            k.channel_binding = Some(ChannelBindingMode::Required);
        }
        c.issuer_ready(&s).await;
        let csr = c.request("web").await;
        let cr = wait_ready(&c.client, NS, "web", TIMEOUT).await.unwrap_or_else(|e| panic!("{opts:?}: {e}"));
        assert_issued(&c.sim, &cr);
        assert_eq!(c.sim.enrollments(&csr), 1);
        // The final events are created in the background: wait for them so the search covers them.
        handle.flush_events().await;
        let events = Api::<k8s_openapi::api::events::v1::Event>::all(c.client.clone())
            .list(&ListParams::default())
            .await
            .expect("events");
        let key_line = c.sim.client_key_pem.lines().nth(1).unwrap().to_owned();
        let text = serde_json::to_string(&(&cr, &events.items)).unwrap();
        assert!(!text.contains(PASSWORD) && !text.contains(&key_line), "a credential leaked");
        if let Some(k) = &c.sim.kdc {
            assert!(!text.contains(&k.env["KRB5_PASSWORD"]), "the Kerberos password leaked");
        }
        handle.shutdown().await;
        c.kube.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_survives_a_controller_restart_and_issues_once() {
    let c = Cluster::new(SimOpts::default(), IssuerScope::Namespaced, PASSWORD).await;
    let handle = c.start().await;
    let mut s = spec(&c.sim);
    s.template = "Manual".into();
    c.issuer_ready(&s).await;
    let csr = c.request("manual").await;
    let cr = wait_condition(&c.client, NS, "manual", "AdcsApproval", "False", Some("WaitingForApproval"), TIMEOUT)
        .await
        .expect("waiting for approval");
    assert!(message(&cr).contains("waiting for a certificate manager"), "{}", message(&cr));
    let req_id: u64 = cr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("state.adcs.certbridge.io/req-id"))
        .expect("req-id persisted")
        .parse()
        .unwrap();
    handle.shutdown().await;

    // A new controller process: it only polls.
    let handle = c.start().await;
    c.sim.approve(req_id);
    let cr = wait_ready(&c.client, NS, "manual", TIMEOUT).await.expect("issued after approval");
    assert_issued(&c.sim, &cr);
    assert_eq!(c.sim.enrollments(&csr), 1, "submitted exactly once across the restart");

    // Denied by a certificate manager: Failed with the disposition verbatim.
    c.request("denied").await;
    let cr = wait_condition(&c.client, NS, "denied", "AdcsApproval", "False", Some("WaitingForApproval"), TIMEOUT)
        .await
        .expect("pending");
    let id: u64 = cr.metadata.annotations.as_ref().unwrap()["state.adcs.certbridge.io/req-id"].parse().unwrap();
    c.sim.deny(id);
    let cr = wait_condition(&c.client, NS, "denied", "Ready", "False", Some("Failed"), TIMEOUT).await.expect("Failed");
    assert!(message(&cr).contains("Denied by CORP\\caadmin"), "{}", message(&cr));
    handle.shutdown().await;
    c.kube.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_errors_fail_and_refused_credentials_hold_the_issuer() {
    let c = Cluster::new(SimOpts::default(), IssuerScope::Namespaced, PASSWORD).await;
    let handle = c.start().await;
    let mut s = spec(&c.sim);
    s.template = "NoSuchTemplate".into();
    c.issuer_ready(&s).await;
    c.request("unknown").await;
    let cr = wait_condition(&c.client, NS, "unknown", "Ready", "False", Some("Failed"), TIMEOUT).await.expect("Failed");
    assert!(message(&cr).contains("\"NoSuchTemplate\"") && message(&cr).contains("0x80094800"), "{}", message(&cr));
    handle.shutdown().await;
    c.kube.shutdown().await;

    let c = Cluster::new(SimOpts::default(), IssuerScope::Namespaced, "wrong-password").await;
    let handle = c.start().await;
    c.issuer(&spec(&c.sim)).await;
    let cond = wait_issuer_not_ready::<AdcsIssuerSpec>(&c.client, c.scope, NS, "adcs", None, TIMEOUT)
        .await
        .expect("issuer not ready");
    assert!(format!("{cond:?}").contains("credentials refused"), "{cond:?}");
    assert!(!format!("{cond:?}").contains("wrong-password"));
    handle.shutdown().await;
    c.kube.shutdown().await;
}

#[tokio::test]
async fn offline_check_and_sign_from_a_manifest() {
    let sim = Sim::start(SimOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_certbridge-adcs");
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let manifest = format!(
        r#"apiVersion: adcs.certbridge.io/v1alpha1
kind: AdcsIssuer
metadata: {{name: adcs, namespace: {NS}}}
spec:
  url: {url}
  template: WebServer
  auth:
    ntlm: {{secretName: creds, channelBinding: required}}
  caBundle: {{configMapRef: {{name: adcs-ca, key: ca.crt}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: {NS}}}
stringData: {{username: "{DOMAIN}\\{USER}", password: "{PASSWORD}"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: adcs-ca, namespace: {NS}}}
data:
  ca.crt: |
{root}"#,
        url = sim.url(),
        root = indent(&sim.root_pem),
    );
    std::fs::write(dir.path().join("issuer.yaml"), manifest).unwrap();
    let (csr, _) = generate_csr(&KeyKind::EcP256, &["app.example.com"]).unwrap();
    std::fs::write(dir.path().join("app.csr"), &csr).unwrap();
    let out = Command::new(bin).current_dir(dir.path()).args(["check", "-f", "issuer.yaml"]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    let out = Command::new(bin)
        .current_dir(dir.path())
        .args(["sign", "-f", "issuer.yaml", "--csr", "app.csr", "--duration", "24h", "--ca-out", "ca.pem"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let chain = String::from_utf8(out.stdout).unwrap();
    openssl_verify(&chain, &sim.root_pem);
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    assert_eq!(pem::parse(&ca).unwrap().contents(), pem::parse(&sim.root_pem).unwrap().contents());
    assert_eq!(sim.enrollments(&csr), 1);
}
