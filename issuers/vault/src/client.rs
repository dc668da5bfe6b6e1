//! Vault's HTTP API as this issuer uses it: `sys/health`, logins, token lookup and renewal, and the
//! PKI sign endpoint. Answers are typed; failures keep Vault's own `errors` text and the HTTP
//! status so the signer can map them onto the error taxonomy. Tokens travel only in the
//! `X-Vault-Token` header and never appear in an error.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::tls::TlsMaterial;

const TOKEN_HEADER: &str = "X-Vault-Token";
const NAMESPACE_HEADER: &str = "X-Vault-Namespace";
const REQUEST_HEADER: &str = "X-Vault-Request";

/// A failed call to Vault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// Vault answered with an error status; `errors` is its own explanation.
    #[error("HTTP {status}: {}", describe(.errors))]
    Status {
        /// The HTTP status.
        status: u16,
        /// Vault's `errors` array (or the body's first line when it is not Vault's JSON).
        errors: Vec<String>,
    },
    /// The request did not get an answer (connection refused, TLS failure, timeout, …).
    #[error("{0}")]
    Transport(String),
    /// Vault answered 2xx with a body this client does not understand.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

fn describe(errors: &[String]) -> String {
    if errors.is_empty() { "no error text".into() } else { errors.join("; ") }
}

impl VaultError {
    /// HTTP 403: the token is missing, expired, revoked or lacks a policy.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, VaultError::Status { status: 403, .. })
    }

    /// Worth retrying later: no answer, 429, 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            VaultError::Status { status, .. } => *status == 429 || *status >= 500,
            VaultError::Transport(_) | VaultError::Decode(_) => true,
        }
    }
}

/// A Vault token and what Vault said about its lifetime.
pub struct TokenGrant {
    /// The token.
    pub token: Zeroizing<String>,
    /// Lifetime from now; `None` for tokens that never expire (e.g. root tokens).
    pub ttl: Option<Duration>,
    /// Whether `auth/token/renew-self` can extend it.
    pub renewable: bool,
}

impl fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGrant")
            .field("token", &"[redacted]")
            .field("ttl", &self.ttl)
            .field("renewable", &self.renewable)
            .finish()
    }
}

/// What `sys/health` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// 200, or 429 / 472 / 473 (standby, DR secondary, performance standby), which cert-manager treats as ready.
    Ready(u16),
    /// 501.
    NotInitialized,
    /// 503.
    Sealed,
    /// Any other status.
    Other(u16),
}

/// The sign endpoint's `data`.
#[derive(Debug, Clone, Deserialize)]
pub struct SignedData {
    /// The leaf (a bundle if Vault was asked for `pem_bundle`).
    pub certificate: String,
    /// The issuing CA.
    #[serde(default)]
    pub issuing_ca: Option<String>,
    /// The CA chain above the leaf, as Vault knows it.
    #[serde(default)]
    pub ca_chain: Option<Vec<String>>,
    /// Serial number, for logs.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// Vault's warnings (e.g. the TTL was truncated to the role's max), copied from the envelope.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl SignedData {
    /// Everything Vault returned as one PEM bundle, in cert-manager's order: `ca_chain`, `issuing_ca`,
    /// `certificate` (the framework sorts it).
    pub fn pem_bundle(&self) -> String {
        format!("{}{}\n", self.ca_part(), self.certificate.trim_end())
    }

    /// `ca_chain` and `issuing_ca`: the part of the answer that is the same for every request.
    pub fn ca_part(&self) -> String {
        let mut parts: Vec<&str> = self.ca_chain.iter().flatten().map(String::as_str).collect();
        parts.extend(self.issuing_ca.as_deref());
        parts.iter().map(|p| format!("{}\n", p.trim_end())).collect()
    }
}

/// An HTTP client for one Vault server (and namespace) with its TLS settings.
#[derive(Clone)]
pub struct VaultClient {
    http: reqwest::Client,
    base: Url,
    namespace: Option<String>,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultClient").field("base", &self.base.as_str()).field("namespace", &self.namespace).finish()
    }
}

#[derive(Deserialize)]
struct AuthEnvelope {
    auth: Option<AuthBlock>,
}

