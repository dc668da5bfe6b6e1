//! Tenant isolation on shared tokens: the controller's token policy, a tenant's different PIN
//! compared with the proven one (no C_Login, no logout), the failed-login budget, and grants
//! capping the tenant's own policy. Each test plays a namespace tenant.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use certbridge::{IssuerScope, SignContext, SignError, Signer};
use certbridge_pkcs11::grants::TokenPolicy;
use certbridge_pkcs11::module::{DEFAULT_MODULE, load};
use certbridge_pkcs11::token::{Token, TokenSelector};

use crate::fixture::*;

/// The one place that reads a reaction (the SignError shape changes with framework v2).
fn reaction(e: &SignError) -> &'static str {
    match e.reaction {
        certbridge::Reaction::Permanent => "permanent",
        certbridge::Reaction::IssuerNotReady => "not-ready",
        certbridge::Reaction::Transient => "transient",
        _ => "pending",
    }
}

fn token(label: &str) -> Arc<Token> {
    let module = load(std::path::Path::new(DEFAULT_MODULE)).unwrap();
    Token::find(&module, &TokenSelector { label: Some(label.into()), serial: None }, 4).unwrap()
}

fn cluster_issuer(
    name: &str,
    spec: certbridge_pkcs11::Pkcs11IssuerSpec,
) -> certbridge::Issuer<certbridge_pkcs11::Pkcs11IssuerSpec> {
    certbridge::Issuer { namespace: None, scope: IssuerScope::Cluster, ..issuer(name, spec) }
}

