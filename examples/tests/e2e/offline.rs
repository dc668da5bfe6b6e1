//! The signer on its own, with the Secret served from memory (what `check -f` / `sign -f` do).

use std::time::Duration;

use certbridge::issuer::{Issuer, IssuerScope};
use certbridge::{Reaction, Resources, SignContext, SignError, SignRequest, Signer};
use certbridge_example_ca::{LocalCaSigner, LocalCaSpec};

use crate::support::{TestCa, openssl, tls_secret};

fn issuer(secret_name: &str) -> Issuer<LocalCaSpec> {
    Issuer {
        name: "ca".into(),
        namespace: Some("team-a".into()),
        scope: IssuerScope::Namespaced,
        uid: String::new(),
        generation: 1,
        annotations: Default::default(),
        spec: LocalCaSpec { secret_name: secret_name.into() },
    }
}

async fn check(secret: k8s_openapi::api::core::v1::Secret) -> Result<certbridge::Ready, SignError> {
    LocalCaSigner.check(&issuer("ca-key-pair"), &Resources::from_objects("team-a", vec![secret], vec![])).await
}

#[tokio::test]
async fn signs_a_chain_openssl_verifies_for_each_ca_key_type() {
    for alg in [&["ec", "-pkeyopt", "ec_paramgen_curve:P-256"][..], &["rsa:2048"], &["ed25519"]] {
        let ca = TestCa::new(alg);
        let resources = Resources::from_objects("team-a", vec![ca.secret("team-a", "ca-key-pair")], vec![]);
        let csr = ca.csr("web", &["web.example.com", "www.example.com"]);
        let req = SignRequest::from_csr_pem(&csr, Duration::from_secs(3600), false, &["server auth"]).unwrap();
        let mut ctx = SignContext::offline(resources.clone());
        LocalCaSigner.check(&issuer("ca-key-pair"), &resources).await.unwrap();
        let issued = LocalCaSigner.sign(&req, &issuer("ca-key-pair"), &mut ctx).await.unwrap();
        assert_eq!(issued.ca_pem.as_deref().map(str::trim), Some(ca.read("ca.crt").trim()), "{alg:?}");
        ca.assert_verifies("web", &issued.chain_pem);
        let text = openssl(ca.dir.path(), &["x509", "-in", "web.crt", "-noout", "-text"]);
        assert!(text.contains("DNS:web.example.com, DNS:www.example.com"), "{text}");
        assert!(text.contains("TLS Web Server Authentication"), "{text}");
        assert!(text.contains("Issuer: CN = certbridge test CA"), "{text}");
    }
}

