//! Secrets never leak: the `certbridge-vault` controller binary at TRACE (every target, kube,
//! hyper and reqwest included) against OpenBao over HTTPS, with AppRole, a static token, client
//! certificate and Kubernetes (serviceAccountRef) auth, plus a bad AppRole secret; it signs,
//! refuses, and reports. No secret value used — secret IDs, tokens, the client key, the
//! service-account JWT kube-sim minted, any Vault token OpenBao handed out — appears in its log,
//! its metrics, an Event, or a request's or issuer's status and annotations.

use std::time::Duration;

use certbridge::testing;
use certbridge::{IssuerScope, KeyKind};
use certbridge_testkit::leaks::{Needles, Published, TracedController};
use certbridge_vault::spec::{AppRoleAuth, ClientCertificateAuth, KubernetesAuth, ServiceAccountRef, VaultAuth};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;

use crate::*;

const WAIT: Duration = Duration::from_secs(60);

/// OpenBao service tokens (`s.` + 24 characters, or `hvs.…`) and JWTs (`eyJ…` header), found in
/// any text the controller wrote or published.
fn token_like(published: &Published) -> Vec<String> {
    let mut texts = vec![("the controller's log".to_owned(), published.log.as_str())];
    texts.push(("/metrics".into(), published.metrics.as_str()));
    texts.extend(published.objects.iter().map(|(w, t)| (w.clone(), t.as_str())));
    let mut found = Vec::new();
    for (place, text) in texts {
        for w in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')) {
            let vault_token =
                (w.len() == 26 && w.starts_with("s.") && w[2..].chars().all(|c| c.is_ascii_alphanumeric()))
                    || (w.starts_with("hvs.") && w.len() > 20);
            let jwt = w.starts_with("eyJ") && w.matches('.').count() == 2 && w.len() > 40;
            if vault_token || jwt {
                found.push(format!("a {} in {place}", if jwt { "JWT" } else { "Vault token" }));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_trace_logs_events_status_or_metrics() {
    let sim = certbridge_testkit::KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let client = sim.client();
    testing::install_crds::<VaultSpec>(&client).await.unwrap();
    testing::create_namespace(&client, NS).await.unwrap();
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some("vault-issuer".into()), ..Default::default() },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), NS).create(&PostParams::default(), &sa).await.unwrap();

    let (bao, _pki) = openbao().await;
    let (role_id, secret_id) = bao.approle("certbridge", "1h", "24h").await.unwrap();
    let static_token = bao.create_token("1h", true, None).await.unwrap();
    bao.cert_auth("certbridge").await.unwrap();
    bao.kubernetes_auth(&sim.url(), "certbridge", NS, "vault-issuer", Some("vault://team-a/vault-k8s")).await.unwrap();
    let bad_secret_id = "bad-secret-id-value-7c41e09a";

    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    for s in [
        secret("approle", &[("secretId", &secret_id)]),
        secret("bad-approle", &[("secretId", bad_secret_id)]),
        secret("token", &[("token", &static_token)]),
        secret("client", &[("tls.crt", &bao.client.cert_pem), ("tls.key", &bao.client.key_pem)]),
    ] {
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let approle = |secret: &str| VaultAuth {
        app_role: Some(AppRoleAuth {
            path: "approle".into(),
            role_id: role_id.clone(),
            secret_ref: SecretKeyRef { name: secret.into(), key: None },
        }),
        ..Default::default()
    };
    let issuers = [
        ("vault-approle", approle("approle")),
        ("vault-bad", approle("bad-approle")),
        ("vault-token", VaultAuth { token_secret_ref: Some(key_ref("token", "token")), ..Default::default() }),
        (
            "vault-cert",
            VaultAuth {
                client_certificate: Some(ClientCertificateAuth {
                    mount_path: Some("/v1/auth/cert".into()),
                    name: Some("certbridge".into()),
                    secret_name: Some("client".into()),
                }),
                ..Default::default()
            },
        ),
        (
            "vault-k8s",
            VaultAuth {
                kubernetes: Some(KubernetesAuth {
                    role: "certbridge".into(),
                    mount_path: None,
                    secret_ref: None,
                    service_account_ref: Some(ServiceAccountRef { name: "vault-issuer".into(), audiences: vec![] }),
                }),
                ..Default::default()
            },
        ),
    ];
    for (name, auth) in &issuers {
        let mut s = spec(&bao, auth.clone());
        s.server = bao.tls_addr();
        s.ca_bundle = Some(b64(&bao.listener_ca_pem));
        testing::create_issuer(&client, IssuerScope::Namespaced, NS, name, &s).await.unwrap();
    }

    // HTTPS only: no --allow-insecure-http.
    let bin = env!("CARGO_BIN_EXE_certbridge-vault");
    let controller =
        TracedController::start(bin, &sim, &["--cluster-resource-namespace=cert-manager"], &[]).await.unwrap();
    for (name, _) in &issuers {
        if *name == "vault-bad" {
            testing::wait_issuer_not_ready::<VaultSpec>(&client, IssuerScope::Namespaced, NS, name, None, WAIT)
                .await
                .unwrap();
            continue;
        }
        testing::wait_issuer_ready::<VaultSpec>(&client, IssuerScope::Namespaced, NS, name, WAIT).await.unwrap();
        let (csr_pem, _key) = testing::generate_csr(&KeyKind::EcP256, &["app.example.com"]).unwrap();
        let cr = testing::certificate_request::<VaultSpec>(NS, name, &csr_pem, IssuerScope::Namespaced, name);
        testing::create_certificate_request(&client, &cr).await.unwrap();
        testing::approve(&client, NS, name).await.unwrap();
        testing::wait_ready(&client, NS, name, WAIT).await.unwrap();
    }
    // A request the role refuses: Failed, with Vault's words (and nothing else).
    let (csr_pem, _key) = testing::generate_csr(&KeyKind::EcP256, &["evil.example.org"]).unwrap();
    let cr = testing::certificate_request::<VaultSpec>(NS, "evil", &csr_pem, IssuerScope::Namespaced, "vault-token");
    testing::create_certificate_request(&client, &cr).await.unwrap();
    testing::approve(&client, NS, "evil").await.unwrap();
    let err = testing::wait_ready(&client, NS, "evil", WAIT).await.unwrap_err().to_string();
    assert!(err.contains("Failed"), "{err}");

    let published = controller.finish(&client, &["vault.certbridge.io/v1alpha1/vaultissuers"]).await.unwrap();
    published.search(
        &Needles::new()
            .value("the AppRole secret ID", &secret_id)
            .value("the bad AppRole secret ID", bad_secret_id)
            .value("the static Vault token", &static_token)
            .value("the OpenBao root token", bao.root_token())
            .pem("the Vault client key", &bao.client.key_pem),
    );
    assert_eq!(token_like(&published), Vec::<String>::new(), "no Vault token or JWT, whoever minted it");
}
