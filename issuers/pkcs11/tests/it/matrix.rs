//! CA key types × leaf key types × SAN kinds, each leaf checked by `openssl verify` and field by field.

use std::net::IpAddr;

use certbridge::{ExtKeyUsage, Issued, KeyUsage, SignRequest};
use certbridge_pkcs11::spec::{HashAlg, RsaPadding, SignatureSpec};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::fixture::*;

const LEAF_KEYS: [&str; 4] = ["rsa:2048", "ec:P-256", "ec:P-384", "ED25519"];
const ALL_SANS: &str = "DNS:app.example.com,DNS:*.app.example.com,IP:192.0.2.10,IP:2001:db8::7,URI:spiffe://cluster.local/ns/a/sa/app,email:ops@example.com";

/// Every field the issuer is responsible for, compared with what was asked.
pub fn check_leaf(issued: &Issued, ca_pem: &str, req: &SignRequest) {
    openssl_verify(ca_pem, issued).unwrap_or_else(|e| panic!("openssl verify failed: {e}"));
    let blocks = pem::parse_many(&issued.chain_pem).unwrap();
    let (_, leaf) = X509Certificate::from_der(blocks[0].contents()).unwrap();
    let ca_block = pem::parse(ca_pem).unwrap();
    let (_, ca) = X509Certificate::from_der(ca_block.contents()).unwrap();

    assert_eq!(leaf.subject().as_raw(), &req.csr.subject_der[..], "subject copied from the CSR");
    assert_eq!(leaf.public_key().raw, &req.csr.public_key_der[..], "the CSR's public key");
    // SANs: exactly the CSR's, each kind in order.
    let (mut dns, mut ips, mut uris, mut emails) = (vec![], vec![], vec![], vec![]);
    if let Some(san) = leaf.subject_alternative_name().unwrap() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => ips.push(match b.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()),
                    _ => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()),
                }),
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::RFC822Name(e) => emails.push(e.to_string()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
    }
    assert_eq!(dns, req.csr.dns_names);
    assert_eq!(ips, req.csr.ip_addresses);
    assert_eq!(uris, req.csr.uris);
    assert_eq!(emails, req.csr.emails);
    // Usages.
    match leaf.key_usage().unwrap() {
        Some(ku) => {
            let want = |k| req.key_usages.contains(&k);
            assert_eq!(ku.value.digital_signature(), want(KeyUsage::DigitalSignature));
            assert_eq!(ku.value.key_encipherment(), want(KeyUsage::KeyEncipherment));
            assert_eq!(ku.value.key_cert_sign(), want(KeyUsage::CertSign));
            assert_eq!(ku.value.crl_sign(), want(KeyUsage::CrlSign));
        }
        None => assert!(req.key_usages.is_empty(), "key usages {:?} missing", req.key_usages),
    }
    match leaf.extended_key_usage().unwrap() {
        Some(eku) => {
            assert_eq!(eku.value.server_auth, req.ext_key_usages.contains(&ExtKeyUsage::ServerAuth));
            assert_eq!(eku.value.client_auth, req.ext_key_usages.contains(&ExtKeyUsage::ClientAuth));
        }
        None => assert!(req.ext_key_usages.is_empty()),
    }
    // Validity: the requested duration, within a second.
    let v = leaf.validity();
    let secs = v.not_after.timestamp() - v.not_before.timestamp();
    assert!(secs.abs_diff(req.duration.as_secs() as i64) <= 1, "validity {secs}s for {:?}", req.duration);
    // Starts when it was issued: not backdated before this test process began, not in the future.
    // Bounds, not a time budget: a loaded host may take seconds between issuing and this check
    // (the `sign -f` child exiting, two openssl runs), which failed a "within 2 s of now" check.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let not_before = v.not_before.timestamp();
    assert!(crate::fixture::started() <= not_before && not_before <= now, "starts when issued: {not_before}");
    // isCA rules.
    let bc = leaf.basic_constraints().unwrap().expect("basic constraints").value;
    assert_eq!(bc.ca, req.is_ca);
    // Issuer linkage.
    assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw(), "issuer name is the CA subject byte for byte");
    let ski = ca.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    });
    let aki = leaf.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
            a.key_identifier.as_ref().map(|k| k.0.to_vec())
        }
        _ => None,
    });
    if let Some(ski) = ski {
        assert_eq!(aki, Some(ski), "AKI = CA SKI");
    }
    assert!(
        leaf.get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER).unwrap().is_some()
    );
    let serial = leaf.raw_serial();
    assert_eq!(serial.len(), 16, "16-byte serial");
    assert!(serial[0] & 0x80 == 0 && serial[0] != 0, "positive serial");
    // The chain as cert-manager would order it.
    let expected = Issued::from_pem_bundle(&format!("{}{ca_pem}", issued.chain_pem)).unwrap();
    assert_eq!(issued, &expected, "chain and CA as certbridge::Issued orders them");
}

