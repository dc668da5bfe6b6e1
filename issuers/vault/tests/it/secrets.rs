//! No secret (token, secret ID, key, JWT) in any log line or error, on success and failure paths.

use certbridge::Signer;
use certbridge_vault::VaultSigner;
use certbridge_vault::spec::{AppRoleAuth, VaultAuth};

use crate::*;

/// OpenBao service tokens look like `s.` + 24 characters.
fn looks_like_a_token(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
        .find(|w| w.len() == 26 && w.starts_with("s.") && w[2..].chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_owned)
}

#[tokio::test]
async fn no_secret_in_logs_or_errors() {
    let (bao, _) = openbao().await;
    let logs = LogCapture::start();
    let (role_id, secret_id) = bao.approle("certbridge", "1h", "24h").await.unwrap();
    let make_res = |static_token: &str| {
        resources(vec![
            secret("approle", &[("secretId", &secret_id)]),
            secret("bad-approle", &[("secretId", "bad-secret-id-value-123")]),
            secret("t", &[("token", static_token)]),
            secret("client", &[("tls.crt", &bao.client.cert_pem), ("tls.key", &bao.client.key_pem)]),
        ])
    };
    let approle = |name: &str| VaultAuth {
        app_role: Some(AppRoleAuth {
            path: "approle".into(),
            role_id: role_id.clone(),
            secret_ref: SecretKeyRef { name: name.into(), key: None },
        }),
        ..Default::default()
    };
    let signer = VaultSigner::dev();
    let mut errors = Vec::new();
    let first_token = bao.create_token("1h", true, None).await.unwrap();
    let res = make_res(&first_token);

    // Success paths.
    let good = issuer(spec(&bao, approle("approle")));
    signer.check(&good, &res).await.unwrap();
    sign(&signer, &good, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    // Refusal, revocation and re-login paths.
    errors.push(sign(&signer, &good, &res, &csr(&["evil.example.org"], &[], &[])).await.unwrap_err());
    bao.revoke_all_tokens().await.unwrap();
    sign(&signer, &good, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    // A bad secret ID.
    let mut bad = issuer(spec(&bao, approle("bad-approle")));
    bad.name = "bad".into();
    errors.push(signer.check(&bad, &res).await.unwrap_err());
    errors.push(sign(&signer, &bad, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap_err());
    // A revoked static token; mTLS material on an unreachable server.
    let static_token = bao.create_token("1h", true, None).await.unwrap();
    let res = make_res(&static_token);
    let mut st = issuer(spec(&bao, VaultAuth { token_secret_ref: Some(key_ref("t", "token")), ..Default::default() }));
    st.name = "static".into();
    sign(&signer, &st, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    bao.revoke_all_tokens().await.unwrap();
    errors.push(sign(&signer, &st, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap_err());
    let mut mtls = st.clone();
    mtls.name = "mtls".into();
    mtls.spec.server = "https://127.0.0.1:1".into();
    mtls.spec.client_cert_secret_ref = Some(SecretKeyRef { name: "client".into(), key: None });
    mtls.spec.client_key_secret_ref = Some(SecretKeyRef { name: "client".into(), key: None });
    errors.push(signer.check(&mtls, &res).await.unwrap_err());

    let mut seen = logs.text();
    for e in &errors {
        seen.push_str(&format!("\n{e}\n{e:?}"));
    }
    assert!(seen.contains("obtained a Vault token"), "logs were captured: {seen}");
    let key_body = bao.client.key_pem.lines().nth(1).unwrap();
    for secret in
        [secret_id.as_str(), "bad-secret-id-value-123", &first_token, &static_token, bao.root_token(), key_body]
    {
        assert!(!seen.contains(secret), "a secret leaked into logs or errors:\n{seen}");
    }
    assert_eq!(looks_like_a_token(&seen), None, "{seen}");
}
