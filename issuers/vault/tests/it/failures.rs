//! Refusals and outages: role refusals are permanent with Vault's own text; a sealed or stopped
//! server makes the issuer not ready (signing transient), and the same signer recovers.

use std::time::Duration;

use certbridge::{SignContext, Signer};
use certbridge_vault::VaultSigner;
use certbridge_vault::spec::VaultAuth;

use crate::*;

async fn token_issuer(bao: &OpenBao) -> (Issuer<VaultSpec>, Resources) {
    let token = bao.create_token("1h", true, None).await.unwrap();
    let res = resources(vec![secret("t", &[("token", &token)])]);
    (issuer(spec(bao, VaultAuth { token_secret_ref: Some(key_ref("t", "token")), ..Default::default() })), res)
}

#[tokio::test]
async fn role_refusals_are_permanent_with_vaults_message() {
    let (bao, _) = openbao().await;
    let (issuer, res) = token_issuer(&bao).await;
    let signer = VaultSigner::dev();

    let err = sign(&signer, &issuer, &res, &csr(&["evil.example.org"], &[], &[])).await.unwrap_err();
    assert!(err.reaction == Reaction::Permanent, "{err:?}");
    assert!(err.to_string().contains("HTTP 400"), "{err}");
    assert!(err.to_string().contains("evil.example.org not allowed by this role"), "{err}");

    // Longer than the role's max TTL: Vault truncates to the max (720 h) rather than refusing.
    let mut ctx = SignContext::offline(res.clone());
    let long = request(&csr(&["app.example.com"], &[], &[]), Duration::from_secs(2000 * 3600));
    let issued = signer.sign(&long, &issuer, &mut ctx).await.unwrap();
    assert_eq!(validity_hours(&issued), 720);

    // Longer than the intermediate CA lives (1 y), with a role whose max allows it: refused.
    bao.api(
        reqwest::Method::POST,
        "pki/roles/long",
        Some(serde_json::json!({"allowed_domains": ["example.com"], "allow_subdomains": true, "max_ttl": "43800h", "key_type": "any"})),
    )
    .await
    .unwrap();
    let mut long_role = issuer.clone();
    long_role.spec.path = "pki/sign/long".into();
    long_role.generation = 3;
    let long = request(&csr(&["app.example.com"], &[], &[]), Duration::from_secs(2 * 8760 * 3600));
    let err = signer.sign(&long, &long_role, &mut ctx).await.unwrap_err();
    assert!(err.reaction == Reaction::Permanent, "{err:?}");
    assert!(err.to_string().contains("HTTP 400"), "{err}");
    assert!(err.to_string().contains("beyond the expiration of the CA certificate"), "{err}");

    // A URI the role does not allow.
    let err =
        sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &["https://example.com/x"])).await.unwrap_err();
    assert!(err.reaction == Reaction::Permanent, "{err:?}");
    assert!(err.to_string().contains("URI Subject Alternative Names"), "{err}");

    // An unknown role.
    let mut s = issuer.spec.clone();
    s.path = "pki/sign/nope".into();
    let mut other = issuer.clone();
    other.spec = s;
    other.generation = 2;
    let err = sign(&signer, &other, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap_err();
    assert!(err.reaction == Reaction::Permanent, "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
}

fn validity_hours(issued: &certbridge::Issued) -> i64 {
    let der = pem::parse(&issued.chain_pem).unwrap().into_contents();
    let (_, leaf) =
        <x509_parser::prelude::X509Certificate as x509_parser::prelude::FromDer<_>>::from_der(&der).unwrap();
    (leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp() + 1800) / 3600
}

#[tokio::test]
async fn a_ca_request_is_refused_instead_of_returning_a_leaf() {
    let (bao, _) = openbao().await;
    let (issuer, res) = token_issuer(&bao).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["ca.example.com".to_string()]).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let csr_pem = p.serialize_request(&key).unwrap().pem().unwrap();
    let req = SignRequest::from_csr_pem::<&str>(&csr_pem, Duration::from_secs(3600), true, &[]).unwrap();
    let err = VaultSigner::dev().sign(&req, &issuer, &mut SignContext::offline(res)).await.unwrap_err();
    assert!(err.reaction == Reaction::Permanent, "{err:?}");
    assert!(err.to_string().contains("isCA=true"), "{err}");
}

#[tokio::test]
async fn an_invalid_path_is_refused_before_calling_vault() {
    let (bao, _) = openbao().await;
    let (mut issuer, res) = token_issuer(&bao).await;
    issuer.spec.path = "pki/issue/web".into();
    let err = certbridge::IssuerSpec::validate(&issuer.spec).unwrap_err();
    assert!(err.contains("spec.path \"pki/issue/web\""), "{err}");
    let err = sign(&VaultSigner::dev(), &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap_err();
    assert!(err.reaction == Reaction::Permanent, "{err:?}");
}

#[tokio::test]
async fn sealed_then_unsealed_without_a_new_signer() {
    let (bao, pki) = openbao().await;
    let (issuer, res) = token_issuer(&bao).await;
    let signer = VaultSigner::dev();
    signer.check(&issuer, &res).await.unwrap();

    bao.seal().await.unwrap();
    let err = signer.check(&issuer, &res).await.unwrap_err();
    assert!(err.reaction == Reaction::IssuerNotReady, "{err:?}");
    assert!(err.to_string().contains("is sealed"), "{err}");
    let err = sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap_err();
    assert!(err.reaction == Reaction::Transient, "{err:?}");

    bao.unseal().await.unwrap();
    signer.check(&issuer, &res).await.unwrap();
    let issued = sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    openssl_verify(&pki.root_pem, &issued);
}

#[tokio::test]
async fn down_then_restarted_without_a_new_signer() {
    let (mut bao, pki) = openbao().await;
    let (role_id, secret_id) = bao.approle("certbridge", "1h", "24h").await.unwrap();
    let res = resources(vec![secret("approle", &[("secretId", &secret_id)])]);
    let issuer = issuer(spec(
        &bao,
        VaultAuth {
            app_role: Some(certbridge_vault::spec::AppRoleAuth {
                path: "approle".into(),
                role_id,
                secret_ref: SecretKeyRef { name: "approle".into(), key: None },
            }),
            ..Default::default()
        },
    ));
    let signer = VaultSigner::dev();
    signer.check(&issuer, &res).await.unwrap();

    bao.stop().await.unwrap();
    let err = signer.check(&issuer, &res).await.unwrap_err();
    assert!(err.reaction == Reaction::IssuerNotReady, "{err:?}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    let err = sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap_err();
    assert!(err.reaction == Reaction::Transient, "{err:?}");

    // Restarted: sealed first (not ready), then unsealed (ready) with the same signer.
    bao.restart().await.unwrap();
    signer.check(&issuer, &res).await.unwrap();
    let issued = sign(&signer, &issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    openssl_verify(&pki.root_pem, &issued);
    // The token from before the restart was kept: one login in all.
    assert_eq!(bao.token_count().await.unwrap(), 1);
}
