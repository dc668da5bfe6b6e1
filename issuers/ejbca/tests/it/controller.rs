//! The real controllers (`certbridge::runtime`) on the embedded API server, signing at the EJBCA
//! simulator: both auth modes and issuer scopes, each override annotation, permanent and
//! transient EJBCA errors, approval pending across a controller restart, and the issuer check
//! following a CA outage.

use std::time::Duration;

use certbridge::api::CertificateRequest;
use certbridge::runtime::{ControllerHandle, Options};
use certbridge::testing::{
    IssuerReady, approve, certificate_request, create_certificate_request, create_issuer, generate_csr, install_crds,
    issuer_api, wait_condition, wait_issuer_not_ready, wait_issuer_ready, wait_ready,
};
use certbridge::{IssuerScope, KeyKind};
use certbridge_ejbca::sim::{ApprovalMode, EjbcaSim, Fault};
use certbridge_ejbca::{EjbcaIssuerSpec, EjbcaSigner};
use certbridge_testkit::KubeSim;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};

use crate::common::{Mode, NS, openssl_verify, sim, spec};

/// Upper bound of every wait; the waits return as soon as the condition holds.
const TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// The namespace cluster issuers read their Secrets and ConfigMaps from (`Options::default()`).
const CLUSTER_NS: &str = "cert-manager";

/// kube-sim with cert-manager's and the EJBCA issuer's CRDs, the EJBCA simulator, and the
/// credentials Secret `creds` + CA bundle ConfigMap `ejbca-ca` where an issuer of `scope` reads them.
struct Cluster {
    kube: KubeSim,
    client: kube::Client,
    ejbca: EjbcaSim,
    scope: IssuerScope,
}

impl Cluster {
    async fn new(mode: Mode, scope: IssuerScope) -> Cluster {
        let mut opts = certbridge_testkit::SimOptions::default();
        opts.namespaces.push(NS.into());
        let kube = KubeSim::start_with(opts).await.expect("kube-sim starts");
        kube.install_cert_manager_crds().await.expect("cert-manager CRDs");
        let client = kube.client();
        install_crds::<EjbcaIssuerSpec>(&client).await.expect("EJBCA issuer CRDs");
        let ejbca = sim().await;
        let ns = Self::resource_ns(scope);
        let (type_, data) = match mode {
            Mode::Mtls => {
                let (cert, key) = ejbca.client_identity();
                ("kubernetes.io/tls", vec![("tls.crt", cert), ("tls.key", key)])
            }
            Mode::OAuth => {
                let (id, secret) = ejbca.oauth_client();
                (
                    "Opaque",
                    vec![
                        ("tokenUrl", ejbca.token_url()),
                        ("clientId", id),
                        ("clientSecret", secret),
                        ("scopes", "ejbca:enroll ejbca:read".into()),
                        ("audience", "ejbca".into()),
                    ],
                )
            }
        };
        let creds = Secret {
            metadata: ObjectMeta { name: Some("creds".into()), namespace: Some(ns.into()), ..Default::default() },
            type_: Some(type_.into()),
            data: Some(data.into_iter().map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes()))).collect()),
            ..Default::default()
        };
        Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &creds).await.expect("Secret");
        let bundle = ConfigMap {
            metadata: ObjectMeta { name: Some("ejbca-ca".into()), namespace: Some(ns.into()), ..Default::default() },
            data: Some([("ca.crt".to_owned(), ejbca.root_pem())].into()),
            ..Default::default()
        };
        Api::<ConfigMap>::namespaced(client.clone(), ns).create(&PostParams::default(), &bundle).await.expect("CM");
        Cluster { kube, client, ejbca, scope }
    }

    fn resource_ns(scope: IssuerScope) -> &'static str {
        match scope {
            IssuerScope::Namespaced => NS,
            IssuerScope::Cluster => CLUSTER_NS,
        }
    }

    async fn start(&self, signer: EjbcaSigner, opts: Options) -> ControllerHandle {
        certbridge::runtime::start(signer, self.client.clone(), opts).await.expect("controllers start")
    }

    /// Creates issuer `ejbca` with the simulator's default spec and waits until it is Ready.
    async fn issuer_ready(&self) {
        create_issuer(&self.client, self.scope, NS, "ejbca", &spec(&self.ejbca)).await.expect("issuer");
        wait_issuer_ready::<EjbcaIssuerSpec>(&self.client, self.scope, NS, "ejbca", TIMEOUT)
            .await
            .expect("issuer Ready");
    }

    /// Creates and approves request `name` for a fresh P-256 key with CN/DNS `cn`; returns the CSR.
    async fn request(&self, name: &str, cn: &str, annotations: &[(&str, &str)]) -> String {
        let (csr, _key) = generate_csr(&KeyKind::EcP256, &[cn]).expect("CSR");
        let mut cr = certificate_request::<EjbcaIssuerSpec>(NS, name, &csr, self.scope, "ejbca");
        cr.metadata.annotations = Some(annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        create_certificate_request(&self.client, &cr).await.expect("CertificateRequest");
        approve(&self.client, NS, name).await.expect("approve");
        csr
    }

    async fn get(&self, name: &str) -> CertificateRequest {
        Api::<CertificateRequest>::namespaced(self.client.clone(), NS).get(name).await.expect("get request")
    }

    /// pkcs10enroll bodies the simulator received for `csr`.
    fn enrolls_of(&self, csr: &str) -> Vec<serde_json::Value> {
        self.ejbca
            .requests()
            .into_iter()
            .filter(|r| r.operation == "enrollPkcs10Certificate")
            .filter_map(|r| r.body)
            .filter(|b| b["certificate_request"] == csr)
            .collect()
    }

    fn count(&self, operation: &str) -> usize {
        self.ejbca.requests().iter().filter(|r| r.operation == operation).count()
    }
}

