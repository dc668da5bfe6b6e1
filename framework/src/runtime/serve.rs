//! The probe and metrics HTTP servers (axum) of a running controller process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// Where and how `/metrics` is served (from `run`'s `--metrics-*` flags): HTTPS with
/// authentication and authorization by default (controller-runtime's default since v0.19), plain
/// HTTP only when asked for.
#[derive(Clone, Debug, Default)]
pub(crate) struct MetricsServing {
    /// No server without an address.
    pub addr: Option<SocketAddr>,
    /// Plain HTTP to anyone who reaches the port.
    pub insecure: bool,
    /// The operator's certificate and key files; default: self-signed at start.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl MetricsServing {
    /// Starts the metrics server asked for (none without an address).
    pub(crate) async fn serve(&self, render: Renderer, client: &kube::Client) -> anyhow::Result<()> {
        let Some(addr) = self.addr else {
            return Ok(());
        };
        if self.insecure {
            return metrics(addr, render).await;
        }
        let tls = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let read = |p: &PathBuf, flag: &str| {
                    std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", p.display()))
                };
                crate::metrics_auth::MetricsTls::from_pem(
                    &read(cert, "--metrics-cert-file")?,
                    &read(key, "--metrics-key-file")?,
                )?
            }
            _ => crate::metrics_auth::MetricsTls::self_signed()?,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the metrics server: {e}"))?;
        let render = Box::new(move || render.get().map(|r| r()).unwrap_or_default());
        let addr = crate::metrics_auth::serve_secure(listener, tls, client.clone(), render)?;
        tracing::info!(%addr, "metrics server listening (HTTPS; TokenReview and SubjectAccessReview on /metrics)");
        Ok(())
    }
}

/// Renders the metrics once the controllers run.
pub(crate) type Renderer = Arc<OnceLock<Box<dyn Fn() -> String + Send + Sync>>>;

/// `/healthz` (every controller runs) and `/readyz` (caches synced).
pub(crate) async fn health(addr: SocketAddr, ready: Arc<AtomicBool>, alive: Arc<AtomicBool>) -> anyhow::Result<()> {
    let healthz = move || {
        let alive = alive.clone();
        async move {
            if alive.load(Ordering::Acquire) {
                (StatusCode::OK, "ok")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "a controller stopped; the process is exiting")
            }
        }
    };
    let app = Router::new().route("/healthz", get(healthz)).route(
        "/readyz",
        get(move || {
            let ready = ready.clone();
            async move {
                if ready.load(Ordering::Acquire) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                }
            }
        }),
    );
    spawn(addr, app, "health").await
}

/// `/metrics` in the Prometheus text format, over plain HTTP (`--metrics-insecure`).
async fn metrics(addr: SocketAddr, render: Renderer) -> anyhow::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move {
                let body = render.get().map(|r| r()).unwrap_or_default();
                (
                    [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    body,
                )
            }
        }),
    );
    spawn(addr, app, "metrics").await
}

async fn spawn(addr: SocketAddr, app: Router, what: &'static str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the {what} server: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "{what} server listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "{what} server stopped");
        }
    });
    Ok(())
}