#[tokio::test]
async fn every_ca_key_signs_every_leaf_key_with_all_san_kinds() {
    let csrs: Vec<(&str, String)> =
        LEAF_KEYS.iter().map(|k| (*k, openssl_csr(k, "/O=Acme/CN=app.example.com", ALL_SANS))).collect();
    for ca_kind in CA_KINDS {
        let ca = Ca::new(ca_kind, |_| {});
        ca.check().await.unwrap_or_else(|e| panic!("check {ca_kind}: {e}"));
        for (leaf_kind, csr) in &csrs {
            let req = request(csr, 24, false, &["digital signature", "key encipherment", "server auth", "client auth"]);
            let issued = ca.sign(&req).await.unwrap_or_else(|e| panic!("{ca_kind} signing {leaf_kind}: {e}"));
            check_leaf(&issued, &ca.ca_pem, &req);
        }
    }
}

#[tokio::test]
async fn each_san_kind_alone() {
    let sans = [
        ("DNS", "DNS:only-dns.example.com"),
        ("IPv4", "IP:198.51.100.4"),
        ("IPv6", "IP:2001:db8:1::1"),
        ("URI", "URI:spiffe://cluster.local/ns/b/sa/x"),
        ("email", "email:alice@example.com"),
    ];
    let cas: Vec<Ca> = CA_KINDS.iter().map(|k| Ca::new(k, |_| {})).collect();
    for (what, san) in sans {
        let csr = openssl_csr("ec:P-256", "/CN=san-test", san);
        let req = request(&csr, 1, false, &[]);
        let n = req.csr.dns_names.len() + req.csr.ip_addresses.len() + req.csr.uris.len() + req.csr.emails.len();
        assert_eq!(n, 1, "{what}: the CSR carries exactly one SAN");
        for ca in &cas {
            let issued = ca.sign(&req).await.unwrap_or_else(|e| panic!("{what}: {e}"));
            check_leaf(&issued, &ca.ca_pem, &req);
        }
    }
}

#[tokio::test]
async fn rsa_ca_signs_with_pss_and_every_hash() {
    let csrs = [openssl_csr("ec:P-256", "/CN=pss", "DNS:pss.example.com"), openssl_csr("rsa:2048", "/CN=pss", "")];
    for padding in [RsaPadding::Pkcs1v15, RsaPadding::Pss] {
        for hash in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
            let ca = Ca::new("rsa2048", |s| s.signature = Some(SignatureSpec { rsa_padding: padding, hash }));
            ca.check().await.unwrap();
            for csr in &csrs {
                let req = request(csr, 2, false, &["server auth"]);
                let issued = ca.sign(&req).await.unwrap_or_else(|e| panic!("{padding:?}/{hash:?}: {e}"));
                check_leaf(&issued, &ca.ca_pem, &req);
                let block = pem::parse(&issued.chain_pem).unwrap();
                let (_, leaf) = X509Certificate::from_der(block.contents()).unwrap();
                let oid = leaf.signature_algorithm.algorithm.to_id_string();
                let want = match (padding, hash) {
                    (RsaPadding::Pss, _) => "1.2.840.113549.1.1.10",
                    (_, HashAlg::Sha256) => "1.2.840.113549.1.1.11",
                    (_, HashAlg::Sha384) => "1.2.840.113549.1.1.12",
                    (_, HashAlg::Sha512) => "1.2.840.113549.1.1.13",
                };
                assert_eq!(oid, want, "{padding:?}/{hash:?}");
                assert_eq!(leaf.tbs_certificate.signature, leaf.signature_algorithm, "inner = outer algorithm");
            }
        }
    }
}

