//! The exactly-once windows of issue 12, adapter side, each against the simulator's fault hooks:
//! a CA slower than the client timeout, a search that could return an earlier certificate for a
//! reused key, a least-privilege role without search rights, 429 with `Retry-After`, and a 200
//! carrying a certificate for another key.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use certbridge::{Reaction, SignContext, SignRequest, Signer};
use certbridge_ejbca::EjbcaSigner;
use certbridge_ejbca::sim::{EjbcaSim, Fault};

use crate::common::*;

/// A CertificateRequest for `key` with CN `cn` and exactly the DNS names `dns`.
fn request_for(key: &rcgen::KeyPair, cn: &str, dns: &[&str]) -> SignRequest {
    let mut p = rcgen::CertificateParams::new(dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let pem = p.serialize_request(key).unwrap().pem().unwrap();
    let mut r = SignRequest::from_csr_pem::<&str>(&pem, Duration::from_secs(7 * 86400), false, &[]).unwrap();
    r.object.kind = certbridge::RequestKind::CertificateRequest;
    r.object.name = format!("{cn}-1");
    r.object.namespace = Some(NS.into());
    r
}

/// The leaf's DNS names, sorted.
fn leaf_dns(issued: &certbridge::Issued) -> Vec<String> {
    let leaf = pem::parse_many(&issued.chain_pem).unwrap().remove(0);
    let (_, x) = x509_parser::parse_x509_certificate(leaf.contents()).unwrap();
    let mut names: Vec<String> = x
        .subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn leaf_der(issued: &certbridge::Issued) -> Vec<u8> {
    pem::parse_many(&issued.chain_pem).unwrap().remove(0).into_contents()
}

async fn wait_for_enrollments(sim: &EjbcaSim, n: u64) {
    let t = Instant::now();
    while sim.enrollments() < n {
        assert!(t.elapsed() < Duration::from_secs(30), "the simulator never issued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Window "CA slower than the client timeout": EJBCA issues only after the client gave up. A
/// retry before the previous enroll's timeout (plus a margin) has elapsed must not enroll again:
/// it answers Pending, requeued at that instant, and once EJBCA has issued it finds the
/// certificate.
#[tokio::test]
async fn a_ca_slower_than_the_client_timeout_is_waited_for_not_enrolled_again() {
    let sim = sim().await;
    let res = resources(&sim, Mode::Mtls);
    let mut s = spec(&sim);
    s.request_timeout_seconds = Some(1);
    let iss = issuer(s);
    let store = Store::default();
    let req = request("slow.example.com", &[]);
    sim.push_fault("enrollPkcs10Certificate", Fault::IssueLate(Duration::from_millis(2500)));
    let started = jiff::Timestamp::now();
    let e = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
    assert!(e.reaction == Reaction::Transient, "the client timed out: {e:?}");
    assert_eq!((sim.enroll_calls(), sim.enrollments()), (1, 0), "EJBCA is still working on it");

    // The controller retries at once (or restarts): EJBCA has not issued yet, so a search finds
    // nothing; enrolling now would issue a second certificate.
    let e = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, store.last(), &store)).await.unwrap_err();
    let Reaction::Pending { requeue_after } = e.reaction else { panic!("expected Pending, got {e:?}") };
    assert_eq!(sim.enroll_calls(), 1, "no second enroll while the first one's outcome is unknown");
    // Requeued at the end of the window: after the 1 s client timeout has fully elapsed since
    // the enroll started, and not later than the window the state recorded.
    let requeue_at = jiff::Timestamp::now() + requeue_after;
    assert!(requeue_at >= started + Duration::from_secs(1), "{requeue_after:?}");
    let until: jiff::Timestamp = st(&store.last(), "enroll-unknown-until").unwrap().parse().unwrap();
    assert!((requeue_at - until).get_milliseconds().abs() < 1000, "{requeue_at} vs {until}");
    assert!(e.message.contains("not enrolling again"), "{e}");

    // EJBCA finishes; the next pass (even one before the window closed) finds that certificate.
    wait_for_enrollments(&sim, 1).await;
    let issued = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, store.last(), &store)).await.unwrap();
    assert_eq!(issued.leaf_public_key_der().unwrap(), req.csr.public_key_der);
    assert_eq!((sim.enroll_calls(), sim.enrollments()), (1, 1), "exactly one certificate");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// After the window, a request EJBCA never issued is enrolled again (no request waits forever).
#[tokio::test]
async fn after_the_window_an_enrollment_that_never_happened_is_retried() {
    let sim = sim().await;
    let res = resources(&sim, Mode::Mtls);
    let iss = issuer(spec(&sim));
    let store = Store::default();
    let req = request("retry.example.com", &[]);
    // A reset before EJBCA did anything: the client cannot tell it from one after.
    sim.push_fault("enrollPkcs10Certificate", Fault::Reset);
    EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
    let e = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, store.last(), &store)).await.unwrap_err();
    assert!(matches!(e.reaction, Reaction::Pending { .. }), "{e:?}");
    assert_eq!(sim.enroll_calls(), 1);
    // The window has passed (as a restarted controller would find it later on).
    let mut state = store.last();
    state.insert("enroll-unknown-until".into(), (jiff::Timestamp::now() - Duration::from_secs(1)).to_string());
    let issued = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, state, &store)).await.unwrap();
    assert_eq!(issued.leaf_public_key_der().unwrap(), req.csr.public_key_der);
    assert_eq!((sim.enroll_calls(), sim.enrollments()), (2, 1));
}

