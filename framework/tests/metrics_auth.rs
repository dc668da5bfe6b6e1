//! `/metrics` over HTTPS against kube-sim: TokenReview authenticates the scraper, a
//! SubjectAccessReview on the non-resource URL `/metrics` authorizes it (real RBAC evaluation).

use std::sync::Arc;

use certbridge::metrics_auth::{MetricsTls, serve_secure};
use certbridge_testkit::KubeSim;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::PostParams;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET /metrics` over TLS trusting exactly `cert_pem`; returns (status, body).
async fn scrape(addr: std::net::SocketAddr, cert_pem: &str, token: Option<&str>) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    tls.write_all(format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

async fn token_for(client: &kube::Client, ns: &str, name: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    sas.create_token_request(name, &PostParams::default(), &TokenRequest::default())
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

#[tokio::test]
async fn metrics_need_a_token_allowed_to_get_metrics() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = KubeSim::start().await.unwrap();
    let client = sim.client();
    certbridge::testing::create_namespace(&client, "monitoring").await.unwrap();
    certbridge::testing::create_namespace(&client, "team-a").await.unwrap();
    for (ns, name) in [("monitoring", "prometheus"), ("team-a", "tenant")] {
        let sa = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), ns).create(&PostParams::default(), &sa).await.unwrap();
    }

    let tls = MetricsTls::self_signed().unwrap();
    let cert = tls.cert_pem.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = serve_secure(listener, tls, client.clone(), Box::new(|| "certbridge_up 1\n# EOF\n".to_owned())).unwrap();

    // No token, a forged token: 401.
    assert_eq!(scrape(addr, &cert, None).await.0, 401);
    assert_eq!(scrape(addr, &cert, Some("eyJhbGciOiJFUzI1NiJ9.e30.AAAA")).await.0, 401);
    // A tenant's genuine ServiceAccount token, and Prometheus' before it is granted anything: 403.
    let tenant = token_for(&client, "team-a", "tenant").await;
    let (status, body) = scrape(addr, &cert, Some(&tenant)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("system:serviceaccount:team-a:tenant"), "{body}");
    assert_eq!(scrape(addr, &cert, Some(&token_for(&client, "monitoring", "prometheus").await)).await.0, 403);

    // What the chart installs for Prometheus: get on the non-resource URL /metrics.
    let role = serde_json::from_value(json!({"metadata": {"name": "certbridge-metrics-reader"},
        "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}))
    .unwrap();
    Api::<ClusterRole>::all(client.clone()).create(&PostParams::default(), &role).await.unwrap();
    let binding = serde_json::from_value(json!({"metadata": {"name": "prometheus-certbridge-metrics"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "certbridge-metrics-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}]}))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone()).create(&PostParams::default(), &binding).await.unwrap();

    // A fresh token (decisions are cached per token for a few seconds).
    let prometheus = token_for(&client, "monitoring", "prometheus").await;
    let (status, body) = scrape(addr, &cert, Some(&prometheus)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("certbridge_up 1"), "{body}");
    // The tenant is still refused (with a fresh token too).
    assert_eq!(scrape(addr, &cert, Some(&token_for(&client, "team-a", "tenant").await)).await.0, 403);

    // Plain HTTP to the metrics port gets no metrics.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), tcp.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).contains("certbridge_up"));
    sim.shutdown().await;
}
