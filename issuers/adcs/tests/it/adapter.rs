//! The signer against the certsrv simulator: every auth method (NTLM checked by pyspnego, with
//! EPA), every page shape, restarts while pending, CA renewal and faults.

use std::collections::BTreeMap;

use certbridge::{Resources, SignContext, Signer};
use certbridge_adcs::AdcsSigner;
use certbridge_adcs::signer::state;
use certbridge_adcs::spec::{AllowedOverride, ChannelBindingMode};

use crate::common::*;

fn leaf_issuer_key(chain_pem: &str) -> Vec<u8> {
    let blocks = pem::parse_many(chain_pem).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(blocks[1].contents()).unwrap();
    ca.public_key().raw.to_vec()
}

async fn issue_with(opts: SimOpts) {
    issue_with_spec(opts, |_| {}).await
}

async fn issue_with_spec(opts: SimOpts, f: impl FnOnce(&mut certbridge_adcs::AdcsIssuerSpec)) {
    let sim = Sim::start(opts);
    let signer = AdcsSigner::new();
    let mut s = spec(&sim);
    f(&mut s);
    let issuer = issuer(s);
    let res = resources(&sim);
    signer.check(&issuer, &res).await.expect("check passes");
    let req = request("web.example.com", &[]);
    let store = Store::default();
    let issued = signer.sign(&req, &issuer, &mut ctx(&res, BTreeMap::new(), &store)).await.expect("issued");
    openssl_verify(&issued.chain_pem, &sim.root_pem);
    assert_eq!(issued.ca_pem.as_deref().map(str::trim), Some(sim.root_pem.trim()), "status.ca is the root");
    assert_eq!(store.last().get(state::REQ_ID).map(String::as_str), Some("1"));
    assert_eq!(sim.enrollments(&req.csr_pem), 1);
}

#[tokio::test]
async fn ntlm_with_channel_binding_when_supported() {
    issue_with(SimOpts::default()).await;
}

#[tokio::test]
async fn ntlm_epa_required_with_binding() {
    issue_with(SimOpts { epa: "required", ..Default::default() }).await;
}

#[tokio::test]
async fn ntlm_epa_off() {
    issue_with(SimOpts { epa: "off", ..Default::default() }).await;
}

/// Kerberos without channel binding against the real MIT KDC and an MIT (python-gssapi) acceptor
/// that checks bindings when sent ("when-supported").
#[tokio::test]
async fn kerberos_against_an_mit_kdc() {
    issue_with_spec(SimOpts { mode: Mode::Kerberos, ..Default::default() }, |s| {
        s.auth.kerberos.as_mut().unwrap().channel_binding = Some(ChannelBindingMode::Off);
    })
    .await;
}

#[tokio::test]
async fn epa_required_refuses_kerberos_without_binding() {
    let sim = Sim::start(SimOpts { mode: Mode::Kerberos, epa: "required", ..Default::default() });
    let mut s = spec(&sim);
    s.auth.kerberos.as_mut().unwrap().channel_binding = Some(ChannelBindingMode::Off);
    let e = AdcsSigner::new().check(&issuer(s), &resources(&sim)).await.unwrap_err();
    assert_eq!(reaction(&e), "issuer-not-ready", "{e}");
    assert!(e.to_string().contains("credentials refused"), "{e}");
}

/// Kerberos with channel binding (tls-server-end-point in the authenticator checksum, the
/// KERB_AP_OPTIONS_CBT option) against the real MIT KDC and an MIT acceptor with EPA required,
/// which refuses an AP-REQ without a matching binding (the test above).
#[tokio::test]
async fn kerberos_epa_required() {
    issue_with(SimOpts { mode: Mode::Kerberos, epa: "required", ..Default::default() }).await;
}

