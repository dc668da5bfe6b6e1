//! cert-manager CertificateRequests through the real controller.

use std::time::Duration;

use certbridge::IssuerScope;
use certbridge::api::{CertificateRequest, CertificateRequestCondition};
use certbridge::testing::{approve, certificate_request, create_certificate_request, deny, wait_condition, wait_ready};
use kube::api::{Api, PostParams};

use crate::support::*;

fn cr(name: &str, scope: IssuerScope, issuer: &str) -> (CertificateRequest, Vec<u8>) {
    let (pem, key) = csr(&format!("{name}.example.com"));
    (certificate_request::<TestSpec>(NS, name, &pem, scope, issuer), key)
}

async fn create_approved(env: &Env, cr: &CertificateRequest) {
    create_certificate_request(&env.client, cr).await.unwrap();
    approve(&env.client, NS, cr.metadata.name.as_deref().unwrap()).await.unwrap();
}

#[tokio::test]
async fn issued_by_both_kinds_keeps_approval_and_emits_events() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ns-ca", TestSpec::default()).await;
    env.ready_issuer(IssuerScope::Cluster, "cl-ca", TestSpec::default()).await;
    for (name, scope, issuer) in [("a", IssuerScope::Namespaced, "ns-ca"), ("b", IssuerScope::Cluster, "cl-ca")] {
        let (req, key) = cr(name, scope, issuer);
        create_approved(&env, &req).await;
        let done = wait_ready(&env.client, NS, name, TIMEOUT).await.unwrap();
        let status = done.status.clone().unwrap();
        assert_eq!(leaf_key(&status.certificate.unwrap().0), key, "the leaf carries the CSR's key");
        assert_eq!(String::from_utf8(status.ca.unwrap().0).unwrap(), env.signer.ca.root.cert_pem());
        let ready = done.condition("Ready").unwrap();
        assert_eq!(ready.reason.as_deref(), Some("Issued"));
        assert_eq!(ready.message.as_deref(), Some("Succeeded signing the CertificateRequest"));
        // Our server-side applies never removed the approver's condition.
        let approved = done.condition("Approved").unwrap();
        assert_eq!((approved.status.as_str(), approved.reason.as_deref()), ("True", Some("KubectlCertManager")));
        assert!(status.failure_time.is_none());
    }
    let events = env.events(NS).await;
    assert!(events.iter().any(|(r, n)| r == "Issued" && n == "Succeeded signing the CertificateRequest"), "{events:?}");
    assert_eq!(env.signer.sign_calls(), 2);
    let metrics = env.handle.as_ref().unwrap().metrics_text();
    for line in [
        "certbridge_requests_total{kind=\"CertificateRequest\",issuer_kind=\"TestIssuer\",issuer=\"team/ns-ca\",result=\"issued\"} 1",
        "certbridge_requests_total{kind=\"CertificateRequest\",issuer_kind=\"TestClusterIssuer\",issuer=\"cl-ca\",result=\"issued\"} 1",
        "certbridge_issuer_ready{kind=\"TestClusterIssuer\",namespace=\"\",name=\"cl-ca\"} 1",
        "certbridge_sign_duration_seconds_count{issuer_kind=\"TestIssuer\",issuer=\"team/ns-ca\",result=\"issued\"} 1",
        "certbridge_sign_duration_seconds_count{issuer_kind=\"TestClusterIssuer\",issuer=\"cl-ca\",result=\"issued\"} 1",
        "certbridge_leader 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    env.stop().await;
}

