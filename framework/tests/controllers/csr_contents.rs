//! What a CSR may hold, through the real controller: a UPN otherName (cert-manager ≥ 1.20 sends
//! them) reaches the signer and ends up in the certificate; a CSR over a `--csr-max-*` limit fails
//! at once, naming the limit and its flag, without reaching the signer.

use certbridge::IssuerScope;
use certbridge::testing::{approve, certificate_request, create_certificate_request, wait_condition, wait_ready};
use x509_parser::extensions::GeneralName;

use crate::support::*;

/// A CSR for `dns` names plus, when given, a UPN.
fn csr_with(dns: &[&str], upn: Option<&str>) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>()).unwrap();
    if let Some(upn) = upn {
        params.subject_alt_names.push(rcgen::SanType::OtherName((vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3], upn.into())));
    }
    params.serialize_request(&key).unwrap().pem().unwrap()
}

async fn create_approved(env: &Env, name: &str, pem: &str) {
    let cr = certificate_request::<TestSpec>(NS, name, pem, IssuerScope::Namespaced, "ca");
    create_certificate_request(&env.client, &cr).await.unwrap();
    approve(&env.client, NS, name).await.unwrap();
}

#[tokio::test]
async fn upn_is_issued_and_a_csr_over_the_san_limit_fails_naming_the_flag() {
    let limits = certbridge::CsrLimits { max_sans: 2, ..Default::default() };
    let opts = certbridge::runtime::Options { csr_limits: limits, ..options() };
    let env = Env::start_with(TestSigner::new(Ca::new()), opts).await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;

    // Two names, at the limit: a DNS name and a UPN. The framework passes the UPN on; the test
    // signer builds the certificate with certbridge::pki::certificate_params, which writes it.
    create_approved(&env, "upn", &csr_with(&["upn.example.com"], Some("alice@corp.example"))).await;
    let done = wait_ready(&env.client, NS, "upn", TIMEOUT).await.unwrap();
    let chain = done.status.unwrap().certificate.unwrap().0;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&chain).unwrap();
    let cert = pem.parse_x509().unwrap();
    let sans = &cert.subject_alternative_name().unwrap().unwrap().value.general_names;
    assert!(
        sans.iter().any(|n| matches!(n, GeneralName::OtherName(oid, v)
            if oid.to_id_string() == "1.3.6.1.4.1.311.20.2.3" && v.ends_with(b"alice@corp.example"))),
        "{sans:?}"
    );
    assert_eq!(env.signer.sign_calls(), 1);

    // Three names: over --csr-max-sans=2. Failed for good, like any invalid CSR.
    create_approved(&env, "too-many", &csr_with(&["a.example.com", "b.example.com", "c.example.com"], None)).await;
    let failed = wait_condition(&env.client, NS, "too-many", "Ready", "False", Some("Failed"), TIMEOUT).await.unwrap();
    let message = failed.condition("Ready").unwrap().message.clone().unwrap();
    assert!(message.contains("the CSR has 3 subjectAltNames"), "{message}");
    assert!(message.contains("(2, flag --csr-max-sans)"), "{message}");
    assert!(failed.status.unwrap().failure_time.is_some(), "a permanent failure");
    assert_eq!(env.signer.sign_calls(), 1, "a CSR over a limit never reaches the signer");
    env.stop().await;
}
