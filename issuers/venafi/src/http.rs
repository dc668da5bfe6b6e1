//! HTTP plumbing shared by the TPP and Cloud clients: one `reqwest` client per issuer with a
//! timeout on every call, response bodies read up to a cap, the status line's reason phrase kept
//! (TPP puts the human-readable detail there), errors described without secrets.

use std::time::Duration;

use certbridge::SignError;
use certbridge::http::describe;

/// Largest JSON answer read (1 MiB).
pub const BODY_LIMIT: usize = 1 << 20;
/// Largest certificate/chain answer read (4 MiB).
pub const CHAIN_LIMIT: usize = 4 << 20;

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The reason phrase when the server sent a non-standard one (hyper keeps only those).
    pub reason: Option<String>,
    /// The body (at most the cap).
    pub body: Vec<u8>,
}

/// What went wrong talking to Venafi.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VenafiError {
    /// No (complete) HTTP answer: connect failure, reset, timeout, TLS failure.
    #[error("{0}")]
    Transport(String),
    /// An error status; `message` is Venafi's text verbatim (body `Error`, `error_description`,
    /// `errors[].message`, or the status line's reason phrase), minus secrets.
    #[error("HTTP {status}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// Venafi's text.
        message: String,
    },
    /// A success status with a body that is not what the API documents (or too large).
    #[error("{0}")]
    BadBody(String),
    /// Authentication failed (already classified: issuer not ready, `AuthFailed`).
    #[error("{0}")]
    Auth(SignError),
}

/// Replaces each secret in `text` by `<redacted>`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "<redacted>");
    }
    out
}

/// rustls needs a process-wide crypto provider; reqwest is built with `rustls-no-provider`.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTPS-only client with `timeout` on every call, trusting `roots` (PEM) or the system roots.
pub fn client(timeout: Duration, roots_pem: Option<&str>, what: &str) -> Result<reqwest::Client, SignError> {
    install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .https_only(true)
        .user_agent(concat!("certbridge-venafi/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = roots_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| SignError::issuer_not_ready(format!("{what} does not hold PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(SignError::issuer_not_ready(format!("{what} holds no PEM certificate")));
        }
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| SignError::issuer_not_ready(format!("HTTP client: {e}")))
}

/// Sends `rb` and reads the answer up to `limit` bytes.
pub async fn send(rb: reqwest::RequestBuilder, limit: usize, secrets: &[&str]) -> Result<Answer, VenafiError> {
    let mut resp = rb.send().await.map_err(|e| VenafiError::Transport(redact(&describe(&e), secrets)))?;
    let status = resp.status().as_u16();
    let reason =
        resp.extensions().get::<hyper::ext::ReasonPhrase>().map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
    if let Some(len) = resp.content_length()
        && len > limit as u64
    {
        return Err(VenafiError::BadBody(format!(
            "HTTP {status}: the answer is {len} bytes, more than the {limit}-byte cap"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| VenafiError::Transport(redact(&describe(&e), secrets)))? {
        if body.len() + chunk.len() > limit {
            return Err(VenafiError::BadBody(format!("HTTP {status}: the answer exceeds the {limit}-byte cap")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, reason, body })
}

/// Venafi's error text from an error answer: TPP's `Error`, OAuth's `error_description`
/// (+ `error`), Cloud's `errors[].message`, TPP retrieve's `Status`, else the reason phrase, else
/// a bounded excerpt of the body.
pub fn error_text(a: &Answer, secrets: &[&str]) -> String {
    let v: Option<serde_json::Value> = serde_json::from_slice(&a.body).ok();
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let from_body = v.as_ref().and_then(|v| {
        s(v, "Error")
            .filter(|e| !e.is_empty())
            .or_else(|| {
                s(v, "error_description").map(|d| match s(v, "error") {
                    Some(e) => format!("{e}: {d}"),
                    None => d,
                })
            })
            .or_else(|| {
                v.get("errors")
                    .and_then(|e| e.as_array())
                    .map(|errs| errs.iter().filter_map(|e| s(e, "message")).collect::<Vec<_>>().join("; "))
            })
            .or_else(|| s(v, "Status"))
    });
    let text = match (from_body, &a.reason) {
        (Some(b), Some(r)) if !b.contains(r.as_str()) && !r.contains(b.as_str()) => format!("{b} ({r})"),
        (Some(b), Some(r)) if r.len() > b.len() => r.clone(),
        (Some(b), _) => b,
        (None, Some(r)) => r.clone(),
        (None, None) => snippet(&a.body),
    };
    redact(&text, secrets)
}

/// A printable, bounded excerpt of a body.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
    if clean.trim().is_empty() { "(empty body)".into() } else { clean.trim().to_owned() }
}

/// The answer as JSON of type `T` when its status is in `ok`, else an [`VenafiError::Http`].
pub fn json<T: serde::de::DeserializeOwned>(a: &Answer, ok: &[u16], secrets: &[&str]) -> Result<T, VenafiError> {
    if !ok.contains(&a.status) {
        return Err(VenafiError::Http { status: a.status, message: error_text(a, secrets) });
    }
    serde_json::from_slice(&a.body).map_err(|e| {
        VenafiError::BadBody(format!(
            "HTTP {} with a body that is not the documented JSON ({e}): {}",
            a.status,
            redact(&snippet(&a.body), secrets)
        ))
    })
}
