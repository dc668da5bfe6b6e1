//! The signer against the EJBCA simulator: both auth modes, overrides, every error class,
//! restart-safe resume, token caching, chain correctness, and no secret in errors or logs.

use std::collections::BTreeMap;
use std::time::Duration;

use certbridge::{Reaction, SignContext, SignError, Signer};
use certbridge_ejbca::EjbcaSigner;
use certbridge_ejbca::sim::{ApprovalMode, Fault};

use crate::common::*;

fn enroll_bodies(sim: &certbridge_ejbca::sim::EjbcaSim) -> Vec<serde_json::Value> {
    sim.requests().into_iter().filter(|r| r.operation == "enrollPkcs10Certificate").filter_map(|r| r.body).collect()
}

#[tokio::test]
async fn both_auth_modes_issue_a_chain_that_openssl_verifies() {
    for mode in [Mode::Mtls, Mode::OAuth] {
        let sim = sim().await;
        let res = resources(&sim, mode);
        let signer = EjbcaSigner::new();
        let iss = issuer(spec(&sim));
        signer.check(&iss, &res).await.unwrap_or_else(|e| panic!("{mode:?} check: {e}"));
        let req = request("app.example.com", &[]);
        let issued = signer.sign(&req, &iss, &mut SignContext::offline(res.clone())).await.unwrap();
        // Leaf first, the issuing CA next, the root only as the CA (Keyfactor's ca.crt bug).
        let chain = pem::parse_many(&issued.chain_pem).unwrap();
        assert_eq!(chain.len(), 2, "{mode:?}: leaf + intermediate");
        assert_eq!(chain[1].contents(), sim.ca_chain_der("IssuingCA").unwrap()[0].as_slice());
        assert_eq!(issued.ca_pem.as_deref(), Some(sim.root_pem().as_str()));
        assert_eq!(issued.leaf_public_key_der().unwrap(), req.csr.public_key_der);
        openssl_verify(&issued.chain_pem, &sim.root_pem());
        // The request is what Keyfactor sends, plus response_format, with end_time from the duration.
        let body = &enroll_bodies(&sim)[0];
        let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "certificate_authority_name",
                "certificate_profile_name",
                "certificate_request",
                "end_entity_profile_name",
                "end_time",
                "include_chain",
                "password",
                "response_format",
                "username"
            ]
        );
        assert_eq!(body["username"], "app.example.com");
        assert_eq!(body["certificate_profile_name"], "ENDUSER");
        assert_eq!(body["include_chain"], true);
        let end = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", body["end_time"].as_str().unwrap())
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp();
        let expected = jiff::Timestamp::now().as_second() + 7 * 86400;
        assert!((end.as_second() - expected).abs() < 60, "end_time is now + 7d");
        let (_, leaf) = x509_parser::parse_x509_certificate(chain[0].contents()).unwrap();
        assert!((leaf.validity().not_after.timestamp() - expected).abs() < 60, "the CA honoured end_time");
        let auths: Vec<&str> = sim.requests().iter().filter(|r| r.operation != "token").map(|r| r.auth).collect();
        let want = if mode == Mode::Mtls { "mtls" } else { "bearer" };
        assert!(auths.iter().all(|a| *a == want), "{mode:?}: {auths:?}");
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }
}