/// Like cert-manager's CA issuer, LocalCA issues the otherName SANs a CSR asks for (cert-manager
/// ≥ 1.20 sends them): a UPN ends up in the certificate. A value rcgen cannot write is refused,
/// naming it, rather than dropped.
#[tokio::test]
async fn issues_a_upn_and_refuses_an_other_name_it_cannot_write() {
    let ca = TestCa::new(&["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let resources = Resources::from_objects("team-a", vec![ca.secret("team-a", "ca-key-pair")], vec![]);
    // openssl writes the CSRs, as any client outside this project would.
    let csr = |name: &str, san: &str| {
        let (key, csr, subj) = (format!("{name}.key"), format!("{name}.csr"), format!("/CN={name}"));
        let san = format!("subjectAltName={san}");
        let args = ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout"];
        openssl(ca.dir.path(), &[&args[..], &[&key, "-out", &csr, "-subj", &subj, "-addext", &san]].concat());
        ca.read(&csr)
    };
    let upn = csr("card", "DNS:card.example,otherName:1.3.6.1.4.1.311.20.2.3;UTF8:alice@corp.example");
    let req = SignRequest::from_csr_pem(&upn, Duration::from_secs(3600), false, &["client auth"]).unwrap();
    let issued =
        LocalCaSigner.sign(&req, &issuer("ca-key-pair"), &mut SignContext::offline(resources.clone())).await.unwrap();
    ca.assert_verifies("card", &issued.chain_pem);
    let text = openssl(ca.dir.path(), &["x509", "-in", "card.crt", "-noout", "-text"]);
    assert!(text.contains("DNS:card.example, othername: UPN::alice@corp.example"), "{text}");

    let int = csr("int", "DNS:int.example,otherName:1.2.3.4;INT:7");
    let req = SignRequest::from_csr_pem(&int, Duration::from_secs(3600), false, &[""; 0]).unwrap();
    let e = LocalCaSigner.sign(&req, &issuer("ca-key-pair"), &mut SignContext::offline(resources)).await.unwrap_err();
    assert_eq!(reaction(&e), "permanent");
    assert!(e.to_string().contains("otherName 1.2.3.4 (DER value of 3 bytes), whose value is not a UTF8String"), "{e}");
}

/// How the controller reacts to `e`; the one place these tests read a SignError's reaction.
fn reaction(e: &SignError) -> &'static str {
    match e.reaction {
        Reaction::Pending { .. } => "pending",
        Reaction::Permanent => "permanent",
        Reaction::IssuerNotReady => "issuer-not-ready",
        Reaction::Transient => "transient",
    }
}

#[tokio::test]
async fn ca_keys_in_pkcs1_and_sec1_form_sign_as_well() {
    // The CA key rewritten in its traditional form: RSA as PKCS#1, EC as SEC1.
    let cases: [(&[&str], &[&str], &str); 2] = [
        (&["rsa:2048"], &["rsa", "-in", "ca.key", "-traditional", "-out", "ca.key"], "BEGIN RSA PRIVATE KEY"),
        (
            &["ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            &["ec", "-in", "ca.key", "-out", "ca.key"],
            "BEGIN EC PRIVATE KEY",
        ),
    ];
    for (alg, rewrite, label) in cases {
        let ca = TestCa::new(alg);
        openssl(ca.dir.path(), rewrite);
        assert!(ca.read("ca.key").contains(label), "{alg:?}");
        let resources = Resources::from_objects("team-a", vec![ca.secret("team-a", "ca-key-pair")], vec![]);
        LocalCaSigner.check(&issuer("ca-key-pair"), &resources).await.unwrap();
        let req =
            SignRequest::from_csr_pem(&ca.csr("web", &["web.example"]), Duration::from_secs(3600), false, &[""; 0])
                .unwrap();
        let issued =
            LocalCaSigner.sign(&req, &issuer("ca-key-pair"), &mut SignContext::offline(resources)).await.unwrap();
        ca.assert_verifies("web", &issued.chain_pem);
    }
}

#[tokio::test]
async fn a_leaf_never_outlives_its_ca() {
    let ca = TestCa::new(&["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let resources = Resources::from_objects("team-a", vec![ca.secret("team-a", "ca-key-pair")], vec![]);
    let req =
        SignRequest::from_csr_pem(&ca.csr("long", &["long.example"]), Duration::from_secs(90 * 86400), false, &[""; 0])
            .unwrap();
    let issued = LocalCaSigner.sign(&req, &issuer("ca-key-pair"), &mut SignContext::offline(resources)).await.unwrap();
    std::fs::write(ca.path("long.crt"), &issued.chain_pem).unwrap();
    let leaf_end = openssl(ca.dir.path(), &["x509", "-in", "long.crt", "-noout", "-enddate"]);
    let ca_end = openssl(ca.dir.path(), &["x509", "-in", "ca.crt", "-noout", "-enddate"]);
    assert_eq!(leaf_end, ca_end);
}

#[tokio::test]
async fn check_names_what_is_wrong_with_the_secret_and_never_leaks_the_key() {
    let ca = TestCa::new(&["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let other = TestCa::new(&["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let (crt, key) = (ca.read("ca.crt"), ca.read("ca.key"));

    let e = check(tls_secret("team-a", "ca-key-pair", &crt, &other.read("ca.key"))).await.unwrap_err();
    assert!(e.reaction == Reaction::IssuerNotReady, "{e:?}");
    assert!(e.to_string().contains("\"tls.key\" does not match the certificate"), "{e}");

    let e = check(tls_secret("team-a", "other-name", &crt, &key)).await.unwrap_err();
    assert!(e.to_string().contains("Secret \"team-a/ca-key-pair\" not found"), "{e}");

    // A leaf certificate is not a CA.
    let leaf = ca.csr("leaf", &["leaf.example"]);
    let req = SignRequest::from_csr_pem(&leaf, Duration::from_secs(3600), false, &[""; 0]).unwrap();
    let resources = Resources::from_objects("team-a", vec![ca.secret("team-a", "ca-key-pair")], vec![]);
    let issued = LocalCaSigner.sign(&req, &issuer("ca-key-pair"), &mut SignContext::offline(resources)).await.unwrap();
    let e = check(tls_secret("team-a", "ca-key-pair", &issued.chain_pem, &ca.read("leaf.key"))).await.unwrap_err();
    assert!(e.to_string().contains("is not a CA certificate"), "{e}");

    // An encrypted key: refused as such, the key's bytes never shown.
    openssl(ca.dir.path(), &["pkey", "-in", "ca.key", "-aes256", "-passout", "pass:pw", "-out", "ca-enc.key"]);
    let encrypted = ca.read("ca-enc.key");
    let e = check(tls_secret("team-a", "ca-key-pair", &crt, &encrypted)).await.unwrap_err();
    assert!(e.reaction == Reaction::IssuerNotReady, "{e:?}");
    assert!(e.to_string().contains("\"tls.key\" holds an encrypted private key"), "{e}");
    let body: String = encrypted.lines().filter(|l| !l.starts_with("-----")).collect();
    for chunk in body.as_bytes().chunks(16) {
        assert!(!e.to_string().contains(std::str::from_utf8(chunk).unwrap()), "{e}");
    }

    let e = check(tls_secret("team-a", "ca-key-pair", "not a certificate", &key)).await.unwrap_err();
    assert!(e.to_string().contains("\"tls.crt\" does not start with a PEM certificate"), "{e}");
}

#[test]
fn an_empty_secret_name_is_rejected_naming_the_field() {
    use certbridge::IssuerSpec;
    let e = LocalCaSpec { secret_name: " ".into() }.validate().unwrap_err();
    assert!(e.contains("spec.secretName"), "{e}");
}
