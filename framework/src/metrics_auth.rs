//! `/metrics` over HTTPS with Kubernetes authentication and authorization, as controller-runtime
//! serves it by default (`WithAuthenticationAndAuthorization`):
//!
//! * the caller's bearer token is checked with a `TokenReview` (authentication.k8s.io/v1);
//! * the user it names must be allowed `get` on the non-resource URL `/metrics` by a
//!   `SubjectAccessReview` (authorization.k8s.io/v1), i.e. by RBAC such as a ClusterRole with
//!   `nonResourceURLs: ["/metrics"]` bound to Prometheus' ServiceAccount;
//! * no token → 401, a token the API server does not accept → 401, not allowed → 403, and only
//!   then the metrics.
//!
//! The serving certificate is self-signed at start (ECDSA P-256, memory only) unless the operator
//! mounts one (`--metrics-cert-file`/`--metrics-key-file`); Prometheus scrapes it with
//! `insecure_skip_verify` or the mounted CA, as with controller-runtime. Decisions are cached for
//! [`DECISION_TTL`] per token (hashed) so a scrape every few seconds does not cost two API calls
//! each; the cache is bounded so random tokens cannot grow it without limit.
//!
//! The controller's ServiceAccount needs `create` on `tokenreviews` and `subjectaccessreviews`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long an authentication+authorization decision is reused for the same token.
pub const DECISION_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request for `/metrics` gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The token is valid and its user may `get /metrics`.
    Allowed,
    /// No bearer token, or the API server does not accept it (401).
    Unauthenticated,
    /// The user may not `get /metrics` (403); carries the user name.
    Forbidden(String),
    /// The API server could not be asked (503).
    Unavailable,
}

/// Asks the API server who a token belongs to and whether they may read `/metrics`.
pub struct Authorizer {
    client: kube::Client,
    cache: Mutex<HashMap<[u8; 32], (Decision, Instant)>>,
}

impl Authorizer {
    /// An authorizer using the controller's own client.
    pub fn new(client: kube::Client) -> Self {
        Authorizer { client, cache: Mutex::new(HashMap::new()) }
    }

    /// The decision for a request's `Authorization` header.
    pub async fn decide(&self, authorization: Option<&str>) -> Decision {
        let Some(token) =
            authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty())
        else {
            return Decision::Unauthenticated;
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((d, at)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < DECISION_TTL
        {
            return d.clone();
        }
        let decision = self.ask(token).await;
        if decision != Decision::Unavailable {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, (_, at)| at.elapsed() < DECISION_TTL);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, (decision.clone(), Instant::now()));
        }
        decision
    }

    async fn ask(&self, token: &str) -> Decision {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_owned()), audiences: None },
            ..Default::default()
        };
        let reviewed = match Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &review).await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: TokenReview failed");
                return Decision::Unavailable;
            }
        };
        let status = reviewed.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Decision::Unauthenticated;
        };
        let name = user.username.clone().unwrap_or_default();
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".into()),
                    verb: Some("get".into()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        match Api::<SubjectAccessReview>::all(self.client.clone()).create(&PostParams::default(), &sar).await {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => Decision::Allowed,
            Ok(_) => Decision::Forbidden(name),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: SubjectAccessReview failed");
                Decision::Unavailable
            }
        }
    }
}

/// Serving certificate and key for the metrics server.
pub struct MetricsTls {
    config: Arc<rustls::ServerConfig>,
    /// The certificate served (PEM), for clients that want to pin it (tests).
    pub cert_pem: String,
}

impl MetricsTls {
    /// A self-signed certificate for `localhost`, `127.0.0.1` and `::1` (and the pod's name when
    /// `HOSTNAME` is set), made now and kept in memory.
    pub fn self_signed() -> anyhow::Result<MetricsTls> {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        if let Ok(h) = std::env::var("HOSTNAME")
            && !h.is_empty()
        {
            names.push(h);
        }
        let key = rcgen::KeyPair::generate().context("generating the metrics serving key")?;
        let cert = rcgen::CertificateParams::new(names)
            .context("metrics serving certificate names")?
            .self_signed(&key)
            .context("self-signing the metrics serving certificate")?;
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// A certificate chain and key from PEM text (the operator's files).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<MetricsTls> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("reading the metrics certificate PEM")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("reading the metrics key PEM")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("metrics TLS configuration")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(MetricsTls { config: Arc::new(config), cert_pem: cert_pem.to_owned() })
    }
}

struct AppState {
    auth: Authorizer,
    render: Box<dyn Fn() -> String + Send + Sync>,
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.auth.decide(authorization).await {
        Decision::Allowed => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], (state.render)())
                .into_response()
        }
        Decision::Unauthenticated => (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response(),
        Decision::Forbidden(user) => {
            tracing::debug!(%user, "metrics: not allowed to get /metrics");
            (StatusCode::FORBIDDEN, format!("Forbidden: user {user:?} may not get /metrics\n")).into_response()
        }
        Decision::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "cannot authorize now\n").into_response(),
    }
}

/// Serves `/metrics` over HTTPS on `listener` with authentication and authorization; `render`
/// produces the exposition text. Returns once the server task runs.
pub fn serve_secure(
    listener: TcpListener,
    tls: MetricsTls,
    client: kube::Client,
    render: Box<dyn Fn() -> String + Send + Sync>,
) -> anyhow::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState { auth: Authorizer::new(client), render });
    let app = Router::new().route("/metrics", get(metrics)).with_state(state);
    let listener = TlsListener::start(listener, TlsAcceptor::from(tls.config));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(addr)
}

/// Completed TLS connections for `axum::serve`; handshakes run off the accept path with a
/// deadline, so a client that never finishes one cannot stall the others.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    fn start(tcp: TcpListener, acceptor: TlsAcceptor) -> TlsListener {
        let addr = tcp.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let sender = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics: TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "metrics: TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { rx, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop only ends with the process.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
