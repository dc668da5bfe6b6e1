//! Secrets never leak: the `certbridge-ejbca` controller binary at TRACE (every target, kube,
//! hyper and reqwest included) signs through an mTLS issuer and an OAuth issuer at the EJBCA
//! simulator, and reports an issuer with a wrong OAuth client secret. No secret value used — the
//! mTLS client key, the OAuth client secrets, the access tokens the token endpoint issued, the
//! end-entity enrollment passwords — appears in its log, its metrics, an Event, or a request's or
//! issuer's status and annotations.

use std::time::Duration;

use certbridge::testing::{
    approve, certificate_request, create_certificate_request, create_issuer, generate_csr, install_crds,
    wait_issuer_not_ready, wait_issuer_ready, wait_ready,
};
use certbridge::{IssuerScope, KeyKind};
use certbridge_ejbca::EjbcaIssuerSpec;
use certbridge_ejbca::sim::ApprovalMode;
use certbridge_testkit::KubeSim;
use certbridge_testkit::leaks::{Needles, Published, TracedController};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};

use crate::common::{NS, config_map, secret, sim, spec};

const WAIT: Duration = Duration::from_secs(60);

/// Words shaped like the simulator's access tokens (64 lowercase hex digits) anywhere the
/// controller wrote or published, and any `access_token` field: the token endpoint does not say
/// which tokens it issued. rustls at TRACE prints handshake messages field by field; their
/// `random`, `session_id` and key-share `payload` values are public nonces and keys of the same
/// shape, so those lines are not counted.
fn access_token_like(published: &Published) -> Vec<String> {
    let mut texts = vec![("the controller's log".to_owned(), published.log.as_str())];
    texts.push(("/metrics".into(), published.metrics.as_str()));
    texts.extend(published.objects.iter().map(|(w, t)| (w.clone(), t.as_str())));
    let handshake_field =
        |line: &str| ["random:", "session_id:", "payload:"].iter().any(|f| line.trim().starts_with(f));
    let mut found = Vec::new();
    for (place, text) in texts {
        for (n, line) in text.lines().enumerate() {
            if line.contains("access_token") {
                found.push(format!("an access_token field in {place} (line {})", n + 1));
            }
            if handshake_field(line) {
                continue;
            }
            for w in line.split(|c: char| !c.is_ascii_alphanumeric()) {
                if w.len() == 64 && w.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
                    found.push(format!("a 64-hex-digit word in {place} (line {})", n + 1));
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_trace_logs_events_status_or_metrics() {
    let mut opts = certbridge_testkit::SimOptions::default();
    opts.namespaces.push(NS.into());
    let kube = KubeSim::start_with(opts).await.unwrap();
    kube.install_cert_manager_crds().await.unwrap();
    let client = kube.client();
    install_crds::<EjbcaIssuerSpec>(&client).await.unwrap();
    let ejbca = sim().await;
    ejbca.set_approval(ApprovalMode::Off);

    let (cert, key) = ejbca.client_identity();
    let (id, client_secret) = ejbca.oauth_client();
    let wrong_secret = "wrong-client-secret-0d8e7c51";
    let oauth = |s: &str| {
        secret(
            "x",
            &[
                ("tokenUrl", &ejbca.token_url()),
                ("clientId", &id),
                ("clientSecret", s),
                ("scopes", "ejbca:enroll ejbca:read"),
                ("audience", "ejbca"),
            ],
        )
    };
    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    for (name, mut s) in [
        ("mtls-creds", secret("x", &[("tls.crt", &cert), ("tls.key", &key)])),
        ("oauth-creds", oauth(&client_secret)),
        ("bad-oauth-creds", oauth(wrong_secret)),
    ] {
        s.metadata.name = Some(name.into());
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    Api::<ConfigMap>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &config_map("ejbca-ca", "ca.crt", &ejbca.root_pem()))
        .await
        .unwrap();
    let issuers = [("ejbca-mtls", "mtls-creds"), ("ejbca-oauth", "oauth-creds"), ("ejbca-bad", "bad-oauth-creds")];
    for (name, creds) in issuers {
        let mut s = spec(&ejbca);
        s.ejbca_secret_name = creds.into();
        create_issuer(&client, IssuerScope::Namespaced, NS, name, &s).await.unwrap();
    }

    let bin = env!("CARGO_BIN_EXE_certbridge-ejbca");
    let controller =
        TracedController::start(bin, &kube, &["--cluster-resource-namespace=cert-manager"], &[]).await.unwrap();
    wait_issuer_not_ready::<EjbcaIssuerSpec>(&client, IssuerScope::Namespaced, NS, "ejbca-bad", None, WAIT)
        .await
        .unwrap();
    for name in ["ejbca-mtls", "ejbca-oauth"] {
        wait_issuer_ready::<EjbcaIssuerSpec>(&client, IssuerScope::Namespaced, NS, name, WAIT).await.unwrap();
        let (csr, _key) = generate_csr(&KeyKind::EcP256, &[&format!("{name}.team-a.example")]).unwrap();
        let cr = certificate_request::<EjbcaIssuerSpec>(NS, name, &csr, IssuerScope::Namespaced, name);
        create_certificate_request(&client, &cr).await.unwrap();
        approve(&client, NS, name).await.unwrap();
        wait_ready(&client, NS, name, WAIT).await.unwrap();
    }
    // A request EJBCA refuses (an unknown certificate profile): Failed, with EJBCA's words only.
    let (csr, _key) = generate_csr(&KeyKind::EcP256, &["refused.team-a.example"]).unwrap();
    let mut cr = certificate_request::<EjbcaIssuerSpec>(NS, "refused", &csr, IssuerScope::Namespaced, "ejbca-oauth");
    cr.metadata.annotations =
        Some([("ejbca.certbridge.io/certificateProfileName".to_owned(), "NoSuchProfile".to_owned())].into());
    create_certificate_request(&client, &cr).await.unwrap();
    approve(&client, NS, "refused").await.unwrap();
    let err = wait_ready(&client, NS, "refused", WAIT).await.unwrap_err().to_string();
    assert!(err.contains("Failed"), "{err}");

    let published = controller.finish(&client, &["ejbca.certbridge.io/v1alpha1/ejbcaissuers"]).await.unwrap();
    let mut needles = Needles::new()
        .pem("the mTLS client key", &key)
        .value("the OAuth client secret", &client_secret)
        .value("the wrong OAuth client secret", wrong_secret);
    let passwords: Vec<String> =
        ejbca.requests().into_iter().filter_map(|r| r.body?.get("password")?.as_str().map(str::to_owned)).collect();
    assert!(!passwords.is_empty(), "the enrollments sent end-entity passwords");
    for (i, p) in passwords.iter().enumerate() {
        needles = needles.value(&format!("enrollment password {}", i + 1), p);
    }
    assert!(ejbca.token_calls() > 0, "the OAuth issuer fetched access tokens");
    published.search(&needles);
    assert_eq!(access_token_like(&published), Vec::<String>::new(), "no access token, whichever was issued");
}
