//! The tenant who writes a VaultIssuer: cannot have the controller send credentials over plain
//! HTTP to a server of their choosing, nor mint service-account tokens for an audience of their
//! choosing (such as the API server's). No OpenBao needed: a listener records what reaches it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use certbridge::{SignError, Signer};
use certbridge_testkit::endless::{EndlessServer, rss_kib};
use certbridge_vault::VaultSigner;
use certbridge_vault::flags::ControllerPolicy;
use certbridge_vault::spec::{KubernetesAuth, ServiceAccountRef, VaultAuth, VaultSpec};

use crate::{NS, issuer, key_ref, resources, secret};

/// The one place that reads a reaction (the SignError shape changes with framework v2).
fn reaction(e: &SignError) -> &'static str {
    match e.reaction {
        certbridge::Reaction::IssuerNotReady => "not-ready",
        certbridge::Reaction::Permanent => "permanent",
        _ => "other",
    }
}

/// A plain-HTTP listener that counts connections (what a tenant's server would see).
async fn tenant_server() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn credentials_never_go_to_an_http_server() {
    let (server, seen) = tenant_server().await;
    let token = "hvs.tenant-visible-if-sent";
    let auth = VaultAuth { token_secret_ref: Some(key_ref("vault-token", "token")), ..Default::default() };
    let spec = VaultSpec { server: server.clone(), path: "pki/sign/web".into(), auth, ..Default::default() };
    let res = resources(vec![secret("vault-token", &[("token", token)])]);
    let e = VaultSigner::new().check(&issuer(spec.clone()), &res).await.unwrap_err();
    assert_eq!(reaction(&e), "not-ready", "{e}");
    assert!(e.to_string().contains("is not https://") && e.to_string().contains("--allow-insecure-http"), "{e}");
    assert!(!e.to_string().contains(token));
    assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing was sent to the http:// server");
    // Mixed-case scheme is the same URL.
    let upper = VaultSpec { server: server.replace("http://", "HTTP://"), ..spec.clone() };
    assert!(VaultSigner::new().check(&issuer(upper), &res).await.is_err());
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    // The dev flag lets the request through (to a server that is not Vault: it fails later).
    let _ = VaultSigner::dev().check(&issuer(spec), &res).await;
    assert!(seen.load(Ordering::SeqCst) > 0, "the dev flag is what allowed it");
}

#[tokio::test]
async fn token_audiences_are_not_the_tenants_to_choose() {
    let auth = |audiences: Vec<String>| VaultAuth {
        kubernetes: Some(KubernetesAuth {
            role: "certbridge".into(),
            mount_path: None,
            secret_ref: None,
            service_account_ref: Some(ServiceAccountRef { name: "cert-manager".into(), audiences }),
        }),
        ..Default::default()
    };
    let spec = |audiences| VaultSpec {
        server: "https://127.0.0.1:1".into(),
        path: "pki/sign/web".into(),
        auth: auth(audiences),
        ..Default::default()
    };
    // A token valid at the API server would let the tenant's Vault (or anyone it shows it to)
    // act as the service account against Kubernetes.
    let api = "https://kubernetes.default.svc.cluster.local".to_string();
    let e = VaultSigner::new().check(&issuer(spec(vec![api.clone()])), &resources(vec![])).await.unwrap_err();
    assert_eq!(reaction(&e), "not-ready", "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("spec.auth.kubernetes.serviceAccountRef.audiences[0]") && msg.contains("--allowed-token-audience"),
        "{msg}"
    );
    // An audience the operator allowed passes this gate (and then fails to connect to port 1).
    let allowed = VaultSigner::new()
        .with_policy(ControllerPolicy { allowed_audiences: vec!["vault://shared".into()], allow_insecure_http: false });
    let e = allowed.check(&issuer(spec(vec!["vault://shared".into()])), &resources(vec![])).await.unwrap_err();
    assert!(!e.to_string().contains("audiences[0]"), "{e}");
    let e = allowed.check(&issuer(spec(vec!["vault://shared".into(), api])), &resources(vec![])).await.unwrap_err();
    assert!(e.to_string().contains("audiences[1]"), "{e}");
    let _ = NS;
}

#[tokio::test]
async fn an_endless_answer_fails_cleanly_with_flat_memory() {
    let endless = EndlessServer::http().await.unwrap();
    let server = endless.url();
    let auth = VaultAuth { token_secret_ref: Some(key_ref("vault-token", "token")), ..Default::default() };
    let spec = VaultSpec { server, path: "pki/sign/web".into(), auth, ..Default::default() };
    let res = resources(vec![secret("vault-token", &[("token", "hvs.some-token")])]);
    let before = rss_kib();
    let e = VaultSigner::dev().check(&issuer(spec), &res).await.unwrap_err();
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(e.to_string().contains("larger than 4194304 bytes"), "{e}");
    assert!(grown_mib < 64, "RSS grew by {grown_mib} MiB reading a 1 GiB answer");
    assert!(endless.sent_mib() < 1024, "the client stopped reading long before 1 GiB");
}
