//! The view's own rules: building the adapter's [`SignRequest`] (defaults, validation) and
//! checking what the signer returned against it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::api::{CertificateRequest, CertificateRequestSpec, IssuerRef};
use crate::controllers::request::api::RequestApi;
use crate::controllers::request::fixtures::csr_pem;

fn cr(kind: Option<&str>, group: Option<&str>) -> CertificateRequest {
    let mut cr = CertificateRequest::new(
        "r",
        CertificateRequestSpec {
            issuer_ref: IssuerRef { name: "ca".into(), kind: kind.map(Into::into), group: group.map(Into::into) },
            ..Default::default()
        },
    );
    cr.metadata.namespace = Some("team".into());
    cr
}

fn cr_with(pem: &str, usages: &[&str], is_ca: bool, duration: Option<&str>) -> RequestView {
    let mut c = cr(Some("DemoIssuer"), Some("demo.certbridge.io"));
    c.spec.request = k8s_openapi::ByteString(pem.as_bytes().to_vec());
    c.spec.usages = usages.iter().map(|u| (*u).to_owned()).collect();
    c.spec.is_ca = is_ca;
    c.spec.duration = duration.map(Into::into);
    c.spec.username = Some("alice".into());
    c.metadata.annotations = Some([("state.demo.certbridge.io/order".to_owned(), "42".to_owned())].into());
    c.view()
}

#[test]
fn sign_request_applies_defaults_and_validates() {
    let (pem, _) = csr_pem(|_| {});
    let v = cr_with(&pem, &[], false, Some("24h"));
    let req = v.sign_request().unwrap();
    assert_eq!(req.duration, Duration::from_secs(24 * 3600));
    assert_eq!(req.key_usages, vec![crate::KeyUsage::DigitalSignature, crate::KeyUsage::KeyEncipherment]);
    assert_eq!(req.requester.username, "alice");
    assert_eq!(req.object.kind, RequestKind::CertificateRequest);
    assert_eq!(req.object.namespace.as_deref(), Some("team"));
    assert_eq!(v.state("demo.certbridge.io"), BTreeMap::from([("order".to_owned(), "42".to_owned())]));

    // Bad PEM, unknown usage, bad duration, embedded usages that contradict the request.
    let e = cr_with("not a csr", &[], false, None).sign_request().unwrap_err();
    assert!(e.contains("not valid PEM"), "{e}");
    let e = cr_with(&pem, &["teleport"], false, None).sign_request().unwrap_err();
    assert!(e.contains("\"teleport\""), "{e}");
    let e = cr_with(&pem, &[], false, Some("forever")).sign_request().unwrap_err();
    assert!(e.starts_with("spec.duration"), "{e}");
    let (pem_ku, _) = csr_pem(|p| {
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
    });
    let e = cr_with(&pem_ku, &[], false, None).sign_request().unwrap_err();
    assert!(e.contains("KeyUsages"), "{e}");
    let e = cr_with(&pem_ku, &["digital signature"], true, None).sign_request().unwrap_err();
    assert!(e.contains("isCA"), "{e}");
    // Tampered: flip a byte of the SAN.
    let mut der = pem::parse(&pem).unwrap().into_contents();
    let pos = der.windows(5).position(|w| w == b"a.exa").unwrap();
    der[pos] = b'b';
    let tampered = crate::pki::to_pem(&der).replace("CERTIFICATE", "CERTIFICATE REQUEST");
    let e = cr_with(&tampered, &[], false, None).sign_request().unwrap_err();
    assert!(e.contains("signature does not verify"), "{e}");
}

#[test]
fn issued_leaf_must_carry_the_csr_key() {
    use crate::controllers::decision::request::verify_issued;
    let (pem, key) = csr_pem(|_| {});
    let req = cr_with(&pem, &[], false, None).sign_request().unwrap();
    let ca = crate::testing::TestCa::new(&crate::KeyKind::EcP256).unwrap();
    let good = ca.sign_key(&key, &["a.example.com"]).unwrap();
    assert!(verify_issued(&req, crate::Issued::from_pem_bundle(&good).unwrap()).is_ok());
    let (bad, _) = ca.leaf(&crate::KeyKind::EcP256, &["a.example.com"]).unwrap();
    let e = verify_issued(&req, crate::Issued::from_pem_bundle(&bad).unwrap()).unwrap_err();
    assert!(e.reaction == crate::Reaction::Transient && e.message.contains("does not match the CSR's public key"));
}
