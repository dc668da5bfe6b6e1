//! Token caching: one login for many requests (no lease growth), renewal near the end of a
//! renewable token, a new login when the token expired or was revoked.

use std::time::Duration;

use certbridge::Signer;
use certbridge_vault::VaultSigner;
use certbridge_vault::spec::{AppRoleAuth, VaultAuth};

use crate::*;

async fn approle_issuer(bao: &OpenBao, ttl: &str, max_ttl: &str) -> (Issuer<VaultSpec>, Resources) {
    let (role_id, secret_id) = bao.approle("certbridge", ttl, max_ttl).await.unwrap();
    let res = resources(vec![secret("approle", &[("secretId", &secret_id)])]);
    let auth = VaultAuth {
        app_role: Some(AppRoleAuth {
            path: "approle".into(),
            role_id,
            secret_ref: SecretKeyRef { name: "approle".into(), key: None },
        }),
        ..Default::default()
    };
    (issuer(spec(bao, auth)), res)
}

#[tokio::test]
async fn one_login_serves_many_requests_and_checks() {
    let (bao, _) = openbao().await;
    let (issuer, res) = approle_issuer(&bao, "1h", "24h").await;
    let signer = VaultSigner::dev();
    let logs = LogCapture::start();
    signer.check(&issuer, &res).await.unwrap();
    for i in 0..10 {
        sign(&signer, &issuer, &res, &csr(&[&format!("app{i}.example.com")], &[], &[])).await.unwrap();
    }
    signer.check(&issuer, &res).await.unwrap();
    // cert-manager would have logged in 12 times here (cert-manager#1430).
    assert_eq!(bao.token_count().await.unwrap(), 1);
    assert_eq!(logs.count("obtained a Vault token"), 1, "{}", logs.text());

    // A new spec generation gets its own session and token.
    let mut next = issuer.clone();
    next.generation = 2;
    sign(&signer, &next, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    assert_eq!(bao.token_count().await.unwrap(), 2);
}

#[tokio::test]
async fn concurrent_requests_share_one_login() {
    let (bao, _) = openbao().await;
    let (issuer, res) = approle_issuer(&bao, "1h", "24h").await;
    let signer = std::sync::Arc::new(VaultSigner::dev());
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (signer, issuer, res) = (signer.clone(), issuer.clone(), res.clone());
        tasks.push(tokio::spawn(async move {
            sign(&signer, &issuer, &res, &csr(&[&format!("c{i}.example.com")], &[], &[])).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(bao.token_count().await.unwrap(), 1);
}

#[tokio::test]
async fn an_expired_token_is_replaced_by_a_new_login() {
    let (bao, pki) = openbao().await;
    // Tokens live 3 s and cannot be renewed past that.
    let (issuer, res) = approle_issuer(&bao, "3s", "3s").await;
    let signer = VaultSigner::dev();
    let logs = LogCapture::start();
    sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let issued = sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    openssl_verify(&pki.root_pem, &issued);
    assert_eq!(logs.count("obtained a Vault token"), 2, "{}", logs.text());
}

#[tokio::test]
async fn a_renewable_token_is_renewed_not_replaced() {
    let (bao, _) = openbao().await;
    let (issuer, res) = approle_issuer(&bao, "6s", "1h").await;
    let signer = VaultSigner::dev();
    let logs = LogCapture::start();
    sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    // Past two thirds of its TTL, then past its original end.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    assert_eq!(logs.count("obtained a Vault token"), 1, "{}", logs.text());
    assert!(logs.count("renewed the Vault token") >= 1, "{}", logs.text());
    assert_eq!(bao.token_count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_revoked_token_is_replaced_transparently_once() {
    let (bao, _) = openbao().await;
    let (issuer, res) = approle_issuer(&bao, "1h", "24h").await;
    let signer = VaultSigner::dev();
    let logs = LogCapture::start();
    sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    assert_eq!(bao.revoke_all_tokens().await.unwrap(), 1);
    sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    assert_eq!(logs.count("Vault denied the cached token"), 1, "{}", logs.text());
    assert_eq!(logs.count("obtained a Vault token"), 2, "{}", logs.text());
    // The check also notices a revoked token and logs in again.
    bao.revoke_all_tokens().await.unwrap();
    signer.check(&issuer, &res).await.unwrap();
    assert_eq!(logs.count("obtained a Vault token"), 3, "{}", logs.text());
}

#[tokio::test]
async fn a_revoked_static_token_fails_after_one_retry() {
    let (bao, _) = openbao().await;
    let token = bao.create_token("1h", true, None).await.unwrap();
    let res = resources(vec![secret("t", &[("token", &token)])]);
    let issuer = issuer(spec(&bao, VaultAuth { token_secret_ref: Some(key_ref("t", "token")), ..Default::default() }));
    let signer = VaultSigner::dev();
    sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    bao.revoke_all_tokens().await.unwrap();
    let err = sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap_err();
    assert!(err.reaction == Reaction::IssuerNotReady, "{err:?}");
    assert!(err.to_string().contains("did not accept the token in Secret \"team-a/t\""), "{err}");
    let err = signer.check(&issuer, &res).await.unwrap_err();
    assert!(err.reaction == Reaction::IssuerNotReady, "{err:?}");
    assert!(!err.to_string().contains(&token));
}

#[tokio::test]
async fn a_rotated_secret_is_used_at_the_next_check() {
    let (bao, _) = openbao().await;
    let (issuer, res) = approle_issuer(&bao, "1h", "24h").await;
    let signer = VaultSigner::dev();
    let logs = LogCapture::start();
    signer.check(&issuer, &res).await.unwrap();
    // The operator rotates the secret ID and destroys the old one; the spec does not change.
    let new = bao.api(reqwest::Method::POST, "auth/approle/role/certbridge/secret-id", None).await.unwrap();
    let new_id = new["data"]["secret_id"].as_str().unwrap();
    let rotated = resources(vec![secret("approle", &[("secretId", new_id)])]);
    signer.check(&issuer, &rotated).await.unwrap();
    assert_eq!(logs.count("obtained a Vault token"), 2, "{}", logs.text());
    sign(&signer, &issuer, &rotated, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    // An unchanged Secret keeps the token.
    signer.check(&issuer, &rotated).await.unwrap();
    assert_eq!(logs.count("obtained a Vault token"), 2, "{}", logs.text());
}
