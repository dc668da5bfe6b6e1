//! Revocation on delete: the `<group>/revoke-on-delete` finalizer on annotated requests only, one
//! revoke per deletion, transient failures retried, permanent ones releasing the request.

use std::time::Duration;

use certbridge::api::CertificateRequest;
use certbridge::testing::{approve, certificate_request, create_certificate_request, wait_ready};
use certbridge::{IssuerScope, SignError};
use kube::api::{Api, DeleteParams};

use crate::support::*;

const FINALIZER: &str = "test.certbridge.io/revoke-on-delete";

/// Creates, approves and waits for an issued request; `annotation` is the revoke-on-delete value.
async fn issued(env: &Env, name: &str, annotation: Option<&str>) -> CertificateRequest {
    let (pem, _) = csr(&format!("{name}.example.com"));
    let mut cr = certificate_request::<TestSpec>(NS, name, &pem, IssuerScope::Namespaced, "ca");
    if let Some(v) = annotation {
        cr.metadata.annotations = Some([(FINALIZER.to_owned(), v.to_owned())].into());
    }
    create_certificate_request(&env.client, &cr).await.unwrap();
    // `approve` replaces the status read just before, as cmctl does: a conflict with the
    // controller's finalizer write is retried, as cmctl's user would.
    let mut attempts = 0;
    while let Err(e) = approve(&env.client, NS, name).await {
        attempts += 1;
        assert!(attempts < 10 && e.to_string().contains("Conflict"), "approve {name}: {e}");
    }
    wait_ready(&env.client, NS, name, TIMEOUT).await.unwrap()
}

fn finalizers(cr: &CertificateRequest) -> Vec<String> {
    cr.metadata.finalizers.clone().unwrap_or_default()
}

/// Deletes the request and waits until it is gone.
async fn delete_and_wait_gone(env: &Env, name: &str) {
    let api: Api<CertificateRequest> = Api::namespaced(env.client.clone(), NS);
    api.delete(name, &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while let Some(cr) = api.get_opt(name).await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "{name} still there: finalizers {:?}", finalizers(&cr));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_annotated_request_is_revoked_once_when_deleted() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    let cr = issued(&env, "keep", Some("true")).await;
    assert_eq!(finalizers(&cr), vec![FINALIZER.to_owned()], "added before signing");
    let certificate = String::from_utf8(cr.status.unwrap().certificate.unwrap().0).unwrap();
    assert_eq!(env.signer.revoke_calls(), 0, "nothing revoked while the request lives");
    delete_and_wait_gone(&env, "keep").await;
    assert_eq!(env.signer.revoke_calls(), 1);
    assert_eq!(*env.signer.script.revoked.lock().unwrap(), vec![certificate], "the issued chain is revoked");
    let events = env.events(NS).await;
    assert!(events.iter().any(|(r, _)| r == "Revoked"), "{events:?}");
    env.stop().await;
}

#[tokio::test]
async fn requests_without_the_annotation_never_get_the_finalizer() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    for (name, annotation) in [("plain", None), ("off", Some("false"))] {
        let cr = issued(&env, name, annotation).await;
        assert!(finalizers(&cr).is_empty(), "{name}: {:?}", finalizers(&cr));
        delete_and_wait_gone(&env, name).await;
    }
    assert_eq!(env.signer.revoke_calls(), 0);
    env.stop().await;
}

#[tokio::test]
async fn transient_revoke_failures_are_retried_until_it_succeeds() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    issued(&env, "flaky", Some("true")).await;
    env.signer
        .script
        .revoke_failures
        .lock()
        .unwrap()
        .extend([SignError::transient("CA answered 503"), SignError::issuer_not_ready("CA token expired")]);
    delete_and_wait_gone(&env, "flaky").await;
    assert_eq!(env.signer.revoke_calls(), 3, "two failures, then the revocation");
    assert_eq!(env.signer.script.revoked.lock().unwrap().len(), 1);
    env.stop().await;
}

#[tokio::test]
async fn a_permanent_revoke_failure_releases_the_request_with_a_warning() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    issued(&env, "refused", Some("true")).await;
    env.signer.script.revoke_failures.lock().unwrap().push_back(SignError::permanent("certificate unknown to the CA"));
    delete_and_wait_gone(&env, "refused").await;
    assert_eq!(env.signer.revoke_calls(), 1, "never retried");
    let events = env.events(NS).await;
    assert!(
        events.iter().any(|(r, n)| r == "RevokeFailed" && n.contains("NOT revoked") && n.contains("unknown to the CA")),
        "{events:?}"
    );
    env.stop().await;
}

/// Whoever may write a request's status could put another team's certificate there: only a
/// certificate for the request's own CSR key is revoked.
#[tokio::test]
async fn a_certificate_for_another_key_is_never_revoked() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    let mut cr = issued(&env, "swapped", Some("true")).await;
    let (other, _) = env.signer.ca.root.leaf(&certbridge::KeyKind::EcP256, &["victim.example.com"]).unwrap();
    cr.status.as_mut().unwrap().certificate = Some(k8s_openapi::ByteString(other.into_bytes()));
    let api: Api<CertificateRequest> = Api::namespaced(env.client.clone(), NS);
    api.replace_status("swapped", &Default::default(), &cr).await.unwrap();
    delete_and_wait_gone(&env, "swapped").await;
    assert_eq!(env.signer.revoke_calls(), 0);
    let events = env.events(NS).await;
    assert!(
        events.iter().any(|(r, n)| r == "RevokeFailed" && n.contains("not for the key of this request's CSR")),
        "{events:?}"
    );
    env.stop().await;
}

/// The same for a Kubernetes CSR (cluster-scoped, served by the cluster issuer kind).
#[tokio::test]
async fn an_annotated_kubernetes_csr_is_revoked_once_when_deleted() {
    use certbridge::testing::{
        approve_kubernetes_csr, cluster_signer_name, create_kubernetes_csr, kubernetes_csr,
        wait_kubernetes_csr_certificate,
    };
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Cluster, "ca", TestSpec::default()).await;
    let (pem, _) = csr("k8s.example.com");
    let mut request = kubernetes_csr("k1", &pem, &cluster_signer_name::<TestSpec>("ca"));
    request.metadata.annotations = Some([(FINALIZER.to_owned(), "true".to_owned())].into());
    create_kubernetes_csr(&env.client, &request).await.unwrap();
    let mut attempts = 0;
    while let Err(e) = approve_kubernetes_csr(&env.client, "k1").await {
        attempts += 1;
        assert!(attempts < 10 && e.to_string().contains("Conflict"), "approve k1: {e}");
    }
    let chain = wait_kubernetes_csr_certificate(&env.client, "k1", TIMEOUT).await.unwrap();
    let api: Api<CertificateSigningRequest> = Api::all(env.client.clone());
    assert_eq!(api.get("k1").await.unwrap().metadata.finalizers, Some(vec![FINALIZER.to_owned()]));
    api.delete("k1", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while api.get_opt("k1").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "k1 still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*env.signer.script.revoked.lock().unwrap(), vec![chain]);
    env.stop().await;
}