/// Window "wrong certificate returned": with key reuse, EJBCA already holds a certificate for the
/// same key and end entity but other SANs. A retry after a transient enroll error must return
/// the certificate with the new SANs (found, or newly enrolled), never the old one.
#[tokio::test]
async fn key_reuse_never_returns_the_previous_certificate() {
    for fault in [Fault::Status(503), Fault::ResetAfterIssue] {
        let sim = sim().await;
        let res = resources(&sim, Mode::Mtls);
        let iss = issuer(spec(&sim));
        let key = rcgen::KeyPair::generate().unwrap();
        let old_req = request_for(&key, "app.example.com", &["app.example.com"]);
        let old = EjbcaSigner::new().sign(&old_req, &iss, &mut SignContext::offline(res.clone())).await.unwrap();
        assert_eq!(leaf_dns(&old), ["app.example.com"]);

        // The Certificate gains a DNS name; cert-manager reuses the key (rotationPolicy: Never).
        let new_req = request_for(&key, "app.example.com", &["app.example.com", "new.example.com"]);
        let store = Store::default();
        sim.push_fault("enrollPkcs10Certificate", fault.clone());
        let e = EjbcaSigner::new().sign(&new_req, &iss, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
        assert!(e.reaction == Reaction::Transient, "{fault:?}: {e:?}");
        let mut state = store.last();
        // Past the unknown-outcome window (the reset case), so the retry may enroll again.
        state.insert("enroll-unknown-until".into(), (jiff::Timestamp::now() - Duration::from_secs(1)).to_string());
        let issued = EjbcaSigner::new().sign(&new_req, &iss, &mut ctx(&res, state, &store)).await.unwrap();
        assert_ne!(leaf_der(&issued), leaf_der(&old), "{fault:?}: the previous certificate came back");
        assert_eq!(leaf_dns(&issued), ["app.example.com", "new.example.com"], "{fault:?}");
        assert_eq!(issued.leaf_public_key_der().unwrap(), new_req.csr.public_key_der);
        assert_eq!(sim.enrollments(), 2, "{fault:?}: the old one and exactly one new one");
        openssl_verify(&issued.chain_pem, &sim.root_pem());
    }
}

/// Window "403 on search": with a least-privilege role that may enroll but not search, the
/// issuer check says so (naming the operation) and a retry after a transient enroll error does
/// not fail the request for good.
#[tokio::test]
async fn a_role_without_search_rights_is_not_ready_not_a_failed_request() {
    let sim = sim().await;
    let res = resources(&sim, Mode::OAuth);
    let signer = EjbcaSigner::new();
    let iss = issuer(spec(&sim));
    sim.deny("searchCertificates", true);
    let e = signer.check(&iss, &res).await.unwrap_err();
    assert!(e.reaction == Reaction::IssuerNotReady, "{e:?}");
    assert!(e.message.contains("certificate search") && e.message.contains("403"), "{e}");
    assert!(e.message.contains("IssuingCA") && e.message.contains("ENDUSER"), "names what to grant: {e}");

    let store = Store::default();
    let req = request("lp.example.com", &[]);
    sim.push_fault("enrollPkcs10Certificate", Fault::Status(503));
    signer.sign(&req, &iss, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
    let e = signer.sign(&req, &iss, &mut ctx(&res, store.last(), &store)).await.unwrap_err();
    assert!(e.reaction == Reaction::IssuerNotReady, "a 403 on search is not Permanent: {e:?}");
    assert!(e.message.contains("certificate search"), "{e}");
    assert_eq!(sim.enroll_calls(), 1, "no enroll without knowing whether the first one issued");

    // The EJBCA administrator grants the rule: the issuer checks Ready, the request is issued.
    sim.deny("searchCertificates", false);
    signer.check(&iss, &res).await.unwrap();
    let issued = signer.sign(&req, &iss, &mut ctx(&res, store.last(), &store)).await.unwrap();
    assert_eq!(issued.leaf_public_key_der().unwrap(), req.csr.public_key_der);
    assert_eq!(sim.enrollments(), 1);
}

/// 429 with `Retry-After` (seconds and HTTP-date forms): the adapter's error is Transient and
/// carries the delay for the framework to honour.
#[tokio::test]
async fn rate_limited_answers_carry_retry_after() {
    let sim = sim().await;
    let res = resources(&sim, Mode::Mtls);
    let iss = issuer(spec(&sim));
    let store = Store::default();
    let req = request("busy.example.com", &[]);
    sim.push_fault("enrollPkcs10Certificate", Fault::RateLimited("7".into()));
    let e = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
    assert!(e.reaction == Reaction::Transient, "{e:?}");
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)), "{e:?}");
    assert!(e.message.contains("HTTP 429"), "{e}");

    // The retry is not held back by the unknown-outcome window (EJBCA refused before working)
    // and a 429 on the search carries an HTTP-date Retry-After the same way.
    let when = std::time::SystemTime::now() + Duration::from_secs(20);
    sim.push_fault("searchCertificates", Fault::RateLimited(httpdate::fmt_http_date(when)));
    let e = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, store.last(), &store)).await.unwrap_err();
    assert!(e.reaction == Reaction::Transient, "{e:?}");
    let d = e.retry_after.expect("Retry-After parsed from an HTTP date");
    assert!(d > Duration::from_secs(15) && d <= Duration::from_secs(20), "{d:?}");

    let issued = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, store.last(), &store)).await.unwrap();
    assert_eq!(issued.leaf_public_key_der().unwrap(), req.csr.public_key_der);
    assert_eq!((sim.enroll_calls(), sim.enrollments()), (2, 1));
}