fn logins(t: &Token) -> u64 {
    t.stats().login_attempts.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_tenant_without_a_grant_is_refused_before_any_pkcs11_call() {
    let h = hsm();
    let ca_pem = h.ca_pem(SHARED, "p256");
    let tok = token(SHARED);
    let (logins0, sessions0) = (logins(&tok), tok.stats().sessions_opened.load(Ordering::SeqCst));
    // The controller's default policy: cluster issuers only.
    let signer = certbridge_pkcs11::Pkcs11Signer::with_config(
        certbridge_pkcs11::module::AllowedModules::new([DEFAULT_MODULE]),
        2,
    );
    let tenant = issuer("borrowed", spec(SHARED, "p256"));
    // Even with the right PIN: the namespace was not granted the token.
    let e = signer.check(&tenant, &resources(PIN, &ca_pem)).await.unwrap_err();
    assert_eq!(reaction(&e), "not-ready", "{e}");
    assert!(e.to_string().contains("--token-policy") && e.to_string().contains("namespace \"team-a\""), "{e}");
    let e = signer
        .sign(
            &request(&openssl_csr("ec:P-256", "/CN=x", "DNS:x"), 24, false, &[]),
            &tenant,
            &mut SignContext::offline(resources(PIN, &ca_pem)),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--token-policy"), "{e}");
    assert_eq!(logins(&tok), logins0, "no C_Login for an ungranted token");
    assert_eq!(tok.stats().sessions_opened.load(Ordering::SeqCst), sessions0, "no session opened");
    // The cluster issuer may.
    signer.check(&cluster_issuer("root", spec(SHARED, "p256")), &resources(PIN, &ca_pem)).await.unwrap();

    // A policy file granting another namespace does not help team-a.
    let other = TokenPolicy::parse(
        "grants:\n- namespaces: [team-b]\n  token: {label: shared}\n",
        "/etc/certbridge/token-policy.yaml",
    )
    .unwrap();
    let signer = certbridge_pkcs11::Pkcs11Signer::with_config(
        certbridge_pkcs11::module::AllowedModules::new([DEFAULT_MODULE]),
        2,
    )
    .with_token_policy(other);
    let e = signer.check(&tenant, &resources(PIN, &ca_pem)).await.unwrap_err();
    assert!(e.to_string().contains("/etc/certbridge/token-policy.yaml"), "{e}");
}

#[tokio::test]
async fn a_tenants_different_pin_is_compared_not_tried_and_grants_cap_the_policy() {
    let h = hsm();
    let ca_pem = h.ca_pem(SHARED, "p256");
    let policy = TokenPolicy::parse(
        "grants:\n- cluster: true\n  token: {label: shared}\n- namespaces: [team-a]\n  token: {label: shared}\n  maxDuration: 48h\n  allowCA: false\n",
        "policy.yaml",
    )
    .unwrap();
    let signer = certbridge_pkcs11::Pkcs11Signer::with_config(
        certbridge_pkcs11::module::AllowedModules::new([DEFAULT_MODULE]),
        2,
    )
    .with_token_policy(policy);
    let root = cluster_issuer("root", spec(SHARED, "p256"));
    let good = resources(PIN, &ca_pem);
    signer.check(&root, &good).await.unwrap();
    let tok = token(SHARED);
    let before = logins(&tok);

    // A tenant guesses PINs through its own issuer: each is refused by comparison, never sent.
    let tenant = issuer("guess", spec(SHARED, "p256"));
    for guess in ["0000", "1234", "4320", "43210"] {
        let e = signer.check(&tenant, &resources(guess, &ca_pem)).await.unwrap_err();
        assert_eq!(reaction(&e), "not-ready", "{e}");
        assert!(e.to_string().contains("not the PIN token \"shared\" is logged in with"), "{e}");
        assert!(!e.to_string().contains(guess), "the PIN never appears in messages");
    }
    assert_eq!(logins(&tok), before, "no C_Login for a tenant's different PIN");
    // The cluster issuer was not logged out: it signs without logging in again.
    let issued = signer
        .sign(
            &request(&openssl_csr("ec:P-256", "/CN=a.example", "DNS:a.example"), 24, false, &[]),
            &root,
            &mut SignContext::offline(good.clone()),
        )
        .await
        .unwrap();
    openssl_verify(&ca_pem, &issued).unwrap();
    assert_eq!(logins(&tok), before, "still logged in");

    // The grant caps what the tenant's own spec.policy may allow.
    let wide = issuer("wide", {
        let mut s = spec(SHARED, "p256");
        s.policy.allow_ca = true;
        s
    });
    let e = signer.check(&wide, &good).await.unwrap_err();
    assert!(e.to_string().contains("spec.policy.allowCA") && e.to_string().contains("policy.yaml"), "{e}");
    let tenant = issuer("capped", spec(SHARED, "p256"));
    signer.check(&tenant, &good).await.unwrap();
    // Unset maxDuration takes the grant's 48h: a 72h request is refused.
    let e = signer
        .sign(
            &request(&openssl_csr("ec:P-256", "/CN=b.example", "DNS:b.example"), 72, false, &[]),
            &tenant,
            &mut SignContext::offline(good.clone()),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("maxDuration") || e.to_string().contains("48h") || e.to_string().contains("2days"),
        "{e}"
    );
    signer
        .sign(
            &request(&openssl_csr("ec:P-256", "/CN=c.example", "DNS:c.example"), 24, false, &[]),
            &tenant,
            &mut SignContext::offline(good),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn failed_logins_are_budgeted_per_token() {
    let h = hsm();
    let ca_pem = h.ca_pem(LIMITED, "p256");
    let signer = signer();
    let tok = token(LIMITED);
    let before = logins(&tok);
    // No PIN proven yet: tenants edit their Secret again and again with new guesses.
    let mut limited = 0;
    for (i, guess) in ["1111", "2222", "3333", "5555", "6666", "7777"].iter().enumerate() {
        let iss = issuer(&format!("guess-{i}"), spec(LIMITED, "p256"));
        let e = signer.check(&iss, &resources(guess, &ca_pem)).await.unwrap_err();
        if e.to_string().contains("one failed login per token per minute") {
            limited += 1;
            assert_eq!(reaction(&e), "not-ready", "retried later: {e}");
        }
    }
    assert_eq!(logins(&tok) - before, 2, "only the burst of two reached C_Login");
    assert_eq!(limited, 4);
    let info = load(std::path::Path::new(DEFAULT_MODULE)).unwrap();
    let slot = info
        .ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| info.ctx.get_token_info(*s).is_ok_and(|i| i.label().trim_end() == LIMITED))
        .unwrap();
    assert!(!info.ctx.get_token_info(slot).unwrap().user_pin_locked());
}
