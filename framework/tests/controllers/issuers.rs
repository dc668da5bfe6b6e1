//! Issuer readiness through the real controller.

use certbridge::IssuerScope;
use certbridge::testing::{approve, certificate_request, create_certificate_request, issuer_api, secret, wait_ready};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::support::*;

async fn ready_condition(env: &Env, scope: IssuerScope, name: &str) -> (String, String, String) {
    let obj = issuer_api::<TestSpec>(&env.client, scope, NS).get(name).await.unwrap();
    let c = &obj.data["status"]["conditions"][0];
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    (s("status"), s("reason"), s("message"))
}

async fn wait_issuer(env: &Env, name: &str, status: &str, reason: &str) -> String {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (s, r, m) = ready_condition(env, IssuerScope::Namespaced, name).await;
        if s == status && r == reason {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "issuer {name}: {s}/{r}: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn secret_change_triggers_a_recheck_and_secrets_never_leak() {
    let env = Env::start().await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    secrets.create(&PostParams::default(), &secret(NS, "creds", None, &[("token", b"bad-s3cr3t")])).await.unwrap();
    let spec = TestSpec { secret_name: Some("creds".into()), profile: None };
    certbridge::testing::create_issuer(&env.client, IssuerScope::Namespaced, NS, "ca", &spec).await.unwrap();
    let message = wait_issuer(&env, "ca", "False", "Pending").await;
    assert_eq!(message, "Not ready yet: the CA rejected the credentials");
    // The check asked to be retried in an hour: only the Secret's change can wake it.
    let patch = serde_json::json!({"stringData": {"token": "good-s3cr3t"}});
    secrets.patch("creds", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_issuer(&env, "ca", "True", "Checked").await;

    // A missing key names the Secret and key, never a value.
    let other = TestSpec { secret_name: Some("empty".into()), profile: None };
    secrets
        .create(&PostParams::default(), &secret(NS, "empty", None, &[("password", b"hunter2-s3cr3t")]))
        .await
        .unwrap();
    certbridge::testing::create_issuer(&env.client, IssuerScope::Namespaced, NS, "other", &other).await.unwrap();
    let message = wait_issuer(&env, "other", "False", "Pending").await;
    assert_eq!(message, "Not ready yet: Secret \"team/empty\" has no key \"token\": add it or fix the reference");

    for (reason, note) in env.events(NS).await {
        assert!(!note.contains("s3cr3t"), "event {reason} leaks a secret: {note}");
    }
    for name in ["ca", "other"] {
        let (_, _, m) = ready_condition(&env, IssuerScope::Namespaced, name).await;
        assert!(!m.contains("s3cr3t"), "condition leaks a secret: {m}");
    }
    env.stop().await;
}

/// `check`'s Ready message and its error's reason reach the issuer's Ready condition; without a
/// message the default stays.
#[tokio::test]
async fn check_message_and_reason_reach_the_ready_condition() {
    let env = Env::start().await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    secrets.create(&PostParams::default(), &secret(NS, "creds", None, &[("token", b"expired-s3cr3t")])).await.unwrap();
    let spec = TestSpec { secret_name: Some("creds".into()), profile: None };
    certbridge::testing::create_issuer(&env.client, IssuerScope::Namespaced, NS, "ca", &spec).await.unwrap();
    let message = wait_issuer(&env, "ca", "False", "AuthFailed").await;
    assert_eq!(message, "Not ready yet: the CA refused the token");
    let patch = serde_json::json!({"stringData": {"token": "good-s3cr3t"}});
    secrets.patch("creds", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let message = wait_issuer(&env, "ca", "True", "Checked").await;
    assert_eq!(message, "the CA accepted the token in Secret \"creds\"");
    let events = env.events(NS).await;
    assert!(
        events.iter().any(|(r, note)| r == "Checked" && note == &message),
        "the Checked event carries the message: {events:?}"
    );
    certbridge::testing::create_issuer(&env.client, IssuerScope::Namespaced, NS, "plain", &TestSpec::default())
        .await
        .unwrap();
    let message = wait_issuer(&env, "plain", "True", "Checked").await;
    assert_eq!(message, "Succeeded checking the issuer");
    env.stop().await;
}

#[tokio::test]
async fn invalid_spec_fails_until_the_spec_changes() {
    let env = Env::start().await;
    let spec = TestSpec { secret_name: None, profile: Some("gold plated".into()) };
    certbridge::testing::create_issuer(&env.client, IssuerScope::Namespaced, NS, "ca", &spec).await.unwrap();
    let message = wait_issuer(&env, "ca", "False", "Failed").await;
    assert_eq!(
        message,
        "Failed permanently: invalid issuer spec: spec.profile \"gold plated\" must not contain spaces"
    );
    let checks = env.signer.check_calls();
    assert_eq!(checks, 0, "the adapter's check never ran on an invalid spec");
    let api = issuer_api::<TestSpec>(&env.client, IssuerScope::Namespaced, NS);
    let patch = serde_json::json!({"spec": {"profile": "gold"}});
    api.patch("ca", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_issuer(&env, "ca", "True", "Checked").await;
    env.stop().await;
}

#[tokio::test]
async fn issuer_not_ready_from_sign_flips_the_issuer_and_the_request_resumes() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    let checks_before = env.signer.check_calls();
    env.signer.push([Step::IssuerNotReady("the CA token expired")]);
    let (pem, _) = csr("resume.example.com");
    let req = certificate_request::<TestSpec>(NS, "resume", &pem, IssuerScope::Namespaced, "ca");
    create_certificate_request(&env.client, &req).await.unwrap();
    approve(&env.client, NS, "resume").await.unwrap();
    wait_ready(&env.client, NS, "resume", TIMEOUT).await.unwrap();
    assert_eq!(env.signer.sign_calls(), 2, "held, then signed once the issuer was Ready again");
    assert!(env.signer.check_calls() > checks_before, "the issuer was checked again");
    let events = env.events(NS).await;
    assert!(
        events.iter().any(|(r, n)| r == "RetryableError" && n == "Not ready yet: the CA token expired"),
        "the issuer was flipped to not ready: {events:?}"
    );
    env.stop().await;
}