#[tokio::test]
async fn foreign_ca_with_a_name_rcgen_cannot_rebuild() {
    // openssl made this CA (two OUs); the issuer name must still be its subject byte for byte.
    let h = hsm();
    let ca_pem = h.ca_pem(MAIN, "multi");
    let mut s = spec(MAIN, "multi");
    s.key.id = Some("cafe01".into());
    let ca = Ca { signer: signer(), issuer: issuer("foreign", s), resources: resources(PIN, &ca_pem), ca_pem };
    ca.check().await.unwrap();
    let req = request(&openssl_csr("ED25519", "/CN=x", "DNS:x.example.com"), 5, false, &[]);
    let issued = ca.sign(&req).await.unwrap();
    check_leaf(&issued, &ca.ca_pem, &req);
}

#[tokio::test]
async fn ca_requests_and_an_intermediate_chain() {
    // A root (RSA) that may issue CAs signs an intermediate for the HSM's P-384 key; the
    // intermediate then issues leaves whose chain carries it, with the root as CA.
    let h = hsm();
    let root = Ca::new("rsa2048", |s| s.policy.allow_ca = true);
    let inter_key = hsm_key(MAIN, "p384", &h.ca_pem(MAIN, "p384"));
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, "certbridge intermediate");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let csr = p.serialize_request(&inter_key).unwrap().pem().unwrap();
    let req = request(&csr, 24 * 30, true, &["cert sign", "crl sign"]);
    let inter = root.sign(&req).await.unwrap();
    check_leaf(&inter, &root.ca_pem, &req);
    let x_der = first_der(&inter.chain_pem);
    let (_, x) = X509Certificate::from_der(&x_der).unwrap();
    assert_eq!(x.basic_constraints().unwrap().unwrap().value.path_len_constraint, None);

    let chain = format!("{}{}", inter.chain_pem, root.ca_pem);
    let mut s = spec(MAIN, "p384");
    s.ca_chain = Some(certbridge::CaBundle {
        config_map_ref: Some(certbridge::ConfigMapKeySelector { name: "ca-chain".into(), key: "ca.crt".into() }),
        ..Default::default()
    });
    let res = certbridge::Resources::from_objects(
        NS,
        vec![secret("hsm-pin", "pin", PIN)],
        vec![config_map("ca-chain", "ca.crt", &chain)],
    );
    let ica = Ca { signer: signer(), issuer: issuer("inter", s), resources: res, ca_pem: root.ca_pem.clone() };
    ica.check().await.unwrap();
    let leaf_req = request(&openssl_csr("ec:P-256", "/CN=leaf", "DNS:leaf.example.com"), 3, false, &[]);
    let issued = ica.sign(&leaf_req).await.unwrap();
    assert_eq!(pem::parse_many(&issued.chain_pem).unwrap().len(), 2, "leaf + intermediate");
    assert_eq!(issued.ca_pem.as_deref(), Some(root.ca_pem.as_str()), "the root is the CA");
    openssl_verify(&root.ca_pem, &issued).unwrap();
    let expected = Issued::from_pem_bundle(&format!("{}{}", issued.chain_pem, root.ca_pem)).unwrap();
    assert_eq!(issued, expected);

    // maxPathLen caps issued CAs.
    let capped = Ca::new("rsa2048", |s| {
        s.policy.allow_ca = true;
        s.policy.max_path_len = Some(0);
    });
    let inter = capped.sign(&req).await.unwrap();
    let x_der = first_der(&inter.chain_pem);
    let (_, x) = X509Certificate::from_der(&x_der).unwrap();
    assert_eq!(x.basic_constraints().unwrap().unwrap().value.path_len_constraint, Some(0));
}