#[tokio::test]
async fn denied_unapproved_and_invalid_requests() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    let (denied, _) = cr("denied", IssuerScope::Namespaced, "ca");
    create_certificate_request(&env.client, &denied).await.unwrap();
    deny(&env.client, NS, "denied").await.unwrap();
    let (waiting, _) = cr("waiting", IssuerScope::Namespaced, "ca");
    create_certificate_request(&env.client, &waiting).await.unwrap();
    let (invalid, _) = cr("invalid", IssuerScope::Namespaced, "ca");
    let api: Api<CertificateRequest> = Api::namespaced(env.client.clone(), NS);
    let mut invalid = api.create(&PostParams::default(), &invalid).await.unwrap();
    invalid.status.get_or_insert_with(Default::default).conditions.push(CertificateRequestCondition {
        type_: "InvalidRequest".into(),
        status: "True".into(),
        reason: Some("BadConfig".into()),
        message: Some("set by another controller".into()),
        ..Default::default()
    });
    api.replace_status("invalid", &PostParams::default(), &invalid).await.unwrap();
    approve(&env.client, NS, "invalid").await.unwrap();

    let done = wait_condition(&env.client, NS, "denied", "Ready", "False", Some("Denied"), TIMEOUT).await.unwrap();
    let ready = done.condition("Ready").unwrap();
    assert_eq!(ready.message.as_deref(), Some("The CertificateRequest was denied by an approval controller"));
    assert!(done.status.as_ref().unwrap().failure_time.is_some(), "a denied request gets a failure time");

    // A request approved after the others proves the controller has processed the whole queue.
    let (last, _) = cr("last", IssuerScope::Namespaced, "ca");
    create_approved(&env, &last).await;
    wait_ready(&env.client, NS, "last", TIMEOUT).await.unwrap();
    assert!(api.get("waiting").await.unwrap().condition("Ready").is_none(), "an unapproved request is untouched");
    assert!(api.get("invalid").await.unwrap().condition("Ready").is_none(), "InvalidRequest=True is left alone");
    assert_eq!(env.signer.sign_calls(), 1, "only the approved, valid request was signed");
    env.stop().await;
}

#[tokio::test]
async fn waits_for_a_missing_issuer_then_issues() {
    let env = Env::start().await;
    let (req, _) = cr("early", IssuerScope::Namespaced, "late-ca");
    create_approved(&env, &req).await;
    let pending = wait_condition(&env.client, NS, "early", "Ready", "False", Some("Pending"), TIMEOUT).await.unwrap();
    assert_eq!(
        pending.condition("Ready").unwrap().message.as_deref(),
        Some("testissuers.test.certbridge.io \"late-ca\" not found. Waiting for it to be created.")
    );
    env.ready_issuer(IssuerScope::Namespaced, "late-ca", TestSpec::default()).await;
    wait_ready(&env.client, NS, "early", TIMEOUT).await.unwrap();
    assert!(env.events(NS).await.iter().any(|(r, _)| r == "WaitingForIssuerExist"));
    env.stop().await;
}

#[tokio::test]
async fn transient_errors_are_retried_then_fail_after_the_max_retry_duration() {
    let signer = TestSigner::new(Ca::new());
    signer.set_default(Step::Transient("connection reset by the CA"));
    let opts = certbridge::runtime::Options { max_retry_duration: Duration::from_secs(3), ..options() };
    let env = Env::start_with(signer, opts).await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    let (req, _) = cr("flaky", IssuerScope::Namespaced, "ca");
    create_approved(&env, &req).await;
    let failed = wait_condition(&env.client, NS, "flaky", "Ready", "False", Some("Failed"), TIMEOUT).await.unwrap();
    assert_eq!(
        failed.condition("Ready").unwrap().message.as_deref(),
        Some("Failed permanently to sign CertificateRequest: connection reset by the CA")
    );
    assert!(failed.status.unwrap().failure_time.is_some());
    assert!(env.signer.sign_calls() >= 2, "retried before failing: {} calls", env.signer.sign_calls());
    let events = env.events(NS).await;
    assert!(events.iter().any(|(r, _)| r == "RetryableError"), "{events:?}");
    assert!(events.iter().any(|(r, _)| r == "PermanentError"), "{events:?}");
    env.stop().await;
}

#[tokio::test]
async fn bad_csr_and_wrong_key_fail_naming_the_problem() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    // A leaf for another key is the CA's fault (issue 12): retried, never written, and the
    // retry's right certificate is issued.
    env.signer.push([Step::WrongKey]);
    let (req, key) = cr("wrong-key", IssuerScope::Namespaced, "ca");
    create_approved(&env, &req).await;
    let done = wait_ready(&env.client, NS, "wrong-key", TIMEOUT).await.unwrap();
    assert_eq!(leaf_key(&done.status.unwrap().certificate.unwrap().0), key, "only the right leaf is written");
    let events = env.events(NS).await;
    assert!(
        events.iter().any(|(r, n)| r == "RetryableError" && n.contains("does not match the CSR's public key")),
        "{events:?}"
    );

    // The CSR asks for a CA certificate (BasicConstraints cA=true) but the request does not.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["ca.example.com".into()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let bad = certificate_request::<TestSpec>(NS, "bad-csr", &pem, IssuerScope::Namespaced, "ca");
    create_approved(&env, &bad).await;
    let failed = wait_condition(&env.client, NS, "bad-csr", "Ready", "False", Some("Failed"), TIMEOUT).await.unwrap();
    let message = failed.condition("Ready").unwrap().message.clone().unwrap();
    assert!(message.contains("BasicConstraints say isCA=true but the request has isCA=false"), "{message}");
    assert_eq!(env.signer.sign_calls(), 2, "an invalid request never reaches the signer");
    env.stop().await;
}