/// A CSR with a UPN (cert-manager ≥ 1.20 sends them) is not refused by the framework: the adapter
/// forwards it unchanged and EJBCA's profile decides (the simulator's copies the names).
#[tokio::test]
async fn a_upn_csr_is_forwarded_unchanged_and_the_ca_decides() {
    let sim = sim().await;
    let res = resources(&sim, Mode::Mtls);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["card.example.com".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::OtherName((vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3], "alice@corp.example".into())));
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let mut req = request("unused.example.com", &[]);
    req.csr = certbridge::Csr::from_pem(&pem).unwrap();
    req.csr_pem = pem.clone();
    assert_eq!(req.csr.other_names, vec![certbridge::OtherName::Upn("alice@corp.example".into())]);
    let issued = EjbcaSigner::new().sign(&req, &issuer(spec(&sim)), &mut SignContext::offline(res)).await.unwrap();
    assert_eq!(enroll_bodies(&sim)[0]["certificate_request"], pem.as_str(), "the CSR reaches EJBCA unchanged");
    let leaf = pem::parse_many(&issued.chain_pem).unwrap().remove(0);
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf.contents()).unwrap();
    let sans = &leaf.subject_alternative_name().unwrap().unwrap().value.general_names;
    assert!(
        sans.iter().any(|n| matches!(n, x509_parser::extensions::GeneralName::OtherName(oid, v)
            if oid.to_id_string() == "1.3.6.1.4.1.311.20.2.3" && v.ends_with(b"alice@corp.example"))),
        "{sans:?}"
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test]
async fn passwords_are_fresh_per_call() {
    let sim = sim().await;
    let res = resources(&sim, Mode::Mtls);
    let signer = EjbcaSigner::new();
    let iss = issuer(spec(&sim));
    for _ in 0..3 {
        signer.sign(&request("same.example.com", &[]), &iss, &mut SignContext::offline(res.clone())).await.unwrap();
    }
    let mut pw: Vec<String> = enroll_bodies(&sim).iter().map(|b| b["password"].as_str().unwrap().to_owned()).collect();
    assert!(pw.iter().all(|p| p.len() >= 20));
    pw.sort();
    pw.dedup();
    assert_eq!(pw.len(), 3, "a new end-entity password every call");
}

#[tokio::test]
async fn oauth_token_is_cached_and_refreshed_once_on_refusal() {
    let sim = sim().await;
    let res = resources(&sim, Mode::OAuth);
    let signer = EjbcaSigner::new();
    let iss = issuer(spec(&sim));
    signer.check(&iss, &res).await.unwrap();
    for i in 0..3 {
        signer
            .sign(&request(&format!("a{i}.example.com"), &[]), &iss, &mut SignContext::offline(res.clone()))
            .await
            .unwrap();
    }
    assert_eq!(sim.token_calls(), 1, "one token for a check and three enrollments");
    let form = sim.requests().into_iter().find(|r| r.operation == "token").unwrap().body.unwrap();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "ejbca:enroll ejbca:read");
    assert_eq!(form["audience"], "ejbca");
    assert!(form.get("client_secret").is_none(), "the secret goes in the Authorization header");
    // EJBCA answers a revoked/expired token with 403 (its exception mapper) or 401: refresh once.
    for status in [403, 401] {
        sim.set_bad_token_status(status);
        sim.revoke_tokens();
        let before = sim.token_calls();
        signer.sign(&request("b.example.com", &[]), &iss, &mut SignContext::offline(res.clone())).await.unwrap();
        assert_eq!(sim.token_calls(), before + 1, "status {status}: one refresh");
    }
    // A token about to expire is replaced before it is used.
    sim.set_token_ttl(Duration::from_secs(2));
    sim.revoke_tokens();
    signer.sign(&request("c.example.com", &[]), &iss, &mut SignContext::offline(res.clone())).await.unwrap();
    let before = sim.token_calls();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    signer.sign(&request("d.example.com", &[]), &iss, &mut SignContext::offline(res.clone())).await.unwrap();
    assert_eq!(sim.token_calls(), before + 1, "refreshed ahead of expiry");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test]
async fn wrong_credentials_are_named_without_the_secret() {
    let sim = sim().await;
    let (id, _) = sim.oauth_client();
    let wrong = "definitely-wrong-secret-99";
    let res = certbridge::Resources::from_objects(
        NS,
        vec![secret("creds", &[("tokenUrl", &sim.token_url()), ("clientId", &id), ("clientSecret", wrong)])],
        vec![config_map("ejbca-ca", "ca.crt", &sim.root_pem())],
    );
    let iss = issuer(spec(&sim));
    let e = EjbcaSigner::new().check(&iss, &res).await.unwrap_err();
    assert!(e.reaction == Reaction::IssuerNotReady, "{e:?}");
    assert!(e.to_string().contains("invalid_client") && !e.to_string().contains(wrong), "{e}");
    let e = EjbcaSigner::new()
        .sign(&request("x.example.com", &[]), &iss, &mut SignContext::offline(res))
        .await
        .unwrap_err();
    assert!(e.reaction == Reaction::IssuerNotReady && !e.to_string().contains(wrong), "{e}");
    assert_eq!(sim.enroll_calls(), 0);

    // A client certificate EJBCA does not know: the TLS handshake fails.
    let (cert, key) = certbridge::testing::foreign_client_cert().unwrap();
    let res = certbridge::Resources::from_objects(
        NS,
        vec![secret("creds", &[("tls.crt", &cert), ("tls.key", &key)])],
        vec![config_map("ejbca-ca", "ca.crt", &sim.root_pem())],
    );
    let e = EjbcaSigner::new().check(&iss, &res).await.unwrap_err();
    assert!(e.reaction == Reaction::IssuerNotReady, "{e:?}");
    // No credentials at all in the Secret: the keys are named.
    let res = certbridge::Resources::from_objects(NS, vec![secret("creds", &[("token", "x")])], vec![]);
    let e = EjbcaSigner::new().check(&iss, &res).await.unwrap_err();
    assert!(e.to_string().contains("tls.crt") && e.to_string().contains("tokenUrl"), "{e}");
}

