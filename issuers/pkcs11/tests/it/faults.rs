//! Bad inputs (each with a clear message), wrong PINs (not ready, never hammered), recovery from
//! closed sessions and logouts, and concurrency without session leaks.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use certbridge::{Reaction, SignError, SignRequest, Signer};
use certbridge_pkcs11::Pkcs11Signer;
use certbridge_pkcs11::module::{AllowedModules, DEFAULT_MODULE, load};
use certbridge_pkcs11::spec::{LeafKeyType, RsaPadding, SignatureSpec};
use certbridge_pkcs11::token::{Token, TokenSelector};
use cryptoki::session::UserType;

use crate::fixture::*;

fn token(label: &str) -> Arc<Token> {
    let module = load(std::path::Path::new(DEFAULT_MODULE)).unwrap();
    Token::find(&module, &TokenSelector { label: Some(label.into()), serial: None }, 4).unwrap()
}

fn slot_of(label: &str) -> cryptoki::slot::Slot {
    let module = load(std::path::Path::new(DEFAULT_MODULE)).unwrap();
    module
        .ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        // A token whose files another test took away answers with an error: not this one.
        .find(|s| module.ctx.get_token_info(*s).is_ok_and(|i| i.label().trim_end() == label))
        .unwrap()
}

fn raw() -> &'static cryptoki_sys::Pkcs11 {
    static RAW: std::sync::OnceLock<cryptoki_sys::Pkcs11> = std::sync::OnceLock::new();
    // SAFETY: loads the same SoftHSM library the crate uses (dlopen returns the loaded instance);
    // only C_CloseAllSessions and C_GetSessionInfo are called through it.
    RAW.get_or_init(|| unsafe { cryptoki_sys::Pkcs11::new(DEFAULT_MODULE).unwrap() })
}

/// Live sessions on `label`'s slot, counted with C_GetSessionInfo over every handle issued so far.
fn live_sessions(label: &str) -> usize {
    let module = load(std::path::Path::new(DEFAULT_MODULE)).unwrap();
    let slot = slot_of(label);
    let probe = module.ctx.open_ro_session(slot).unwrap();
    let top = probe.handle();
    let mut n = 0;
    for h in 1..top {
        let mut info = cryptoki_sys::CK_SESSION_INFO::default();
        // SAFETY: C_GetSessionInfo writes into `info`; invalid handles just return an error code.
        let rv = unsafe { raw().C_GetSessionInfo(h, &mut info) };
        if rv == cryptoki_sys::CKR_OK && info.slotID == slot.id() {
            n += 1;
        }
    }
    n
}

fn assert_permanent(e: &SignError, needle: &str) {
    assert!(e.reaction == Reaction::Permanent, "expected Permanent, got {e:?}");
    assert!(e.to_string().contains(needle), "{needle:?} not in {e}");
}

fn assert_not_ready(e: &SignError, needle: &str) {
    assert!(e.reaction == Reaction::IssuerNotReady, "expected IssuerNotReady, got {e:?}");
    assert!(e.to_string().contains(needle), "{needle:?} not in {e}");
}