#[tokio::test]
async fn pending_state_survives_a_controller_restart() {
    let ca = Ca::new();
    let signer = TestSigner::new(ca.clone());
    signer.set_default(Step::AsyncSubmit);
    let mut env = Env::start_with(signer, options()).await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    let (req, key) = cr("async", IssuerScope::Namespaced, "ca");
    create_approved(&env, &req).await;
    let pending = wait_condition(&env.client, NS, "async", "Ready", "False", Some("Pending"), TIMEOUT).await.unwrap();
    let message = pending.condition("Ready").unwrap().message.clone().unwrap();
    assert!(message.starts_with("Signing still in progress. Reason: Signing still in progress. Reason:"), "{message}");
    let api: Api<CertificateRequest> = Api::namespaced(env.client.clone(), NS);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let annotations = api.get("async").await.unwrap().metadata.annotations.unwrap_or_default();
        if annotations.get("state.test.certbridge.io/order").map(String::as_str) == Some("o-1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "state annotation not written: {annotations:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A new controller process: it must pick the request up with its saved state.
    let first = env.signer.clone();
    let restarted = TestSigner::new(ca.clone());
    restarted.set_default(Step::AsyncSubmit);
    env.restart(restarted.clone(), options()).await;
    assert_eq!(first.sign_calls(), 1, "saving state did not re-run sign before the requested requeue");
    let done = wait_ready(&env.client, NS, "async", TIMEOUT).await.unwrap();
    assert_eq!(leaf_key(&done.status.unwrap().certificate.unwrap().0), key);
    assert_eq!(ca.submissions.load(std::sync::atomic::Ordering::SeqCst), 1, "the CA got the request once");
    let seen = restarted.script.seen_state.lock().unwrap().clone();
    assert_eq!(seen.first().and_then(|s| s.get("order")).map(String::as_str), Some("o-1"), "{seen:?}");
    env.stop().await;
}

#[tokio::test]
async fn signer_conditions_are_set_next_to_ready() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    env.signer.set_default(Step::WithCondition("waiting in the CA queue"));
    let (req, _) = cr("queued", IssuerScope::Namespaced, "ca");
    create_approved(&env, &req).await;
    let queued = wait_condition(&env.client, NS, "queued", "CAQueue", "True", Some("Queued"), TIMEOUT).await.unwrap();
    assert_eq!(queued.condition("CAQueue").unwrap().message.as_deref(), Some("waiting in the CA queue"));
    assert_eq!(queued.condition("Ready").unwrap().reason.as_deref(), Some("Pending"));
    env.stop().await;
}

/// `SignError::with_condition`'s contract: the condition lasts only while `sign` keeps returning it.
#[tokio::test]
async fn a_signer_condition_not_returned_again_is_removed() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    // The first pass sets CAQueue; that change wakes the request, and the second pass answers
    // without the condition.
    env.signer.push([Step::WithCondition("waiting in the CA queue"), Step::Permanent("the CA refused it")]);
    let (req, _) = cr("dropped", IssuerScope::Namespaced, "ca");
    create_approved(&env, &req).await;
    let failed = wait_condition(&env.client, NS, "dropped", "Ready", "False", Some("Failed"), TIMEOUT).await.unwrap();
    let events = env.events(NS).await;
    assert!(events.iter().any(|(_, n)| n.ends_with("waiting in the CA queue")), "the first pass ran: {events:?}");
    assert_eq!(env.signer.sign_calls(), 2);
    assert!(failed.condition("CAQueue").is_none(), "{:?}", failed.status);
    env.stop().await;
}
