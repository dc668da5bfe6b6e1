//! What is sent and what comes back: cert-manager's body (names, TTL), the chain ordered leaf
//! first with the root as CA, verified by openssl.

use std::time::Duration;

use certbridge::{SignContext, Signer};
use certbridge_vault::VaultSigner;
use certbridge_vault::spec::VaultAuth;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::*;

#[tokio::test]
async fn chain_is_leaf_then_intermediate_with_the_root_as_ca() {
    let (bao, pki) = openbao().await;
    let token = bao.create_token("1h", true, None).await.unwrap();
    let res = resources(vec![secret("t", &[("token", &token)])]);
    let issuer = issuer(spec(&bao, VaultAuth { token_secret_ref: Some(key_ref("t", "token")), ..Default::default() }));
    let signer = VaultSigner::dev();
    let csr_pem =
        csr(&["app.example.com", "www.example.com"], &["10.0.0.7"], &["spiffe://example.com/ns/team-a/sa/app"]);
    let mut ctx = SignContext::offline(res.clone());
    let issued = signer.sign(&request(&csr_pem, Duration::from_secs(48 * 3600)), &issuer, &mut ctx).await.unwrap();

    let blocks = pem_blocks(&issued.chain_pem);
    assert_eq!(blocks.len(), 2, "leaf + intermediate: {}", issued.chain_pem);
    assert_eq!(pem::parse(&blocks[1]).unwrap(), pem::parse(&pki.intermediate_pem).unwrap());
    assert_eq!(pem::parse(issued.ca_pem.as_deref().unwrap()).unwrap(), pem::parse(&pki.root_pem).unwrap());
    let out = openssl_verify(&pki.root_pem, &issued);
    assert!(out.contains("leaf.pem: OK"), "{out}");

    let der = pem::parse(&blocks[0]).unwrap().into_contents();
    let (_, leaf) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(leaf.subject().iter_common_name().next().unwrap().as_str().unwrap(), "app.example.com");
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    let names: Vec<String> = san
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(ip) => format!("IP:{ip:?}"),
            GeneralName::URI(u) => format!("URI:{u}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(names.contains(&"DNS:app.example.com".to_string()), "{names:?}");
    assert!(names.contains(&"DNS:www.example.com".to_string()), "{names:?}");
    assert!(names.contains(&"IP:[10, 0, 0, 7]".to_string()), "{names:?}");
    assert!(names.contains(&"URI:spiffe://example.com/ns/team-a/sa/app".to_string()), "{names:?}");
    // The TTL asked for (48 h) is what Vault used.
    let validity = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert!((48 * 3600 - 120..=48 * 3600 + 120).contains(&validity), "validity {validity} s");
    // The leaf carries the CSR's key.
    assert_eq!(issued.leaf_public_key_der().unwrap(), request(&csr_pem, Duration::ZERO).csr.public_key_der);
}

#[tokio::test]
async fn sign_verbatim_endpoint() {
    let (bao, pki) = openbao().await;
    let token = bao.create_token("1h", true, None).await.unwrap();
    let res = resources(vec![secret("t", &[("token", &token)])]);
    let mut s = spec(&bao, VaultAuth { token_secret_ref: Some(key_ref("t", "token")), ..Default::default() });
    s.path = format!("{}/sign-verbatim/{}", certbridge_vault::testing::PKI_MOUNT, certbridge_vault::testing::ROLE);
    let issuer = issuer(s);
    let signer = VaultSigner::dev();
    let issued = sign(&signer, &issuer, &res, &csr(&["anything.example.org"], &[], &[])).await.unwrap();
    openssl_verify(&pki.root_pem, &issued);
}

#[tokio::test]
async fn namespace_is_sent_as_x_vault_namespace() {
    let (bao, outer) = openbao().await;
    let (root_pem, token) = bao.namespace_with_pki("team-a").await.unwrap();
    assert_ne!(root_pem, outer.root_pem);
    let res = resources(vec![secret("t", &[("token", &token)])]);
    let mut s = spec(&bao, VaultAuth { token_secret_ref: Some(key_ref("t", "token")), ..Default::default() });
    s.namespace = Some("team-a".into());
    let in_namespace = issuer(s.clone());
    let signer = VaultSigner::dev();
    signer.check(&in_namespace, &res).await.unwrap();
    let issued = sign(&signer, &in_namespace, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    // A self-signed namespace root: the chain is the leaf alone and Vault's issuing_ca is the CA.
    assert_eq!(pem_blocks(&issued.chain_pem).len(), 1);
    assert_eq!(pem::parse(issued.ca_pem.as_deref().unwrap()).unwrap(), pem::parse(&root_pem).unwrap());
    openssl_verify(&root_pem, &issued);

    // Without the namespace the same path is the root namespace's PKI, where the token has no policy.
    s.namespace = None;
    let mut outside = issuer(s);
    outside.name = "outside".into();
    let err = sign(&signer, &outside, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap_err();
    assert!(err.reaction == Reaction::Permanent, "{err:?}");
    assert!(err.to_string().contains("HTTP 403"), "{err}");
}