#[derive(Deserialize)]
struct AuthBlock {
    client_token: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct DataEnvelope<T> {
    data: Option<T>,
}

#[derive(Deserialize)]
struct SignEnvelope {
    data: Option<SignedData>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct LookupData {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

impl VaultClient {
    /// A client for `server` (e.g. `https://vault:8200`), sending `namespace` as `X-Vault-Namespace`.
    pub fn new(server: &str, namespace: Option<&str>, tls: &TlsMaterial) -> Result<VaultClient, String> {
        let mut base = Url::parse(server).map_err(|e| format!("spec.server {server:?} is not a URL: {e}"))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.client_config()?)
            .connect_timeout(certbridge::http::CONNECT_TIMEOUT)
            .timeout(certbridge::http::REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .http1_max_headers(certbridge::http::MAX_RESPONSE_HEADERS)
            .http2_max_header_list_size(certbridge::http::MAX_HEADER_LIST_BYTES)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        Ok(VaultClient { http, base, namespace: namespace.map(str::to_owned) })
    }

    /// The server URL, for messages.
    pub fn server(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, api_path: &str) -> Result<Url, VaultError> {
        self.base
            .join(&format!("v1/{}", api_path.trim_start_matches('/')))
            .map_err(|e| VaultError::Transport(format!("invalid API path {api_path:?}: {e}")))
    }

    async fn call(
        &self,
        method: Method,
        api_path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        with_namespace: bool,
    ) -> Result<reqwest::Response, VaultError> {
        let mut req = self.http.request(method, self.url(api_path)?).header(REQUEST_HEADER, "true");
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(token).map_err(|_| {
                VaultError::Transport("the Vault token contains characters not allowed in a header".into())
            })?;
            value.set_sensitive(true);
            req = req.header(TOKEN_HEADER, value);
        }
        if with_namespace && let Some(ns) = &self.namespace {
            req = req.header(NAMESPACE_HEADER, ns);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.map_err(|e| VaultError::Transport(error_chain(&e)))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        api_path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<T, VaultError> {
        let resp = self.call(method, api_path, token, body, true).await?;
        let status = resp.status();
        // Bounded: a misbehaving server cannot make the shared controller buffer an endless body
        // (sign answers carry chains, hence the chain limit).
        let bytes = certbridge::http::read_limited(reqwest::Body::from(resp), certbridge::http::CHAIN_BODY_LIMIT)
            .await
            .map_err(|e| VaultError::Transport(format!("{api_path}: {e}")))?;
        if !status.is_success() {
            return Err(status_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| VaultError::Decode(format!("{api_path}: {e}")))
    }

    /// `GET /v1/sys/health`, without the namespace header (as cert-manager does).
    pub async fn health(&self) -> Result<Health, VaultError> {
        let resp = self.call(Method::GET, "sys/health", None, None, false).await?;
        Ok(match resp.status().as_u16() {
            code @ (200 | 429 | 472 | 473) => Health::Ready(code),
            501 => Health::NotInitialized,
            503 => Health::Sealed,
            other => Health::Other(other),
        })
    }

    /// `POST /v1/<mount>/login` with `body`; the token comes from `auth.client_token`.
    pub async fn login(&self, mount: &str, body: &Value) -> Result<TokenGrant, VaultError> {
        let env: AuthEnvelope = self.json(Method::POST, &format!("{mount}/login"), None, Some(body)).await?;
        grant(env)
    }

    /// `GET /v1/auth/token/lookup-self`: the token's remaining TTL and renewability.
    pub async fn lookup_self(&self, token: &str) -> Result<(Option<Duration>, bool), VaultError> {
        let env: DataEnvelope<LookupData> = self.json(Method::GET, "auth/token/lookup-self", Some(token), None).await?;
        let data = env.data.ok_or_else(|| VaultError::Decode("lookup-self answer has no data".into()))?;
        Ok(((data.ttl > 0).then(|| Duration::from_secs(data.ttl)), data.renewable))
    }

    /// `POST /v1/auth/token/renew-self` asking for `increment` more.
    pub async fn renew_self(&self, token: &str, increment: Duration) -> Result<TokenGrant, VaultError> {
        let body = serde_json::json!({ "increment": format!("{}s", increment.as_secs()) });
        let env: AuthEnvelope = self.json(Method::POST, "auth/token/renew-self", Some(token), Some(&body)).await?;
        grant(env)
    }

    /// `POST /v1/<path>` on the PKI engine with cert-manager's body.
    pub async fn sign(&self, api_path: &str, token: &str, body: &Value) -> Result<SignedData, VaultError> {
        let env: SignEnvelope = self.json(Method::POST, api_path, Some(token), Some(body)).await?;
        let mut data = env.data.ok_or_else(|| VaultError::Decode("the sign answer has no data".into()))?;
        data.warnings = env.warnings.unwrap_or_default();
        Ok(data)
    }
}

fn grant(env: AuthEnvelope) -> Result<TokenGrant, VaultError> {
    let auth = env.auth.ok_or_else(|| VaultError::Decode("the answer has no auth block".into()))?;
    if auth.client_token.is_empty() {
        return Err(VaultError::Decode("the answer has an empty client_token".into()));
    }
    Ok(TokenGrant {
        token: Zeroizing::new(auth.client_token),
        ttl: (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration)),
        renewable: auth.renewable,
    })
}

fn status_error(status: StatusCode, body: &[u8]) -> VaultError {
    let errors = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => b.errors,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let first = text.lines().next().unwrap_or("").trim();
            let first: String = first.chars().take(200).collect();
            if first.is_empty() { vec![] } else { vec![first] }
        }
    };
    VaultError::Status { status: status.as_u16(), errors }
}

/// An error with its causes, which is where reqwest says what actually failed.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_vault_text_and_classify() {
        let e =
            status_error(StatusCode::BAD_REQUEST, br#"{"errors":["common name evil.com not allowed by this role"]}"#);
        assert_eq!(e.to_string(), "HTTP 400: common name evil.com not allowed by this role");
        assert!(!e.is_transient() && !e.is_permission_denied());
        let e = status_error(StatusCode::SERVICE_UNAVAILABLE, b"<html>\nbusy");
        assert_eq!(e.to_string(), "HTTP 503: <html>");
        assert!(e.is_transient());
        assert!(status_error(StatusCode::TOO_MANY_REQUESTS, b"").is_transient());
        assert!(status_error(StatusCode::FORBIDDEN, br#"{"errors":["permission denied"]}"#).is_permission_denied());
    }

    #[test]
    fn bundle_puts_everything_vault_returned() {
        let d = SignedData {
            certificate: "LEAF".into(),
            issuing_ca: Some("INT".into()),
            ca_chain: Some(vec!["INT".into(), "ROOT\n".into()]),
            serial_number: None,
            warnings: vec![],
        };
        assert_eq!(d.pem_bundle(), "INT\nROOT\nINT\nLEAF\n");
    }

    /// A one-shot HTTP responder for the status codes a single OpenBao node cannot produce
    /// (standby 429, DR secondary 472, performance standby 473).
    async fn answer_with(status: u16) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).await.unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(head.starts_with("GET /v1/sys/health HTTP/1.1"), "{head}");
            assert!(!head.to_ascii_lowercase().contains("x-vault-namespace"), "{head}");
            let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}");
            conn.write_all(reply.as_bytes()).await.unwrap();
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn health_codes_map_like_cert_manager() {
        certbridge::runtime::install_crypto_provider();
        for (code, want) in [
            (200, Health::Ready(200)),
            (429, Health::Ready(429)),
            (472, Health::Ready(472)),
            (473, Health::Ready(473)),
            (501, Health::NotInitialized),
            (503, Health::Sealed),
            (474, Health::Other(474)),
        ] {
            let server = answer_with(code).await;
            let client = VaultClient::new(&server, Some("team-a"), &TlsMaterial::default()).unwrap();
            assert_eq!(client.health().await.unwrap(), want, "HTTP {code}");
        }
    }

    #[test]
    fn grants_redact_the_token() {
        let g = TokenGrant { token: Zeroizing::new("hvs.secret".into()), ttl: None, renewable: false };
        assert!(!format!("{g:?}").contains("hvs.secret"));
    }
}