#[tokio::test]
async fn annotations_override_ca_profiles_and_end_entity_name() {
    let sim = sim().await;
    let res = resources(&sim, Mode::Mtls);
    let signer = EjbcaSigner::new();
    let iss = issuer(spec(&sim));
    let cases: [(&str, &str, &str); 4] = [
        ("certificateAuthorityName", "OtherCA", "certificate_authority_name"),
        ("certificateProfileName", "SERVER", "certificate_profile_name"),
        ("endEntityProfileName", "K8S", "end_entity_profile_name"),
        ("endEntityName", "shared-end-entity", "username"),
    ];
    for (i, (key, value, field)) in cases.iter().enumerate() {
        let ann = format!("ejbca.certbridge.io/{key}");
        let issued = signer
            .sign(&request("o.example.com", &[(&ann, value)]), &iss, &mut SignContext::offline(res.clone()))
            .await
            .unwrap();
        let body = &enroll_bodies(&sim)[i];
        assert_eq!(body[*field], *value, "{key}");
        if *key == "certificateAuthorityName" {
            let chain = pem::parse_many(&issued.chain_pem).unwrap();
            assert_eq!(chain[1].contents(), sim.ca_chain_der("OtherCA").unwrap()[0].as_slice());
            openssl_verify(&issued.chain_pem, &sim.root_pem());
        } else {
            assert_eq!(body["certificate_authority_name"], "IssuingCA");
        }
    }
    // endEntityName rules: certificateName from cert-manager's annotation, and the spec default.
    let mut s = spec(&sim);
    s.end_entity_name = Some("certificateName".into());
    signer
        .sign(
            &request("n.example.com", &[("cert-manager.io/certificate-name", "web-cert")]),
            &issuer(s),
            &mut SignContext::offline(res.clone()),
        )
        .await
        .unwrap();
    assert_eq!(enroll_bodies(&sim).last().unwrap()["username"], "web-cert");
    let e = signer
        .sign(
            &request("n.example.com", &[("ejbca.certbridge.io/certificateProfileName", " ")]),
            &iss,
            &mut SignContext::offline(res.clone()),
        )
        .await
        .unwrap_err();
    assert!(
        e.reaction == Reaction::Permanent && e.message.contains("ejbca.certbridge.io/certificateProfileName"),
        "{e}"
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test]
async fn ejbca_errors_map_to_the_taxonomy_verbatim() {
    let sim = sim().await;
    let res = resources(&sim, Mode::Mtls);
    let signer = EjbcaSigner::new();
    let iss = issuer(spec(&sim));
    let sign = |ann: Vec<(&'static str, &'static str)>| {
        let res = res.clone();
        let iss = iss.clone();
        let signer = &signer;
        async move { signer.sign(&request("e.example.com", &ann), &iss, &mut SignContext::offline(res)).await }
    };
    // Unknown names, answered the way EJBCA's enrollment code does.
    let e = sign(vec![("ejbca.certbridge.io/certificateAuthorityName", "NoSuchCA")]).await.unwrap_err();
    assert_eq!(
        e,
        SignError::permanent("EJBCA enroll: HTTP 400: CA with name \"NoSuchCA\" doesn't exist (error_code 400)")
    );
    let e = sign(vec![("ejbca.certbridge.io/certificateProfileName", "NOPE")]).await.unwrap_err();
    assert!(
        e.reaction == Reaction::Permanent && e.message.contains("Certificate profile with name \"NOPE\" doesn't exist")
    );
    let e = sign(vec![("ejbca.certbridge.io/endEntityProfileName", "NOPE")]).await.unwrap_err();
    assert!(e.reaction == Reaction::Permanent && e.message.contains("End entity profile with name \"NOPE\""));
    for status in [400u16, 403, 404, 409, 413, 422] {
        sim.push_fault("enrollPkcs10Certificate", Fault::Status(status));
        let e = sign(vec![]).await.unwrap_err();
        assert!(e.reaction == Reaction::Permanent, "{status}: {e:?}");
        assert!(e.to_string().contains(&format!("HTTP {status}: Simulated failure. (error_code {status})")), "{e}");
    }
    for (fault, needle) in [
        (Fault::Status(500), "General failure."),
        (Fault::Status(503), "CA is offline"),
        (Fault::Reset, "EJBCA enroll"),
        (Fault::Garbage, "not the documented JSON"),
    ] {
        sim.push_fault("enrollPkcs10Certificate", fault.clone());
        let e = sign(vec![]).await.unwrap_err();
        assert!(e.reaction == Reaction::Transient && e.message.contains(needle), "{fault:?}: {e:?}");
    }
    // A timeout is transient too.
    let mut s = spec(&sim);
    s.request_timeout_seconds = Some(1);
    sim.set_latency(Duration::from_millis(1500));
    let e = signer
        .sign(&request("t.example.com", &[]), &issuer(s), &mut SignContext::offline(res.clone()))
        .await
        .unwrap_err();
    assert!(e.reaction == Reaction::Transient && e.message.contains("timed out"), "{e:?}");
    sim.set_latency(Duration::ZERO);
    // check: 5xx is "not ready" (retried), an unknown CA fails the issuer.
    sim.push_fault("status_2", Fault::Status(503));
    assert!(signer.check(&iss, &res).await.unwrap_err().reaction == Reaction::IssuerNotReady);
    let mut s = spec(&sim);
    s.certificate_authority_name = "Ghost".into();
    let e = signer.check(&issuer(s), &res).await.unwrap_err();
    assert!(
        e.reaction == Reaction::IssuerNotReady && e.message.contains("\"Ghost\"") && e.message.contains("IssuingCA"),
        "{e:?}"
    );
    assert_eq!(sim.enrollments(), 0);
}

#[tokio::test]
async fn an_answer_lost_after_issuing_is_found_not_enrolled_again() {
    for fault in [Fault::ResetAfterIssue, Fault::GarbageAfterIssue] {
        let sim = sim().await;
        let res = resources(&sim, Mode::Mtls);
        let iss = issuer(spec(&sim));
        sim.push_fault("enrollPkcs10Certificate", fault.clone());
        let store = Store::default();
        let req = request("lost.example.com", &[]);
        let e = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
        assert!(e.reaction == Reaction::Transient, "{fault:?}: {e:?}");
        assert_eq!(sim.enrollments(), 1, "EJBCA issued");
        // The retry (even by a restarted controller) sees the marker and looks first.
        let issued = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, store.last(), &store)).await.unwrap();
        assert_eq!(sim.enrollments(), 1, "{fault:?}: never enrolled twice");
        assert_eq!(sim.enroll_calls(), 1);
        assert_eq!(issued.leaf_public_key_der().unwrap(), req.csr.public_key_der);
        openssl_verify(&issued.chain_pem, &sim.root_pem());
    }
}