/// Polls `f` until it returns `Some`, failing with `what` (and the last value seen) at the deadline.
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}; last: {last}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

fn ready(cr: &CertificateRequest) -> (String, String, String) {
    cr.condition("Ready")
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
        .unwrap_or_default()
}

fn chain_of(cr: &CertificateRequest) -> (String, String) {
    let status = cr.status.as_ref().expect("status");
    let chain = String::from_utf8(status.certificate.as_ref().expect("status.certificate").0.clone()).expect("PEM");
    let ca = String::from_utf8(status.ca.as_ref().expect("status.ca").0.clone()).expect("PEM");
    (chain, ca)
}

/// Asserts the issued chain: leaf for the CSR's key, then CA `ca`'s certificate, verified up to the
/// simulator's root by openssl, and `status.ca` = that root.
fn assert_issued(c: &Cluster, cr: &CertificateRequest, csr: &str, ca: &str) {
    let (chain, ca_pem) = chain_of(cr);
    let blocks = pem::parse_many(&chain).expect("chain PEM");
    assert_eq!(blocks.len(), 2, "leaf + issuing CA, no root in status.certificate");
    assert_eq!(blocks[1].contents(), c.ejbca.ca_chain_der(ca).expect("CA")[0].as_slice(), "issued by {ca}");
    let root = c.ejbca.root_pem();
    assert_eq!(
        pem::parse(&ca_pem).expect("status.ca").contents(),
        pem::parse(&root).expect("root").contents(),
        "status.ca is the root"
    );
    let issued = certbridge::Issued { chain_pem: chain.clone(), ca_pem: None };
    let csr_key = certbridge::Csr::from_pem(csr).expect("CSR").public_key_der;
    assert_eq!(issued.leaf_public_key_der().expect("leaf"), csr_key, "the leaf carries the CSR's key");
    openssl_verify(&chain, &root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_auth_modes_issue_through_the_controller() {
    for (mode, scope) in [(Mode::Mtls, IssuerScope::Namespaced), (Mode::OAuth, IssuerScope::Cluster)] {
        let c = Cluster::new(mode, scope).await;
        let handle = c.start(EjbcaSigner::new(), Options::default()).await;
        c.issuer_ready().await;
        let csr = c.request("web", "web.team-a.example", &[]).await;
        let cr = wait_ready(&c.client, NS, "web", TIMEOUT).await.unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(ready(&cr).1, "Issued");
        assert_issued(&c, &cr, &csr, "IssuingCA");
        assert_eq!((c.ejbca.enroll_calls(), c.ejbca.enrollments()), (1, 1), "{mode:?}");
        let body = &c.enrolls_of(&csr)[0];
        assert_eq!(body["username"], "web.team-a.example");
        assert_eq!(body["certificate_authority_name"], "IssuingCA");
        let want = if mode == Mode::Mtls { "mtls" } else { "bearer" };
        let auths: Vec<&str> = c.ejbca.requests().iter().filter(|r| r.operation != "token").map(|r| r.auth).collect();
        assert!(auths.iter().all(|a| *a == want), "{mode:?}: {auths:?}");
        assert_eq!(c.count("token") > 0, mode == Mode::OAuth);
        assert!(c.ejbca.violations().is_empty(), "{:?}", c.ejbca.violations());

        // No credential reaches the request, the issuer or the events.
        let (_, client_secret) = c.ejbca.oauth_client();
        let (_, key) = c.ejbca.client_identity();
        let key_line = key.lines().nth(1).expect("key body").to_owned();
        let issuer = issuer_api::<EjbcaIssuerSpec>(&c.client, scope, NS).get("ejbca").await.expect("issuer");
        // The final events are created in the background: wait for them so the search covers them.
        handle.flush_events().await;
        let events = Api::<k8s_openapi::api::events::v1::Event>::all(c.client.clone())
            .list(&ListParams::default())
            .await
            .expect("events");
        assert!(!events.items.is_empty(), "the controllers recorded events");
        let text = serde_json::to_string(&(&cr, &issuer, &events.items)).expect("json");
        assert!(!text.contains(&client_secret) && !text.contains(&key_line), "{mode:?}: a credential leaked");
        handle.shutdown().await;
        c.kube.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_override_annotation_reaches_ejbca() {
    let c = Cluster::new(Mode::Mtls, IssuerScope::Namespaced).await;
    let handle = c.start(EjbcaSigner::new(), Options::default()).await;
    c.issuer_ready().await;
    let cases = [
        ("ca", "certificateAuthorityName", "OtherCA", "certificate_authority_name"),
        ("cp", "certificateProfileName", "SERVER", "certificate_profile_name"),
        ("eep", "endEntityProfileName", "K8S", "end_entity_profile_name"),
        ("ee", "endEntityName", "shared-end-entity", "username"),
    ];
    let mut csrs = vec![];
    for (name, key, value, _) in cases {
        let annotation = format!("ejbca.certbridge.io/{key}");
        csrs.push(c.request(name, &format!("{name}.team-a.example"), &[(&annotation, value)]).await);
    }
    let defaults = [
        ("certificate_authority_name", "IssuingCA"),
        ("certificate_profile_name", "ENDUSER"),
        ("end_entity_profile_name", "EMPTY"),
    ];
    for ((name, key, value, field), csr) in cases.iter().zip(&csrs) {
        let cr = wait_ready(&c.client, NS, name, TIMEOUT).await.unwrap_or_else(|e| panic!("{key}: {e}"));
        let bodies = c.enrolls_of(csr);
        assert_eq!(bodies.len(), 1, "{key}: one enrollment");
        assert_eq!(bodies[0][*field], *value, "{key} reached EJBCA as {field}");
        for (other, default) in defaults.iter().filter(|(f, _)| f != field) {
            assert_eq!(bodies[0][*other], *default, "{key}: {other} keeps the spec's value");
        }
        if *field != "username" {
            assert_eq!(bodies[0]["username"], format!("{name}.team-a.example"), "{key}: default end-entity name");
        }
        assert_issued(&c, &cr, csr, if *name == "ca" { "OtherCA" } else { "IssuingCA" });
    }
    assert!(c.ejbca.violations().is_empty(), "{:?}", c.ejbca.violations());
    handle.shutdown().await;
    c.kube.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_fail_permanently_and_a_ca_outage_is_retried() {
    let c = Cluster::new(Mode::Mtls, IssuerScope::Namespaced).await;
    let handle = c.start(EjbcaSigner::new(), Options::default()).await;
    c.issuer_ready().await;

    // An unknown CA (EJBCA: 400 with its message) and a profile validation failure (422) fail
    // the request at once, with EJBCA's message verbatim.
    let unknown = c
        .request("unknown-ca", "u.team-a.example", &[("ejbca.certbridge.io/certificateAuthorityName", "NoSuchCA")])
        .await;
    let cr =
        wait_condition(&c.client, NS, "unknown-ca", "Ready", "False", Some("Failed"), TIMEOUT).await.expect("Failed");
    let (_, _, message) = ready(&cr);
    assert!(message.contains("HTTP 400: CA with name \"NoSuchCA\" doesn't exist (error_code 400)"), "{message}");
    assert!(cr.status.as_ref().and_then(|s| s.failure_time.as_ref()).is_some(), "failureTime set");
    c.ejbca.push_fault("enrollPkcs10Certificate", Fault::Status(422));
    let invalid = c.request("invalid", "i.team-a.example", &[]).await;
    let cr = wait_condition(&c.client, NS, "invalid", "Ready", "False", Some("Failed"), TIMEOUT).await.expect("Failed");
    assert!(ready(&cr).2.contains("HTTP 422: Simulated failure. (error_code 422)"), "{:?}", ready(&cr));

    // The CA goes offline (503): the request stays Pending and is retried, not failed.
    c.ejbca.set_ca_offline(true);
    let offline = c.request("offline", "o.team-a.example", &[]).await;
    let searches_before = c.count("searchCertificates");
    // First attempt enrolls (503); each retry first looks for a certificate (503 as well).
    let retries = eventually("two retries while the CA is offline", async || {
        let n = c.count("searchCertificates") - searches_before;
        if n >= 2 { Ok(n) } else { Err(format!("{n} retries")) }
    })
    .await;
    let cr = c.get("offline").await;
    let (status, reason, message) = ready(&cr);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Pending"), "{message}");
    // Either the request's own retry says so, or — once three transient sign errors in a row made
    // the framework re-check the issuer against the offline CA — the request waits for the issuer,
    // whose condition names the same 503. Which one depends on when the re-check lands.
    let retrying = message.contains("will retry") || message.contains("Waiting for issuer to become ready");
    assert!(retrying && message.contains("HTTP 503") && message.contains("offline"), "{message}");
    assert!(cr.status.as_ref().and_then(|s| s.failure_time.as_ref()).is_none());
    assert_eq!(c.enrolls_of(&offline).len(), 1, "retries look first; they do not enroll blindly ({retries} retries)");
    // Back online: the next retry finds nothing, enrolls once, and the request is issued.
    c.ejbca.set_ca_offline(false);
    let cr = wait_ready(&c.client, NS, "offline", TIMEOUT).await.expect("issued after the outage");
    assert_issued(&c, &cr, &offline, "IssuingCA");
    assert_eq!(c.enrolls_of(&offline).len(), 2, "the 503'd call and the one that issued");
    // The failed requests were never tried again.
    assert_eq!((c.enrolls_of(&unknown).len(), c.enrolls_of(&invalid).len()), (1, 1));
    assert_eq!(ready(&c.get("unknown-ca").await).1, "Failed");
    handle.shutdown().await;

    // An outage outlasting max_retry_duration fails the request (transient is not forever). Only
    // enrollment fails here: a restarted controller re-checks the issuer (which also searches), and
    // an issuer that is not Ready holds requests instead of failing them (the last test). EJBCA's
    // own 503 ends each enroll call, so every retry searches (nothing) and enrolls again.
    let opts = Options { max_retry_duration: Duration::from_secs(2), ..Options::default() };
    let handle = c.start(EjbcaSigner::new(), opts).await;
    for _ in 0..50 {
        c.ejbca.push_fault("enrollPkcs10Certificate", Fault::Status(503));
    }
    let long = c.request("long-outage", "l.team-a.example", &[]).await;
    let cr =
        wait_condition(&c.client, NS, "long-outage", "Ready", "False", Some("Failed"), TIMEOUT).await.expect("Failed");
    assert!(ready(&cr).2.contains("HTTP 503"), "{:?}", ready(&cr));
    assert!(!c.enrolls_of(&long).is_empty());
    assert_eq!(c.ejbca.enrollments(), 1, "only the request issued after the first outage");
    handle.shutdown().await;
    c.kube.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_pending_survives_a_controller_restart_and_issues_once() {
    for approval in [ApprovalMode::Finalize, ApprovalMode::Execute] {
        let c = Cluster::new(Mode::OAuth, IssuerScope::Namespaced).await;
        c.ejbca.set_approval(approval);
        let signer = || EjbcaSigner::new().with_pending_requeue(Duration::from_millis(200));
        let handle = c.start(signer(), Options::default()).await;
        c.issuer_ready().await;
        let csr = c.request("approval", "a.team-a.example", &[]).await;
        let cr =
            wait_condition(&c.client, NS, "approval", "EjbcaApproval", "False", Some("WaitingForApproval"), TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("{approval:?}: {e}"));
        assert_eq!(ready(&cr).1, "Pending", "{approval:?}");
        // The state to resume from is on the request itself.
        let annotations = cr.metadata.annotations.clone().unwrap_or_default();
        let state = |k: &str| annotations.get(&format!("state.ejbca.certbridge.io/{k}")).cloned();
        assert_eq!(state("phase").as_deref(), Some("approval-pending"), "{annotations:?}");
        assert_eq!(state("approval-id").is_some(), approval == ApprovalMode::Finalize, "{annotations:?}");
        handle.shutdown().await;

        // A new controller with a new signer (no memory of the first) picks the request up.
        let seen = c.ejbca.requests().len();
        let handle = c.start(signer(), Options::default()).await;
        let poll_op = if approval == ApprovalMode::Finalize { "finalizeEnrollment" } else { "searchCertificates" };
        eventually("the restarted controller polling EJBCA", async || {
            let polled = c.ejbca.requests()[seen..].iter().filter(|r| r.operation == poll_op).count();
            if polled >= 2 { Ok(()) } else { Err(format!("{polled} polls")) }
        })
        .await;
        assert_eq!(c.ejbca.enroll_calls(), 1, "{approval:?}: the restart did not enroll again");
        assert_eq!(c.ejbca.waiting_approvals(), 1);
        let cr = c.get("approval").await;
        assert_eq!(ready(&cr).1, "Pending");
        let waiting = cr.condition("EjbcaApproval").map(|c| (c.status.clone(), c.reason.clone()));
        assert_eq!(waiting, Some(("False".into(), Some("WaitingForApproval".into()))), "kept on every poll");

        c.ejbca.approve_all();
        let cr = wait_ready(&c.client, NS, "approval", TIMEOUT).await.unwrap_or_else(|e| panic!("{approval:?}: {e}"));
        assert_issued(&c, &cr, &csr, "IssuingCA");
        assert_eq!((c.ejbca.enroll_calls(), c.ejbca.enrollments()), (1, 1), "{approval:?}: exactly one enrollment");
        assert!(c.ejbca.violations().is_empty(), "{:?}", c.ejbca.violations());
        handle.shutdown().await;
        c.kube.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_check_follows_a_ca_outage_and_recovery() {
    let c = Cluster::new(Mode::Mtls, IssuerScope::Cluster).await;
    let opts = Options { issuer_recheck_interval: Duration::from_millis(300), ..Options::default() };
    let handle = c.start(EjbcaSigner::new(), opts).await;
    c.issuer_ready().await;
    c.ejbca.set_ca_offline(true);
    let IssuerReady { reason, message, .. } =
        wait_issuer_not_ready::<EjbcaIssuerSpec>(&c.client, IssuerScope::Cluster, NS, "ejbca", None, TIMEOUT)
            .await
            .expect("the issuer not Ready while the CA is offline");
    assert_eq!(reason, "Pending", "an outage is not a permanent issuer failure: {message}");
    assert!(message.contains("HTTP 503") && message.contains("offline"), "{message}");
    // Requests wait for the issuer instead of failing.
    let csr = c.request("during-outage", "d.team-a.example", &[]).await;
    c.ejbca.set_ca_offline(false);
    wait_issuer_ready::<EjbcaIssuerSpec>(&c.client, IssuerScope::Cluster, NS, "ejbca", TIMEOUT)
        .await
        .expect("Ready again after the CA recovered");
    let cr = wait_ready(&c.client, NS, "during-outage", TIMEOUT).await.expect("issued after recovery");
    assert_issued(&c, &cr, &csr, "IssuingCA");
    assert_eq!(c.ejbca.enrollments(), 1);
    handle.shutdown().await;
    c.kube.shutdown().await;
}

/// Issue 10 item 2: wrong credentials in the referenced Secret make the issuer not ready (never
/// Failed forever), and restoring them brings it back without touching the issuer or restarting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_credentials_secret_brings_the_issuer_back() {
    let c = Cluster::new(Mode::OAuth, IssuerScope::Namespaced).await;
    let handle = c.start(EjbcaSigner::new(), Options::default()).await;
    c.issuer_ready().await;
    let issuers = issuer_api::<EjbcaIssuerSpec>(&c.client, IssuerScope::Namespaced, NS);
    let generation = issuers.get("ejbca").await.expect("issuer").metadata.generation;
    let secrets = Api::<Secret>::namespaced(c.client.clone(), NS);
    let good = secrets.get("creds").await.expect("Secret");

    let mut broken = good.clone();
    broken.data.get_or_insert_default().insert("clientSecret".into(), ByteString(b"wrong-client-secret".to_vec()));
    secrets.replace("creds", &PostParams::default(), &broken).await.expect("break the Secret");
    let IssuerReady { reason, message, .. } =
        wait_issuer_not_ready::<EjbcaIssuerSpec>(&c.client, IssuerScope::Namespaced, NS, "ejbca", None, TIMEOUT)
            .await
            .expect("not Ready with wrong credentials");
    assert_eq!(reason, "Pending", "{message}");
    assert!(!message.contains("wrong-client-secret"), "{message}");

    let mut fixed = secrets.get("creds").await.expect("Secret");
    fixed.data = good.data.clone();
    secrets.replace("creds", &PostParams::default(), &fixed).await.expect("fix the Secret");
    wait_issuer_ready::<EjbcaIssuerSpec>(&c.client, IssuerScope::Namespaced, NS, "ejbca", TIMEOUT)
        .await
        .expect("Ready again once the Secret is fixed");
    assert_eq!(issuers.get("ejbca").await.expect("issuer").metadata.generation, generation, "issuer untouched");
    handle.shutdown().await;
    c.kube.shutdown().await;
}
