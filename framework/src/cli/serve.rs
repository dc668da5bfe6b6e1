//! The probe and metrics HTTP servers (axum).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// Renders the metrics once the controllers run.
pub(super) type Renderer = Arc<OnceLock<Box<dyn Fn() -> String + Send + Sync>>>;

/// `/healthz` (every controller runs) and `/readyz` (caches synced).
pub(super) async fn health(addr: SocketAddr, ready: Arc<AtomicBool>, alive: Arc<AtomicBool>) -> anyhow::Result<()> {
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

/// `/metrics` in the Prometheus text format.
pub(super) async fn metrics(addr: SocketAddr, render: Renderer) -> anyhow::Result<()> {
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