#[tokio::test]
async fn a_crash_after_enrolling_resumes_from_the_marker() {
    let sim = sim().await;
    let res = resources(&sim, Mode::OAuth);
    let iss = issuer(spec(&sim));
    let store = Store::default();
    let req = request("crash.example.com", &[]);
    let first = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap();
    // The controller died before writing the certificate: all it persisted is the marker.
    assert_eq!(store.count(), 1);
    let marker = store.saved(0);
    assert!(st(&marker, "enroll-started").is_some() && st(&marker, "username") == Some("crash.example.com"));
    let again = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, marker, &store)).await.unwrap();
    assert_eq!(again, first, "the same certificate, found by public key");
    assert_eq!((sim.enrollments(), sim.enroll_calls()), (1, 1));
    // A different key under the same end entity is not mistaken for ours (once the marker's
    // unknown-outcome window has passed, a request that finds nothing enrolls).
    let other = request("crash.example.com", &[]);
    let mut marker = store.saved(0);
    marker.insert("enroll-unknown-until".into(), (jiff::Timestamp::now() - Duration::from_secs(1)).to_string());
    EjbcaSigner::new().sign(&other, &iss, &mut ctx(&res, marker, &store)).await.unwrap();
    assert_eq!(sim.enrollments(), 2);
}

