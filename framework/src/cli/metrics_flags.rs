//! `run`'s `--metrics-*` flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::runtime::serve::MetricsServing;

/// Where and how `/metrics` is served: HTTPS with authentication and authorization by default
/// (controller-runtime's default since v0.19), plain HTTP only when asked for.
#[derive(clap::Args)]
pub(super) struct MetricsArgs {
    /// Serve Prometheus metrics on this address (`/metrics`): over HTTPS, and only to a caller
    /// whose bearer token the API server accepts (TokenReview) and who may `get` the non-resource
    /// URL `/metrics` (SubjectAccessReview); the controller needs `create` on `tokenreviews` and
    /// `subjectaccessreviews`. See --metrics-insecure.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Serve `/metrics` over plain HTTP to anyone who reaches the port (no TLS, no token): for
    /// development, or where the network alone decides who scrapes.
    #[arg(long)]
    metrics_insecure: bool,
    /// PEM certificate (chain) for HTTPS `/metrics`, with --metrics-key-file. Default: a
    /// self-signed certificate made at start and kept in memory.
    #[arg(long, value_name = "FILE", requires = "metrics_key_file", conflicts_with = "metrics_insecure")]
    metrics_cert_file: Option<PathBuf>,
    /// PEM private key of --metrics-cert-file.
    #[arg(long, value_name = "FILE", requires = "metrics_cert_file", conflicts_with = "metrics_insecure")]
    metrics_key_file: Option<PathBuf>,
}

impl MetricsArgs {
    /// What the flags ask the process to serve.
    pub(super) fn serving(&self) -> MetricsServing {
        MetricsServing {
            addr: self.metrics_addr,
            insecure: self.metrics_insecure,
            cert_file: self.metrics_cert_file.clone(),
            key_file: self.metrics_key_file.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;
    use crate::runtime::serve::Renderer;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        metrics: MetricsArgs,
    }

    fn parse(args: &[&str]) -> Result<MetricsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|c| c.metrics)
    }

    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    fn renderer() -> Renderer {
        let render: Renderer = Arc::default();
        let _ = render.set(Box::new(|| "certbridge_up 1\n# EOF\n".to_owned()));
        render
    }

    /// `GET /metrics` with reqwest (trusting `ca_pem`, when given; with a bearer `token`);
    /// (status, body).
    async fn get(url: &str, ca_pem: Option<&str>, token: Option<&str>) -> reqwest::Result<(u16, String)> {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(ca) = ca_pem {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?);
        }
        let mut req = b.build()?.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    #[test]
    fn certificate_files_come_in_pairs_and_not_with_plain_http() {
        assert!(parse(&["--metrics-cert-file=c.pem"]).is_err(), "a certificate needs its key");
        assert!(parse(&["--metrics-key-file=k.pem"]).is_err());
        assert!(parse(&["--metrics-insecure", "--metrics-cert-file=c.pem", "--metrics-key-file=k.pem"]).is_err());
        let m = parse(&["--metrics-addr=127.0.0.1:9402"]).unwrap();
        assert!(!m.metrics_insecure, "HTTPS with authentication is the default");
    }

    /// `run`'s default is HTTPS asking the API server (kube-sim) about each token; plain HTTP only
    /// with `--metrics-insecure`.
    #[tokio::test]
    async fn https_with_token_review_by_default_plain_http_by_flag() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = certbridge_testkit::KubeSim::start().await.unwrap();
        let client = sim.client();

        // Default, with an operator certificate from files (so the client can trust exactly it).
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let addr = free_addr();
        let args = [
            format!("--metrics-addr={addr}"),
            format!("--metrics-cert-file={}", cert_file.display()),
            format!("--metrics-key-file={}", key_file.display()),
        ];
        parse(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .unwrap()
            .serving()
            .serve(renderer(), &client)
            .await
            .unwrap();
        let https = format!("https://localhost:{}/metrics", addr.port());
        assert_eq!(get(&https, Some(&cert.pem()), None).await.unwrap().0, 401, "no token, no metrics");
        // A genuine ServiceAccount token without RBAC for /metrics: kube-sim's TokenReview accepts
        // it, its SubjectAccessReview refuses it.
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::ServiceAccount;
        let sas = kube::Api::<ServiceAccount>::namespaced(client.clone(), "default");
        let sa = serde_json::from_value(serde_json::json!({"metadata": {"name": "tenant"}})).unwrap();
        sas.create(&Default::default(), &sa).await.unwrap();
        let token = sas
            .create_token_request("tenant", &Default::default(), &TokenRequest::default())
            .await
            .unwrap()
            .status
            .unwrap()
            .token;
        let (status, body) = get(&https, Some(&cert.pem()), Some(&token)).await.unwrap();
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("system:serviceaccount:default:tenant"), "{body}");
        assert!(get(&format!("http://{addr}/metrics"), None, None).await.is_err(), "no plain HTTP on the HTTPS port");

        // --metrics-insecure: plain HTTP, anyone.
        let addr = free_addr();
        parse(&[&format!("--metrics-addr={addr}"), "--metrics-insecure"])
            .unwrap()
            .serving()
            .serve(renderer(), &client)
            .await
            .unwrap();
        let (status, body) = get(&format!("http://{addr}/metrics"), None, None).await.unwrap();
        assert_eq!((status, body.as_str()), (200, "certbridge_up 1\n# EOF\n"));

        // No --metrics-addr: nothing is served.
        parse(&[]).unwrap().serving().serve(renderer(), &client).await.unwrap();
    }
}