/// An issuer written before `caChain` existed (`caChainRef: {kind, name, key}`) keeps working: the
/// deprecated field is read as the `caChain` it stands for, and its problems name its object and
/// key and the field it came from.
#[tokio::test]
async fn the_deprecated_ca_chain_ref_still_names_the_chain() {
    use certbridge::IssuerSpec;
    use certbridge_pkcs11::spec::{ChainKind, ChainRef};
    let h = hsm();
    let ca_pem = h.ca_pem(MAIN, "p256");
    let mut s = spec(MAIN, "p256");
    s.ca_chain = None;
    s.ca_chain_ref = Some(ChainRef { kind: ChainKind::ConfigMap, name: "old-chain".into(), key: "chain.pem".into() });
    s.validate().unwrap();
    let with = |chain: &str| {
        certbridge::Resources::from_objects(
            NS,
            vec![secret("hsm-pin", "pin", PIN)],
            vec![config_map("old-chain", "chain.pem", chain)],
        )
    };
    let ca =
        Ca { signer: signer(), issuer: issuer("legacy", s.clone()), resources: with(&ca_pem), ca_pem: ca_pem.clone() };
    ca.check().await.unwrap();
    let req = request(&openssl_csr("ec:P-256", "/CN=legacy", "DNS:legacy.example.com"), 24, false, &[]);
    let issued = ca.sign(&req).await.unwrap();
    openssl_verify(&ca_pem, &issued).unwrap();
    assert_eq!(issued.ca_pem.as_deref(), Some(ca_pem.as_str()));

    // A chain that is not PEM: not ready, naming the ConfigMap and key of the deprecated field.
    let bad = Ca { signer: signer(), issuer: issuer("legacy-bad", s.clone()), resources: with("junk"), ca_pem };
    let e = bad.check().await.unwrap_err();
    assert_eq!(e.reaction, certbridge::Reaction::IssuerNotReady, "{e}");
    assert!(e.message.contains("ConfigMap \"team-a/old-chain\" key \"chain.pem\" is not PEM"), "{e}");

    // Both the new and the deprecated field: refused, naming both.
    s.ca_chain = Some(chain_in_secret("ca-chain"));
    let e = s.validate().unwrap_err();
    assert!(e.contains("spec.caChain and spec.caChainRef are both set"), "{e}");
}

#[tokio::test]
async fn duration_is_clamped_to_the_ca_and_aia_crl_are_embedded() {
    let ca = Ca::new("p256", |s| {
        s.crl_distribution_points = vec!["http://crl.example.com/ca.crl".into()];
        s.ocsp_servers = vec!["http://ocsp.example.com".into()];
        s.issuing_certificate_urls = vec!["http://pki.example.com/ca.crt".into()];
    });
    // 20 years is longer than the CA (10 years): the leaf ends with the CA.
    let req = request(&openssl_csr("ec:P-256", "/CN=long", "DNS:long.example.com"), 20 * 365 * 24, false, &[]);
    let issued = ca.sign(&req).await.unwrap();
    openssl_verify(&ca.ca_pem, &issued).unwrap();
    let leaf_der = first_der(&issued.chain_pem);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let cacert_der = first_der(&ca.ca_pem);
    let (_, cacert) = X509Certificate::from_der(&cacert_der).unwrap();
    assert_eq!(leaf.validity().not_after, cacert.validity().not_after);
    let text = String::from_utf8(run(std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .arg("-in")
        .arg({
            let p = hsm().dir.join("aia-leaf.pem");
            std::fs::write(&p, &issued.chain_pem).unwrap();
            p
        })))
    .unwrap();
    assert!(text.contains("URI:http://crl.example.com/ca.crl"), "{text}");
    assert!(text.contains("OCSP - URI:http://ocsp.example.com"), "{text}");
    assert!(text.contains("CA Issuers - URI:http://pki.example.com/ca.crt"), "{text}");
}

/// The HSM key of a CA kind as an rcgen signing key (to make CSRs for HSM keys in tests).
pub fn hsm_key(token: &str, kind: &str, ca_pem: &str) -> certbridge_pkcs11::key::CaKey {
    use certbridge_pkcs11::key::{CaKey, KeySelector, Scheme};
    let module =
        certbridge_pkcs11::module::load(std::path::Path::new(certbridge_pkcs11::module::DEFAULT_MODULE)).unwrap();
    let tok = certbridge_pkcs11::token::Token::find(
        &module,
        &certbridge_pkcs11::token::TokenSelector { label: Some(token.into()), serial: None },
        4,
    )
    .unwrap();
    tok.authenticate(&zeroize::Zeroizing::new(PIN.to_owned())).unwrap();
    let x_der = first_der(ca_pem);
    let (_, x) = X509Certificate::from_der(&x_der).unwrap();
    let scheme = match kind {
        "p256" => Scheme::EcdsaP256,
        "p384" => Scheme::EcdsaP384,
        "ed25519" => Scheme::Ed25519,
        _ => Scheme::RsaPkcs1(HashAlg::Sha256),
    };
    CaKey::new(
        tok,
        KeySelector { label: Some(format!("ca-{kind}")), id: None },
        scheme,
        x.public_key().subject_public_key.data.to_vec(),
    )
}

/// The DER of the first PEM block.
pub fn first_der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).unwrap().into_contents()
}