/// A 201 carrying a certificate for another key (CA or proxy glitch): never handed over as
/// issued, not a permanent failure either; the retry finds the right certificate EJBCA issued.
#[tokio::test]
async fn a_certificate_for_another_key_is_retried_not_issued() {
    let sim = sim().await;
    let res = resources(&sim, Mode::Mtls);
    let iss = issuer(spec(&sim));
    let store = Store::default();
    let req = request("glitch.example.com", &[]);
    sim.push_fault("enrollPkcs10Certificate", Fault::OtherKeyAfterIssue);
    let e = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
    assert!(e.reaction == Reaction::Transient, "{e:?}");
    assert!(e.message.contains("different key"), "{e}");
    let issued = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, store.last(), &store)).await.unwrap();
    assert_eq!(issued.leaf_public_key_der().unwrap(), req.csr.public_key_der);
    assert_eq!((sim.enroll_calls(), sim.enrollments()), (1, 1), "found by search, not enrolled again");
    openssl_verify(&issued.chain_pem, &sim.root_pem());
}

/// A request that never left (connection refused) ends the call: the retry is not held back by
/// the unknown-outcome window.
#[tokio::test]
async fn an_enroll_that_never_left_does_not_hold_the_retry() {
    let sim = sim().await;
    let res = resources(&sim, Mode::Mtls);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut s = spec(&sim);
    s.hostname = closed.to_string();
    let store = Store::default();
    let req = request("refused.example.com", &[]);
    let e = EjbcaSigner::new().sign(&req, &issuer(s), &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
    assert!(e.reaction == Reaction::Transient, "{e:?}");
    assert!(st(&store.saved(0), "enroll-unknown-until").is_some(), "the window is set before the call");
    assert_eq!(st(&store.last(), "enroll-unknown-until"), None, "and cleared: nothing reached EJBCA");
    // The retry (EJBCA reachable again) looks, finds nothing, and enrolls at once.
    let issued =
        EjbcaSigner::new().sign(&req, &issuer(spec(&sim)), &mut ctx(&res, store.last(), &store)).await.unwrap();
    assert_eq!(issued.leaf_public_key_der().unwrap(), req.csr.public_key_der);
    assert_eq!((sim.enroll_calls(), sim.enrollments()), (1, 1));
}
