//! Each auth method end to end against OpenBao: check (health + authentication), then a signature.

use certbridge::Signer;
use certbridge_vault::VaultSigner;
use certbridge_vault::spec::{AppRoleAuth, ClientCertificateAuth, VaultAuth};

use crate::*;

#[tokio::test]
async fn token_from_a_secret() {
    let (bao, pki) = openbao().await;
    let token = bao.create_token("1h", true, None).await.unwrap();
    let res = resources(vec![secret("vault-token", &[("token", &format!("  {token}\n"))])]);
    let issuer =
        issuer(spec(&bao, VaultAuth { token_secret_ref: Some(key_ref("vault-token", "token")), ..Default::default() }));
    let signer = VaultSigner::dev();
    signer.check(&issuer, &res).await.unwrap();
    let issued = sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    openssl_verify(&pki.root_pem, &issued);
}

#[tokio::test]
async fn approle() {
    let (bao, pki) = openbao().await;
    let (role_id, secret_id) = bao.approle("certbridge", "1h", "24h").await.unwrap();
    let res = resources(vec![secret("approle", &[("secretId", &secret_id)])]);
    let auth = VaultAuth {
        app_role: Some(AppRoleAuth {
            path: "approle".into(),
            role_id,
            secret_ref: SecretKeyRef { name: "approle".into(), key: None },
        }),
        ..Default::default()
    };
    let issuer = issuer(spec(&bao, auth));
    let signer = VaultSigner::dev();
    signer.check(&issuer, &res).await.unwrap();
    let issued = sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    openssl_verify(&pki.root_pem, &issued);

    // A missing Secret makes the issuer not ready, naming it.
    let mut missing = issuer.clone();
    missing.generation = 3;
    let err = signer.check(&missing, &resources(vec![])).await.unwrap_err();
    assert_eq!(err, SignError::issuer_not_ready("Secret \"team-a/approle\" not found: create it or fix the reference"));

    // A wrong secret ID makes the issuer not ready, with Vault's reason and without the value.
    let res = resources(vec![secret("approle", &[("secretId", "0000-not-the-secret-id")])]);
    let mut other = issuer.clone();
    other.generation = 2;
    let err = signer.check(&other, &res).await.unwrap_err();
    assert!(err.reaction == Reaction::IssuerNotReady, "{err:?}");
    assert!(err.to_string().contains("AppRole login") && err.to_string().contains("HTTP 400"), "{err}");
    assert!(!err.to_string().contains("0000-not-the-secret-id"), "{err}");
}

#[tokio::test]
async fn client_certificate_over_tls_with_ca_bundle_and_server_name() {
    let (bao, pki) = openbao().await;
    bao.cert_auth("certbridge").await.unwrap();
    let res =
        resources(vec![secret("vault-client", &[("tls.crt", &bao.client.cert_pem), ("tls.key", &bao.client.key_pem)])]);
    let auth = VaultAuth {
        client_certificate: Some(ClientCertificateAuth {
            mount_path: Some("/v1/auth/cert".into()),
            name: Some("certbridge".into()),
            secret_name: Some("vault-client".into()),
        }),
        ..Default::default()
    };
    let mut s = spec(&bao, auth);
    s.server = bao.tls_addr();
    s.ca_bundle = Some(b64(&bao.listener_ca_pem));
    let signer = VaultSigner::dev();
    let tls_issuer = issuer(s.clone());
    signer.check(&tls_issuer, &res).await.unwrap();
    let issued = sign(&signer, &tls_issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    openssl_verify(&pki.root_pem, &issued);

    // `localhost` is not in the listener's certificate: refused unless serverName names what is.
    s.server = format!("https://localhost:{}", bao.tls_port());
    let mut by_name = issuer(s.clone());
    by_name.name = "by-name".into();
    let err = signer.check(&by_name, &res).await.unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    s.server_name = Some("openbao.test".into());
    let mut by_name = issuer(s.clone());
    by_name.name = "by-server-name".into();
    signer.check(&by_name, &res).await.unwrap();
    sign(&signer, &by_name, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();

    // Without the CA bundle the system roots do not trust the test CA.
    s.ca_bundle = None;
    let mut untrusted = issuer(s);
    untrusted.name = "untrusted".into();
    let err = signer.check(&untrusted, &res).await.unwrap_err();
    assert!(err.reaction == Reaction::IssuerNotReady, "{err:?}");
}

#[tokio::test]
async fn approle_over_mtls_with_ca_bundle_secret() {
    let (bao, pki) = openbao().await;
    let (role_id, secret_id) = bao.approle("certbridge", "1h", "24h").await.unwrap();
    let res = resources(vec![
        secret("approle", &[("id", &secret_id)]),
        secret("vault-ca", &[("ca.crt", &bao.listener_ca_pem)]),
        secret("mtls", &[("tls.crt", &bao.client.cert_pem), ("tls.key", &bao.client.key_pem)]),
    ]);
    let auth = VaultAuth {
        app_role: Some(AppRoleAuth { path: "/approle/".into(), role_id, secret_ref: key_ref("approle", "id") }),
        ..Default::default()
    };
    let mut s = spec(&bao, auth);
    s.server = bao.tls_addr();
    s.ca_bundle_secret_ref = Some(SecretKeyRef { name: "vault-ca".into(), key: None });
    s.client_cert_secret_ref = Some(SecretKeyRef { name: "mtls".into(), key: None });
    s.client_key_secret_ref = Some(SecretKeyRef { name: "mtls".into(), key: None });
    let issuer = issuer(s);
    let signer = VaultSigner::dev();
    signer.check(&issuer, &res).await.unwrap();
    let issued = sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    openssl_verify(&pki.root_pem, &issued);
    // The check read every referenced Secret, so the controller watches them.
    let refs: Vec<String> = res.references().into_iter().map(|(_, _, n)| n).collect();
    assert_eq!(refs, vec!["approle", "mtls", "vault-ca"]);
}