/// A Secret with a keytab (no password, no username: the keytab's one principal), EPA required,
/// and 12 issuances by 4 concurrent workers over several connections: the KDC's own log shows
/// one AS and one TGS exchange for the issuer; every connection got its own AP-REQ from that
/// ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kerberos_keytab_one_as_exchange_per_issuer() {
    let sim = Sim::start(SimOpts { mode: Mode::Kerberos, epa: "required", ..Default::default() });
    let kdc = sim.kdc.as_ref().unwrap();
    let keytab = std::fs::read(&kdc.env["KRB5_CLIENT_KEYTAB"]).unwrap();
    let secret = certbridge::testing::secret(NS, "creds", None, &[("keytab", keytab.as_slice())]);
    let (_, cms) = objects(&sim, NS, PASSWORD);
    let res = Resources::from_objects(NS, vec![secret], cms);
    let mut s = spec(&sim);
    s.auth.kerberos.as_mut().unwrap().channel_binding = Some(ChannelBindingMode::Required);
    let issuer = issuer(s);
    let signer = std::sync::Arc::new(AdcsSigner::new());
    signer.check(&issuer, &res).await.expect("check passes");
    let mut workers = vec![];
    for w in 0..4 {
        let (signer, issuer, res) = (signer.clone(), issuer.clone(), res.clone());
        workers.push(tokio::spawn(async move {
            for i in 0..3 {
                let req = request(&format!("k{w}-{i}.example.com"), &[]);
                signer.sign(&req, &issuer, &mut SignContext::offline(res.clone())).await.expect("issued");
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let principal = &kdc.env["KRB5_CLIENT_PRINCIPAL"];
    assert_eq!(kdc.issued("AS_REQ", principal), 1, "AS exchanges at the KDC");
    assert_eq!(kdc.issued("TGS_REQ", principal), 1, "TGS exchanges at the KDC");
    let t = signer.totals();
    assert!(t.connections >= 2, "the workers used several connections: {t:?}");
    assert_eq!(sim.counters()["handshakes"].as_u64().unwrap(), t.handshakes, "one AP-REQ accepted per connection");
    assert_eq!(t.handshakes, t.connections, "{t:?}");
}

/// A keytab whose key the KDC does not hold: preauthentication failure, named as such, issuer
/// not ready, and no key material in the message.
#[tokio::test]
async fn kerberos_wrong_keytab_is_preauth_failed() {
    let sim = Sim::start(SimOpts { mode: Mode::Kerberos, ..Default::default() });
    let kdc = sim.kdc.as_ref().unwrap();
    let mut keytab = std::fs::read(&kdc.env["KRB5_CLIENT_KEYTAB"]).unwrap();
    // The first entry's key is the last 32 bytes before its 32-bit kvno: flip one of its bits.
    let first_len = u32::from_be_bytes(keytab[2..6].try_into().unwrap()) as usize;
    keytab[6 + first_len - 4 - 1] ^= 1;
    let secret = certbridge::testing::secret(NS, "creds", None, &[("keytab", keytab.as_slice())]);
    let (_, cms) = objects(&sim, NS, PASSWORD);
    let e = AdcsSigner::new()
        .check(&issuer(spec(&sim)), &Resources::from_objects(NS, vec![secret], cms))
        .await
        .unwrap_err();
    assert_eq!(reaction(&e), "issuer-not-ready", "{e}");
    let text = e.to_string();
    assert!(text.contains("KDC_ERR_PREAUTH_FAILED") && text.contains("keytab"), "{text}");
    assert_eq!(kdc.issued("AS_REQ", &kdc.env["KRB5_CLIENT_PRINCIPAL"]), 0);
}

/// certsrv's clock an hour off from the authenticator's: MIT's acceptor answers with a KRB-ERROR
/// (KRB_AP_ERR_SKEW) in the 401, reported as clock skew naming NTP, not as a bare 401.
#[tokio::test]
async fn kerberos_clock_skew_is_reported_plainly() {
    use certbridge_adcs::client::{AdcsClient, AdcsError, Auth, ChannelBinding};
    use certbridge_adcs::kerberos::{Credential, KerberosClient};
    let sim = Sim::start(SimOpts { mode: Mode::Kerberos, ..Default::default() });
    let env = &sim.kdc.as_ref().unwrap().env;
    let krb = KerberosClient::new(
        format!("{}@{}", env["KRB5_USER"], env["KRB5_REALM"]),
        Credential::Password(env["KRB5_PASSWORD"].clone().into()),
        vec![env["KRB5_KDC"].clone()],
        "HTTP/localhost".into(),
        std::time::Duration::from_secs(10),
    );
    krb.skew_clock_for_tests(-3600);
    let auth = Auth::Kerberos { client: krb, channel_binding: ChannelBinding::Auto };
    let client =
        AdcsClient::new(&sim.url(), Some(&sim.root_pem), None, auth, std::time::Duration::from_secs(10)).unwrap();
    match client.probe().await {
        Err(AdcsError::Config(m)) => assert!(m.contains("KRB_AP_ERR_SKEW") && m.contains("NTP"), "{m}"),
        other => panic!("expected a clock-skew error, got {other:?}"),
    }
}

#[tokio::test]
async fn basic_auth() {
    issue_with(SimOpts { mode: Mode::Basic, ..Default::default() }).await;
}

#[tokio::test]
async fn client_certificate_auth() {
    issue_with(SimOpts { mode: Mode::Cert, ..Default::default() }).await;
}

#[tokio::test]
async fn epa_required_refuses_ntlm_without_binding() {
    let sim = Sim::start(SimOpts { epa: "required", ..Default::default() });
    let mut s = spec(&sim);
    s.auth.ntlm.as_mut().unwrap().channel_binding = Some(ChannelBindingMode::Off);
    let signer = AdcsSigner::new();
    let e = signer.check(&issuer(s.clone()), &resources(&sim)).await.unwrap_err();
    assert_eq!(reaction(&e), "issuer-not-ready", "{e}");
    assert!(e.to_string().contains("credentials refused"), "{e}");
    let res = resources(&sim);
    let e = signer.sign(&request("a.example.com", &[]), &issuer(s), &mut SignContext::offline(res)).await.unwrap_err();
    assert_eq!(reaction(&e), "issuer-not-ready", "{e}");
    assert!(e.to_string().contains("credentials refused") && !e.to_string().contains(PASSWORD), "{e}");
    assert_eq!(sim.counters()["submits"], 0);
}

#[tokio::test]
async fn wrong_password_is_credentials_refused() {
    // Kerberos: the KDC (real MIT) refuses the password at preauthentication.
    for mode in [Mode::Ntlm, Mode::Basic, Mode::Kerberos] {
        let sim = Sim::start(SimOpts { mode, ..Default::default() });
        let (s, c) = objects(&sim, NS, "wrong-password");
        let res = Resources::from_objects(NS, s, c);
        let e = AdcsSigner::new().check(&issuer(spec(&sim)), &res).await.unwrap_err();
        assert_eq!(reaction(&e), "issuer-not-ready", "{mode:?}: {e}");
        let want = if mode == Mode::Kerberos { "preauthentication failed" } else { "401" };
        assert!(e.to_string().contains("credentials refused") && e.to_string().contains(want), "{e}");
        assert!(!e.to_string().contains("wrong-password"));
    }
}

#[tokio::test]
async fn ntlm_handshakes_are_amortised_by_connection_reuse() {
    let sim = Sim::start(SimOpts::default());
    let signer = AdcsSigner::new();
    let issuer = issuer(spec(&sim));
    let res = resources(&sim);
    for i in 0..5 {
        let req = request(&format!("h{i}.example.com"), &[]);
        signer.sign(&req, &issuer, &mut SignContext::offline(res.clone())).await.expect("issued");
    }
    let t = signer.totals();
    assert_eq!((t.connections, t.handshakes), (1, 1), "{t:?}");
    assert_eq!(sim.counters()["handshakes"], 1);
}

#[tokio::test]
async fn pending_then_approved_across_a_restart_submits_once() {
    let sim = Sim::start(SimOpts::default());
    let mut s = spec(&sim);
    s.template = "Manual".into();
    let issuer = issuer(s);
    let res = resources(&sim);
    let req = request("manual.example.com", &[]);
    let store = Store::default();
    let e = AdcsSigner::new().sign(&req, &issuer, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
    assert_eq!(reaction(&e), "pending", "{e}");
    assert_eq!(e.condition.as_ref().map(|c| c.reason.as_str()), Some("WaitingForApproval"));
    let saved = store.last();
    let id: u64 = saved[state::REQ_ID].parse().unwrap();
    // A new signer (restarted controller) with the saved state: still pending, polls only.
    let restarted = AdcsSigner::new();
    let e = restarted.sign(&req, &issuer, &mut ctx(&res, saved.clone(), &store)).await.unwrap_err();
    assert_eq!(reaction(&e), "pending", "{e}");
    sim.approve(id);
    let issued = restarted.sign(&req, &issuer, &mut ctx(&res, saved, &store)).await.expect("issued after approval");
    openssl_verify(&issued.chain_pem, &sim.root_pem);
    assert_eq!(sim.enrollments(&req.csr_pem), 1, "submitted exactly once");
}

#[tokio::test]
async fn pending_then_denied_is_failed_verbatim() {
    let sim = Sim::start(SimOpts::default());
    let mut s = spec(&sim);
    s.template = "Manual".into();
    let issuer = issuer(s);
    let res = resources(&sim);
    let req = request("deny.example.com", &[]);
    let store = Store::default();
    let signer = AdcsSigner::new();
    signer.sign(&req, &issuer, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
    let saved = store.last();
    sim.deny(saved[state::REQ_ID].parse().unwrap());
    let e = signer.sign(&req, &issuer, &mut ctx(&res, saved, &store)).await.unwrap_err();
    assert_eq!(reaction(&e), "permanent", "{e}");
    assert!(e.to_string().contains("Denied by CORP\\caadmin") && e.to_string().contains("0x80094014"), "{e}");
}

#[tokio::test]
async fn template_errors_name_the_template() {
    let sim = Sim::start(SimOpts::default());
    let res = resources(&sim);
    let signer = AdcsSigner::new();
    for (template, needle) in [("NoSuchTemplate", "unknown or not published"), ("NoEnroll", "Enroll")] {
        let mut s = spec(&sim);
        s.template = template.into();
        let store = Store::default();
        let e = signer
            .sign(&request("t.example.com", &[]), &issuer(s), &mut ctx(&res, BTreeMap::new(), &store))
            .await
            .unwrap_err();
        assert_eq!(reaction(&e), "permanent", "{e}");
        assert!(e.to_string().contains(&format!("{template:?}")) && e.to_string().contains(needle), "{e}");
        assert!(store.last().contains_key(state::REQ_ID), "the denied page's request ID is kept");
    }
}

#[tokio::test]
async fn template_override_needs_allowed_overrides() {
    let sim = Sim::start(SimOpts::default());
    let res = resources(&sim);
    let signer = AdcsSigner::new();
    let ann = [("adcs.certbridge.io/template", "Other")];
    let e = signer
        .sign(&request("o.example.com", &ann), &issuer(spec(&sim)), &mut SignContext::offline(res.clone()))
        .await
        .unwrap_err();
    assert_eq!(reaction(&e), "permanent");
    assert!(e.to_string().contains("spec.allowedOverrides"), "{e}");
    assert_eq!(sim.counters()["submits"], 0, "refused before calling the CA");
    let mut s = spec(&sim);
    s.allowed_overrides = vec![AllowedOverride { name: "template".into(), values: vec!["Other".into()] }];
    let store = Store::default();
    signer
        .sign(&request("o.example.com", &ann), &issuer(s), &mut ctx(&res, BTreeMap::new(), &store))
        .await
        .expect("issued with the override");
    assert_eq!(store.last().get(state::TEMPLATE).map(String::as_str), Some("Other"));
}

#[tokio::test]
async fn bad_csr_is_failed() {
    let sim = Sim::start(SimOpts::default());
    let mut req = request("bad.example.com", &[]);
    req.csr_pem = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into();
    let e = AdcsSigner::new()
        .sign(&req, &issuer(spec(&sim)), &mut SignContext::offline(resources(&sim)))
        .await
        .unwrap_err();
    assert_eq!(reaction(&e), "permanent", "{e}");
    assert!(e.to_string().contains("Error Parsing Request"), "{e}");
}

/// The Ready message names the issuing CA read from the chain (not the root).
#[tokio::test]
async fn check_names_the_issuing_ca() {
    let sim = Sim::start(SimOpts::default());
    let ready = AdcsSigner::new().check(&issuer(spec(&sim)), &resources(&sim)).await.unwrap();
    assert_eq!(ready.text(), Some("signing with AD CS CA CN=Sim Issuing CA, O=certbridge sim"));
}

#[tokio::test]
async fn ca_renewal_refetches_the_chain() {
    let sim = Sim::start(SimOpts::default());
    let signer = AdcsSigner::new();
    let issuer = issuer(spec(&sim));
    let res = resources(&sim);
    signer.check(&issuer, &res).await.unwrap();
    let first =
        signer.sign(&request("r1.example.com", &[]), &issuer, &mut SignContext::offline(res.clone())).await.unwrap();
    assert_eq!(sim.renew(), 1);
    let second =
        signer.sign(&request("r2.example.com", &[]), &issuer, &mut SignContext::offline(res.clone())).await.unwrap();
    openssl_verify(&second.chain_pem, &sim.root_pem);
    assert_ne!(leaf_issuer_key(&first.chain_pem), leaf_issuer_key(&second.chain_pem), "new CA key in the chain");
    assert_eq!(first.ca_pem, second.ca_pem, "same root");
}

#[tokio::test]
async fn unknown_pages_and_faults_are_transient() {
    let sim = Sim::start(SimOpts::default());
    let signer = AdcsSigner::new();
    let issuer = issuer(spec(&sim));
    let res = resources(&sim);
    sim.fault("unknown-page", "certfnsh.asp", 1);
    let e =
        signer.sign(&request("u.example.com", &[]), &issuer, &mut SignContext::offline(res.clone())).await.unwrap_err();
    assert_eq!(reaction(&e), "transient", "{e}");
    assert!(e.to_string().contains("Corp Login Portal"), "{e}");
    sim.fault("huge", "certfnsh.asp", 1);
    let e =
        signer.sign(&request("u.example.com", &[]), &issuer, &mut SignContext::offline(res.clone())).await.unwrap_err();
    assert_eq!(reaction(&e), "transient", "{e}");
    assert!(e.to_string().contains("larger than 1024 KiB"), "{e}");
    sim.fault("500", "certfnsh.asp", 1);
    let e =
        signer.sign(&request("u.example.com", &[]), &issuer, &mut SignContext::offline(res.clone())).await.unwrap_err();
    assert_eq!(reaction(&e), "transient", "{e}");
    // The one window certsrv leaves: the CA recorded the submit, the answer never arrived.
    let req = request("window.example.com", &[]);
    let store = Store::default();
    sim.fault("drop-answer", "certfnsh.asp", 1);
    let e = signer.sign(&req, &issuer, &mut ctx(&res, BTreeMap::new(), &store)).await.unwrap_err();
    assert_eq!(reaction(&e), "transient", "{e}");
    let saved = store.last();
    assert_eq!(saved.get(state::SUBMIT_ATTEMPTS).map(String::as_str), Some("1"));
    assert!(!saved.contains_key(state::REQ_ID));
    signer.sign(&req, &issuer, &mut ctx(&res, saved, &store)).await.expect("issued on the next attempt");
    assert_eq!(store.last().get(state::SUBMIT_ATTEMPTS).map(String::as_str), Some("2"));
    assert_eq!(sim.enrollments(&req.csr_pem), 2, "the documented double submit");
}
