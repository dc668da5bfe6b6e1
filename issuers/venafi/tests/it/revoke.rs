//! Revocation on delete through the real controllers on kube-sim, at the simulator's TPP
//! `certificates/revoke`: an annotated request gets the framework's finalizer and, once deleted,
//! its certificate is revoked once (by thumbprint) before it goes; a request without the
//! annotation gets no finalizer and no revoke; a revoke that fails transiently is retried.

use std::time::Duration;

use certbridge::api::CertificateRequest;
use certbridge::testing::{
    approve, certificate_request, create_certificate_request, create_issuer, generate_csr, install_crds,
    wait_issuer_ready, wait_ready,
};
use certbridge::{IssuerScope, KeyKind, Signer};
use certbridge_testkit::KubeSim;
use certbridge_venafi::sim::Fault;
use certbridge_venafi::{VenafiIssuerSpec, VenafiSigner};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::common::{Auth, NS, issuer, secrets, sim, spec};

const TIMEOUT: Duration = Duration::from_secs(30);
const ANNOTATION: &str = "venafi.certbridge.io/revoke-on-delete";

/// Creates and approves a request (the approval retried on a conflict with the controller's
/// finalizer write, as cmctl's user would), and waits until it is issued.
async fn issued(client: &kube::Client, name: &str, annotated: bool) -> CertificateRequest {
    let (csr, _key) = generate_csr(&KeyKind::EcP256, &[&format!("{name}.example.com")]).unwrap();
    let mut cr = certificate_request::<VenafiIssuerSpec>(NS, name, &csr, IssuerScope::Namespaced, "venafi");
    if annotated {
        cr.metadata.annotations = Some([(ANNOTATION.to_owned(), "true".to_owned())].into());
    }
    create_certificate_request(client, &cr).await.unwrap();
    let mut attempts = 0;
    while let Err(e) = approve(client, NS, name).await {
        attempts += 1;
        assert!(attempts < 10 && e.to_string().contains("Conflict"), "approve {name}: {e}");
    }
    wait_ready(client, NS, name, TIMEOUT).await.unwrap()
}

async fn delete_and_wait_gone(client: &kube::Client, name: &str) {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), NS);
    api.delete(name, &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while let Some(cr) = api.get_opt(name).await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "{name} still there: {:?}", cr.metadata.finalizers);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn leaf_thumbprint(cr: &CertificateRequest) -> String {
    let chain = String::from_utf8(cr.status.as_ref().unwrap().certificate.as_ref().unwrap().0.clone()).unwrap();
    certbridge_venafi::revoke::thumbprint(&chain).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_annotated_requests_are_revoked_at_tpp_once() {
    let mut opts = certbridge_testkit::SimOptions::default();
    opts.namespaces.push(NS.into());
    let kube = KubeSim::start_with(opts).await.unwrap();
    kube.install_cert_manager_crds().await.unwrap();
    let client = kube.client();
    install_crds::<VenafiIssuerSpec>(&client).await.unwrap();
    let venafi = sim().await;
    for s in secrets(&venafi, Auth::Password, NS) {
        Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &s).await.unwrap();
    }
    let signer = VenafiSigner::new();
    let handle = certbridge::runtime::start(signer, client.clone(), Default::default()).await.unwrap();
    create_issuer(&client, IssuerScope::Namespaced, NS, "venafi", &spec(&venafi, Auth::Password)).await.unwrap();
    wait_issuer_ready::<VenafiIssuerSpec>(&client, IssuerScope::Namespaced, NS, "venafi", TIMEOUT).await.unwrap();

    // Annotated: the finalizer, then one revoke at TPP by the leaf's thumbprint, then gone.
    let cr = issued(&client, "annotated", true).await;
    assert_eq!(cr.metadata.finalizers, Some(vec![ANNOTATION.to_owned()]));
    assert_eq!(venafi.calls("revoke"), 0, "nothing revoked while the request lives");
    delete_and_wait_gone(&client, "annotated").await;
    assert_eq!(venafi.calls("revoke"), 1);
    let revoked = venafi.revocations();
    assert_eq!(revoked.get(&leaf_thumbprint(&cr)), Some(&vec![5]), "{revoked:?}");

    // Not annotated: no finalizer, no revoke.
    let cr = issued(&client, "plain", false).await;
    assert_eq!(cr.metadata.finalizers, None);
    delete_and_wait_gone(&client, "plain").await;
    assert_eq!(venafi.calls("revoke"), 1);

    // TPP unavailable twice: retried with backoff, revoked once it answers.
    let cr = issued(&client, "flaky", true).await;
    for _ in 0..2 {
        venafi.push_fault("revoke", Fault::Status(503, "Service Unavailable".into(), json!({"Error": "busy"})));
    }
    delete_and_wait_gone(&client, "flaky").await;
    assert_eq!(venafi.calls("revoke"), 4, "two 503s, then the revocation");
    assert_eq!(venafi.revocations().get(&leaf_thumbprint(&cr)), Some(&vec![5]));
    assert_eq!(venafi.revocations().len(), 2);

    assert!(venafi.violations().is_empty(), "{:?}", venafi.violations());
    handle.shutdown().await;
    kube.shutdown().await;
}

/// TLS Protect Cloud's revocation is not documented in the protocol reference: Cloud issuers do
/// not offer it, so their requests never get the finalizer.
#[tokio::test]
async fn only_tpp_issuers_revoke() {
    let venafi = sim().await;
    let signer = VenafiSigner::new();
    assert!(signer.revokes(&issuer(spec(&venafi, Auth::Password))));
    assert!(!signer.revokes(&issuer(spec(&venafi, Auth::ApiKey))));
}