fn leaf(key: &str) -> SignRequest {
    request(&openssl_csr(key, "/CN=bad.example.com", "DNS:bad.example.com"), 24, false, &[])
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_field_to_fix() {
    // A tampered CSR never becomes a request.
    let csr = openssl_csr("ec:P-256", "/CN=tamper.example.com", "DNS:tamper.example.com");
    let mut der = pem::parse(&csr).unwrap().into_contents();
    let pos = der.windows(6).position(|w| w == b"tamper").unwrap();
    der[pos] = b'T';
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let e = SignRequest::from_csr_pem::<&str>(&tampered, std::time::Duration::from_secs(60), false, &[]).unwrap_err();
    assert!(e.contains("signature does not verify"), "{e}");

    let ca = Ca::new("p256", |s| {
        s.policy.allowed_key_types = vec![LeafKeyType::EcdsaP256, LeafKeyType::Ed25519];
        s.policy.max_duration = Some("720h".into());
        s.policy.allowed_dns_domains = vec!["example.com".into()];
    });
    ca.check().await.unwrap();
    assert_permanent(&ca.sign(&leaf("rsa:2048")).await.unwrap_err(), "allowedKeyTypes");
    let ca_req = request(&openssl_csr("ec:P-256", "/CN=sub-ca", ""), 24, true, &[]);
    assert_permanent(&ca.sign(&ca_req).await.unwrap_err(), "allowCA");
    let long = request(&openssl_csr("ec:P-256", "/CN=long.example.com", "DNS:long.example.com"), 721, false, &[]);
    assert_permanent(&ca.sign(&long).await.unwrap_err(), "exceeds spec.policy.maxDuration 30days");
    let other = request(&openssl_csr("ec:P-256", "/CN=x", "DNS:evil.test"), 1, false, &[]);
    assert_permanent(&ca.sign(&other).await.unwrap_err(), "\"evil.test\" is outside spec.policy.allowedDnsDomains");
    // The issuer still signs what the policy allows.
    ca.sign(&leaf("ED25519")).await.unwrap();
}

/// cert-manager ≥ 1.20 sends otherName SANs: a UPN is refused unless spec.policy allows it, and
/// then issued by the HSM-backed CA, within the allowed UPN domains.
#[tokio::test]
async fn upns_are_refused_by_default_and_issued_when_the_policy_allows_them() {
    let upn = |value: &str| {
        let san = format!("DNS:alice.example.com,otherName:1.3.6.1.4.1.311.20.2.3;UTF8:{value}");
        request(&openssl_csr("ec:P-256", "/CN=alice", &san), 1, false, &[])
    };
    let alice = upn("alice@corp.example.com");
    let ca = Ca::new("p256", |_| {});
    assert_permanent(&ca.sign(&alice).await.unwrap_err(), "spec.policy.allowedOtherNames [] does not allow");
    let ca = Ca::new("p256", |s| {
        s.policy.allowed_other_names = vec!["UPN".into()];
        s.policy.allowed_upn_domains = vec!["corp.example.com".into()];
    });
    let issued = ca.sign(&alice).await.unwrap();
    openssl_verify(&ca.ca_pem, &issued).unwrap();
    let leaf_der = pem::parse(&issued.chain_pem).unwrap().into_contents();
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
    let sans = &leaf.subject_alternative_name().unwrap().unwrap().value.general_names;
    assert!(
        sans.iter().any(|n| matches!(n, x509_parser::extensions::GeneralName::OtherName(oid, v)
            if oid.to_id_string() == "1.3.6.1.4.1.311.20.2.3" && v.ends_with(b"alice@corp.example.com"))),
        "{sans:?}"
    );
    assert_permanent(&ca.sign(&upn("admin@other.example")).await.unwrap_err(), "allowedUpnDomains");
}

#[tokio::test]
async fn bad_issuers_fail_check_with_the_fix() {
    let h = hsm();
    // Missing key: not ready (the key may be created later), named.
    let ca = Ca::new("p256", |s| s.key.label = Some("nope".into()));
    let e = ca.check().await.unwrap_err();
    assert_not_ready(&e, "no private key matches label \"nope\" on token \"ca\"");
    assert_not_ready(&ca.sign(&leaf("ec:P-256")).await.unwrap_err(), "no private key");

    // The key of another CA with the same key type: the probe signature proves the mismatch.
    let mut ca = Ca::new("p384", |s| s.key.label = Some("ca-p256".into()));
    ca.resources = resources(PIN, &h.ca_pem(MAIN, "p384"));
    // Not ready rather than Failed: fixing the chain Secret re-checks the issuer.
    assert_not_ready(&ca.check().await.unwrap_err(), "does not match the CA certificate");
    // A key of another type: named as such.
    let ca = Ca::new("p256", |s| s.key.label = Some("ca-rsa2048".into()));
    assert_not_ready(
        &ca.check().await.unwrap_err(),
        "is a RSA key but the CA certificate in spec.caChain holds a EC key",
    );

    // A module outside the allow-list is never loaded.
    let ca = Ca::new("p256", |s| s.module = "/usr/lib/x86_64-linux-gnu/libc.so.6".into());
    assert_permanent(&ca.check().await.unwrap_err(), "is not allowed by this controller");
    let strict = Ca {
        signer: Pkcs11Signer::with_config(AllowedModules::new(["/opt/vendor/libhsm.so"]), 2)
            .with_token_policy(certbridge_pkcs11::grants::TokenPolicy::unrestricted()),
        ..Ca::new("p256", |_| {})
    };
    assert_permanent(&strict.check().await.unwrap_err(), "CERTBRIDGE_PKCS11_ALLOWED_MODULES");

    // PSS on an EC key, an unknown token, garbage chain, a leaf instead of a CA.
    let pss =
        Ca::new("p256", |s| s.signature = Some(SignatureSpec { rsa_padding: RsaPadding::Pss, ..Default::default() }));
    assert_permanent(&pss.check().await.unwrap_err(), "spec.signature applies to RSA CA keys only");
    let ca = Ca::new("p256", |s| s.token.label = Some("no-such-token".into()));
    assert_not_ready(&ca.check().await.unwrap_err(), "no token matches label \"no-such-token\"");
    let mut ca = Ca::new("p256", |_| {});
    ca.resources = resources(PIN, "not a certificate");
    assert_not_ready(&ca.check().await.unwrap_err(), "key \"ca.crt\" is not PEM");
    let good = Ca::new("p256", |_| {});
    let issued = good.sign(&leaf("ec:P-256")).await.unwrap();
    ca.resources = resources(PIN, &issued.chain_pem);
    assert_not_ready(&ca.check().await.unwrap_err(), "is not a CA certificate");
    // A missing PIN Secret: not ready, naming it.
    let mut ca = Ca::new("p256", |_| {});
    ca.resources = certbridge::Resources::from_objects(NS, vec![secret("ca-chain", "ca.crt", &good.ca_pem)], vec![]);
    assert_not_ready(&ca.check().await.unwrap_err(), "Secret \"team-a/hsm-pin\" not found");
}

#[tokio::test]
async fn a_wrong_pin_is_not_ready_and_never_retried_until_the_secret_changes() {
    let h = hsm();
    let ca_pem = h.ca_pem(BADPIN, "p256");
    let signer = signer();
    let iss = issuer("badpin", spec(BADPIN, "p256"));
    let tok = token(BADPIN);
    let before = tok.stats().login_attempts.load(Ordering::SeqCst);
    let wrong = resources("000000", &ca_pem);

    let e = signer.check(&iss, &wrong).await.unwrap_err();
    assert_not_ready(&e, "Secret \"team-a/hsm-pin\" key \"pin\" (spec.pinSecretRef): the user PIN");
    assert!(!e.to_string().contains("000000"), "the PIN never appears in messages");
    assert_eq!(tok.stats().login_attempts.load(Ordering::SeqCst), before + 1, "one C_Login");
    // Re-checks and sign attempts do not send it again.
    for _ in 0..5 {
        let e = signer.check(&iss, &wrong).await.unwrap_err();
        assert_not_ready(&e, "refused before, not sent again");
        let e = signer
            .sign(&leaf("ec:P-256"), &iss, &mut certbridge::SignContext::offline(wrong.clone()))
            .await
            .unwrap_err();
        assert_not_ready(&e, "incorrect");
    }
    assert_eq!(tok.stats().login_attempts.load(Ordering::SeqCst), before + 1, "the token was not hammered");
    let info = load(std::path::Path::new(DEFAULT_MODULE)).unwrap().ctx.get_token_info(slot_of(BADPIN)).unwrap();
    assert!(!info.user_pin_locked());

    // The right PIN (the Secret was fixed) works at once; the wrong one stays refused.
    let right = resources(PIN, &ca_pem);
    signer.check(&iss, &right).await.unwrap();
    let issued = signer.sign(&leaf("ec:P-256"), &iss, &mut certbridge::SignContext::offline(right)).await.unwrap();
    openssl_verify(&ca_pem, &issued).unwrap();
    assert_not_ready(&signer.check(&iss, &wrong).await.unwrap_err(), "not sent again");
    assert_eq!(tok.stats().login_attempts.load(Ordering::SeqCst), before + 2);
}

#[tokio::test]
async fn sessions_closed_and_logouts_are_recovered_without_restart() {
    let h = hsm();
    let ca_pem = h.ca_pem(RECOVER, "p256");
    let signer = signer();
    let iss = issuer("recover", spec(RECOVER, "p256"));
    let res = resources(PIN, &ca_pem);
    let sign = || async {
        let issued = signer.sign(&leaf("ec:P-256"), &iss, &mut certbridge::SignContext::offline(res.clone())).await?;
        openssl_verify(&ca_pem, &issued).map_err(SignError::permanent)?;
        Ok::<_, SignError>(())
    };
    signer.check(&iss, &res).await.unwrap();
    sign().await.unwrap();
    let tok = token(RECOVER);
    let module = load(std::path::Path::new(DEFAULT_MODULE)).unwrap();

    // Someone logs the application out (login state is per token, so all pooled sessions are).
    let logins = tok.stats().login_attempts.load(Ordering::SeqCst);
    let s = module.ctx.open_ro_session(slot_of(RECOVER)).unwrap();
    s.logout().unwrap();
    drop(s);
    sign().await.unwrap();
    assert_eq!(tok.stats().login_attempts.load(Ordering::SeqCst), logins + 1, "logged in again, once");
    // The same for the issuer check, which then proves the key with a fresh signature.
    let s = module.ctx.open_ro_session(slot_of(RECOVER)).unwrap();
    s.logout().unwrap();
    drop(s);
    signer.check(&iss, &res).await.unwrap();
    assert_eq!(tok.stats().login_attempts.load(Ordering::SeqCst), logins + 2, "check logged in again, once");

    // All sessions are closed under us (what a token removal does to sessions).
    let resets = tok.stats().resets.load(Ordering::SeqCst);
    // SAFETY: a plain PKCS#11 call on a slot id of the loaded module.
    let rv = unsafe { raw().C_CloseAllSessions(slot_of(RECOVER).id()) };
    assert_eq!(rv, cryptoki_sys::CKR_OK);
    sign().await.unwrap();
    assert!(tok.stats().resets.load(Ordering::SeqCst) > resets, "the pool noticed and reopened");
    signer.check(&iss, &res).await.unwrap();
    assert!(tok.open_sessions() <= tok.max_sessions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_requests_at_once_share_a_bounded_pool() {
    let h = hsm();
    let ca_pem = h.ca_pem(BURST, "p256");
    let signer = Arc::new(
        Pkcs11Signer::with_config(AllowedModules::new([DEFAULT_MODULE]), 3)
            .with_token_policy(certbridge_pkcs11::grants::TokenPolicy::unrestricted()),
    );
    let iss = Arc::new(issuer("burst", spec(BURST, "p256")));
    let res = resources(PIN, &ca_pem);
    signer.check(&iss, &res).await.unwrap();
    let csr = openssl_csr("ec:P-256", "/CN=burst.example.com", "DNS:burst.example.com");
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (signer, iss, res, csr) = (signer.clone(), iss.clone(), res.clone(), csr.clone());
        tasks.push(tokio::spawn(async move {
            let req = request(&csr, 1, false, &[]);
            signer.sign(&req, &iss, &mut certbridge::SignContext::offline(res)).await
        }));
    }
    let mut serials = std::collections::HashSet::new();
    for t in tasks {
        let issued = t.await.unwrap().unwrap();
        let der = pem::parse(&issued.chain_pem).unwrap().into_contents();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        serials.insert(x.raw_serial().to_vec());
    }
    assert_eq!(serials.len(), 200, "every certificate has its own serial");
    let tok = token(BURST);
    assert!(tok.open_sessions() <= 3, "pool bounded: {}", tok.open_sessions());
    assert_eq!(live_sessions(BURST), tok.open_sessions(), "no session leaked outside the pool");
    assert!(tok.stats().sessions_opened.load(Ordering::SeqCst) <= 4, "sessions are reused, not reopened");
    // The pool's sessions are logged in and usable by anyone in the process.
    let module = load(std::path::Path::new(DEFAULT_MODULE)).unwrap();
    let s = module.ctx.open_ro_session(slot_of(BURST)).unwrap();
    assert!(matches!(
        s.login(UserType::User, Some(&cryptoki::types::AuthPin::new(PIN.into()))),
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _))
    ));
}