#[tokio::test]
async fn approval_pending_survives_a_restart_then_issues_once() {
    for mode in [ApprovalMode::Execute, ApprovalMode::Finalize] {
        let sim = sim().await;
        let res = resources(&sim, Mode::Mtls);
        let iss = issuer(spec(&sim));
        sim.set_approval(mode);
        let store = Store::default();
        let req = request("approve.example.com", &[]);
        let signer = EjbcaSigner::new().with_pending_requeue(Duration::from_secs(1));
        let e = signer.sign(&req, &iss, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
        assert!(matches!(e.reaction, Reaction::Pending { .. }), "{mode:?}: {e:?}");
        assert_eq!(e.condition.as_ref().unwrap().reason, "WaitingForApproval");
        let saved = store.last();
        assert_eq!(st(&saved, "phase"), Some("approval-pending"), "saved before returning");
        assert_eq!(st(&saved, "approval-id").is_some(), mode == ApprovalMode::Finalize);
        // Restart: a new signer with only the persisted state polls, it does not enroll again.
        for _ in 0..2 {
            let e = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, store.last(), &store)).await.unwrap_err();
            assert!(matches!(e.reaction, Reaction::Pending { .. }), "{mode:?}: {e:?}");
            // Still waiting keeps the condition (the controller drops conditions a pass leaves out).
            assert_eq!(e.condition.as_ref().unwrap().reason, "WaitingForApproval", "{mode:?}");
        }
        assert_eq!((sim.enroll_calls(), sim.waiting_approvals()), (1, 1), "{mode:?}");
        sim.approve_all();
        let issued = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, store.last(), &store)).await.unwrap();
        assert_eq!((sim.enroll_calls(), sim.enrollments()), (1, 1), "{mode:?}: issued exactly once");
        openssl_verify(&issued.chain_pem, &sim.root_pem());
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }
    // A rejected approval is final.
    let sim = sim().await;
    let res = resources(&sim, Mode::Mtls);
    let iss = issuer(spec(&sim));
    sim.set_approval(ApprovalMode::Finalize);
    let store = Store::default();
    let req = request("reject.example.com", &[]);
    EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
    sim.reject_all();
    let e = EjbcaSigner::new().sign(&req, &iss, &mut ctx(&res, store.last(), &store)).await.unwrap_err();
    assert!(e.reaction == Reaction::Permanent && e.message.contains("has been rejected"), "{e:?}");
    assert_eq!(sim.enrollments(), 0);
}

#[tokio::test]
async fn no_secret_reaches_errors_or_logs() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let sim = sim().await;
    let (_, client_secret) = sim.oauth_client();
    let res = resources(&sim, Mode::OAuth);
    let iss = issuer(spec(&sim));
    let signer = EjbcaSigner::new();
    let mut errors = vec![];
    signer.sign(&request("s.example.com", &[]), &iss, &mut SignContext::offline(res.clone())).await.unwrap();
    sim.push_fault("enrollPkcs10Certificate", Fault::Status(422));
    errors.push(
        signer.sign(&request("s.example.com", &[]), &iss, &mut SignContext::offline(res.clone())).await.unwrap_err(),
    );
    sim.push_fault("enrollPkcs10Certificate", Fault::Reset);
    errors.push(
        signer.sign(&request("s.example.com", &[]), &iss, &mut SignContext::offline(res.clone())).await.unwrap_err(),
    );
    let (cert, key) = sim.client_identity();
    let mut secrets: Vec<String> =
        enroll_bodies(&sim).iter().map(|b| b["password"].as_str().unwrap().to_owned()).collect();
    secrets.push(client_secret);
    secrets.push(key.lines().nth(1).unwrap().to_owned());
    let _ = cert;
    let text = logs.text() + &errors.iter().map(|e| format!("{e} {e:?}")).collect::<String>();
    assert!(text.contains("enrolling PKCS#10 request"), "logs were captured: {text}");
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "secret leaked: {s}");
    }
    // The access token never shows up either (it is only in the sim's token answers).
    assert!(!text.contains("access_token"));
    let creds = certbridge_ejbca::auth::Credentials::load(&res, "creds").await.unwrap().0;
    assert!(!format!("{creds:?}").contains(&secrets[secrets.len() - 2]));
}
