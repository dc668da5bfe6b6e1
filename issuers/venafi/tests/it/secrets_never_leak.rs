//! Secrets never leak: the `certbridge-venafi` controller binary at TRACE (every target, kube,
//! hyper and reqwest included) signs through one issuer per auth mode — TPP username/password,
//! access token, refresh token; Cloud API key and service-account JWT — and reports one with a
//! wrong password. No secret value used — passwords, tokens, the API key, the JWT, nor any token
//! the simulator issued on a login or refresh — appears in its log, its metrics, an Event, or a
//! request's or issuer's status and annotations.

use std::time::Duration;

use certbridge::testing::{
    approve, certificate_request, create_certificate_request, create_issuer, generate_csr, install_crds,
    wait_issuer_not_ready, wait_issuer_ready, wait_ready,
};
use certbridge::{IssuerScope, KeyKind};
use certbridge_testkit::KubeSim;
use certbridge_testkit::leaks::{Needles, Published, TracedController};
use certbridge_venafi::VenafiIssuerSpec;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::common::{Auth, NS, secret_in, secrets, sim, spec};

const WAIT: Duration = Duration::from_secs(60);

/// Words shaped like the simulator's tokens (32 ASCII letters and digits, mixed case and
/// digits) anywhere the controller wrote or published: logins and refreshes mint tokens the
/// test cannot name in advance.
fn token_like(published: &Published) -> Vec<String> {
    let mut texts = vec![("the controller's log".to_owned(), published.log.as_str())];
    texts.push(("/metrics".into(), published.metrics.as_str()));
    texts.extend(published.objects.iter().map(|(w, t)| (w.clone(), t.as_str())));
    let mut found = Vec::new();
    for (place, text) in texts {
        for (n, line) in text.lines().enumerate() {
            // A piece of a base64 blob (a certificate, a CSR; `+`, `/`) or of a base64url one (the state
            // MAC annotation; `-`, `_`) is cut off by those characters, and by chance one piece in a
            // few objects is 32 mixed alphanumerics: that made this test flaky. A token stands alone:
            // in quotes, after `=`, between spaces.
            let mut at = 0;
            for w in line.split(|c: char| !c.is_ascii_alphanumeric()) {
                let (start, end) = (at, at + w.len());
                at = end + 1;
                let in_blob = |i: Option<usize>| {
                    i.and_then(|i| line.as_bytes().get(i)).is_some_and(|b| matches!(b, b'+' | b'/' | b'-' | b'_'))
                };
                if w.len() == 32
                    && !in_blob(start.checked_sub(1))
                    && !in_blob(Some(end))
                    && w.chars().any(|c| c.is_ascii_uppercase())
                    && w.chars().any(|c| c.is_ascii_lowercase())
                    && w.chars().any(|c| c.is_ascii_digit())
                {
                    found.push(format!("a 32-character token-like word in {place} (line {})", n + 1));
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
    install_crds::<VenafiIssuerSpec>(&client).await.unwrap();
    let venafi = sim().await;
    let o = venafi.options().clone();
    let wrong_password = "wrong-password-6e2f90ab";

    let api = Api::<Secret>::namespaced(client.clone(), NS);
    let mut needles = Needles::new()
        .value("the TPP password", &o.password)
        .value("the wrong TPP password", wrong_password)
        .value("the Cloud API key", &o.api_key)
        .value("the Cloud service-account JWT", &o.jwt);
    let modes = [
        ("tpp-password", Auth::Password),
        ("tpp-access", Auth::AccessToken),
        ("tpp-refresh", Auth::RefreshToken),
        ("cloud-key", Auth::ApiKey),
        ("cloud-sa", Auth::ServiceAccount),
    ];
    let mut created_ca = false;
    for (name, auth) in modes {
        for mut s in secrets(&venafi, auth, NS) {
            if s.metadata.name.as_deref() == Some("venafi-ca") {
                if created_ca {
                    continue;
                }
                created_ca = true;
            } else {
                s.metadata.name = Some(name.into());
                let mut values: Vec<(String, String)> = s.string_data.clone().unwrap_or_default().into_iter().collect();
                for (k, v) in s.data.clone().unwrap_or_default() {
                    values.push((k, String::from_utf8(v.0).unwrap()));
                }
                for (key, value) in values {
                    if key == "access-token" || key == "refresh-token" {
                        needles = needles.value(&format!("{name}'s {key}"), &value);
                    }
                }
            }
            api.create(&PostParams::default(), &s).await.unwrap();
        }
        create_issuer(&client, IssuerScope::Namespaced, NS, name, &with_secret(spec(&venafi, auth), name))
            .await
            .unwrap();
    }
    api.create(
        &PostParams::default(),
        &secret_in(NS, "wrong-password", &[("username", &o.username), ("password", wrong_password)]),
    )
    .await
    .unwrap();
    create_issuer(
        &client,
        IssuerScope::Namespaced,
        NS,
        "tpp-wrong",
        &with_secret(spec(&venafi, Auth::Password), "wrong-password"),
    )
    .await
    .unwrap();

    let bin = env!("CARGO_BIN_EXE_certbridge-venafi");
    let controller =
        TracedController::start(bin, &kube, &["--cluster-resource-namespace=cert-manager"], &[]).await.unwrap();
    wait_issuer_not_ready::<VenafiIssuerSpec>(&client, IssuerScope::Namespaced, NS, "tpp-wrong", None, WAIT)
        .await
        .unwrap();
    for (name, _) in modes {
        wait_issuer_ready::<VenafiIssuerSpec>(&client, IssuerScope::Namespaced, NS, name, WAIT).await.unwrap();
        let (csr, _key) = generate_csr(&KeyKind::EcP256, &[&format!("{name}.team-a.example")]).unwrap();
        let cr = certificate_request::<VenafiIssuerSpec>(NS, name, &csr, IssuerScope::Namespaced, name);
        create_certificate_request(&client, &cr).await.unwrap();
        approve(&client, NS, name).await.unwrap();
        wait_ready(&client, NS, name, WAIT).await.unwrap();
    }
    assert!(venafi.logins() > 0 && venafi.refreshes() > 0, "logins and a refresh minted tokens");

    let published = controller.finish(&client, &["venafi.certbridge.io/v1alpha1/venafiissuers"]).await.unwrap();
    published.search(&needles);
    assert_eq!(token_like(&published), Vec::<String>::new(), "no token, whoever minted it");
}

/// `spec` reading its credentials from Secret `name`.
fn with_secret(mut spec: VenafiIssuerSpec, name: &str) -> VenafiIssuerSpec {
    if let Some(tpp) = spec.tpp.as_mut() {
        tpp.credentials_ref.name = name.into();
    }
    if let Some(cloud) = spec.cloud.as_mut() {
        if let Some(r) = cloud.api_token_secret_ref.as_mut() {
            r.name = name.into();
        }
        if let Some(sa) = cloud.service_account.as_mut() {
            sa.jwt_secret_ref.name = name.into();
        }
    }
    spec
}
