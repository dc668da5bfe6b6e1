//! What can go wrong talking to EJBCA, and what each failure means for a certificate request
//! ([`EjbcaError::to_sign_error`]). EJBCA's error body is `{"error_code": <status>,
//! "error_message": "..."}` (its `ExceptionHandler`); the message is kept verbatim minus secrets.
//! A `Retry-After` on an error answer (429, 503) travels with it to the [`SignError`].

use std::time::Duration;

use serde::Deserialize;

use certbridge::{SignError, redact};

/// What went wrong talking to EJBCA.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EjbcaError {
    /// No HTTP answer after the request may have left: reset, timeout, broken body.
    #[error("{0}")]
    Transport(String),
    /// The request never left: TCP connect or TLS handshake failed.
    #[error("{0}")]
    Unsent(String),
    /// EJBCA answered with an error status.
    #[error("HTTP {status}: {message}{}", code.map(|c| format!(" (error_code {c})")).unwrap_or_default())]
    Http {
        /// HTTP status.
        status: u16,
        /// `error_code` from the body, if it had one.
        code: Option<i64>,
        /// `error_message` from the body, verbatim minus secrets; or a description of the body.
        message: String,
        /// The answer's `Retry-After`, when it had a readable one.
        retry_after: Option<Duration>,
    },
    /// A success status whose body is not what the API documents.
    #[error("{0}")]
    BadBody(String),
    /// The token endpoint failed (already classified).
    #[error("{0}")]
    Auth(SignError),
}

impl EjbcaError {
    /// The controller's reaction to this error during `op` (e.g. `"enroll"`): 400/403/404/409/413/422
    /// and other client errors are permanent, 401 (after one token refresh) means the issuer's
    /// credentials are refused, 429/5xx, transport failures and unreadable bodies are transient.
    /// A transient error keeps the answer's `Retry-After` ([`SignError::retry_after`]).
    pub fn to_sign_error(&self, op: &str) -> SignError {
        let e = self.reaction(op);
        match self {
            EjbcaError::Http { retry_after: Some(d), .. } => e.retry_after(*d),
            _ => e,
        }
    }

    fn reaction(&self, op: &str) -> SignError {
        let msg = format!("EJBCA {op}: {self}");
        match self {
            EjbcaError::Transport(_) | EjbcaError::Unsent(_) | EjbcaError::BadBody(_) => SignError::transient(msg),
            EjbcaError::Auth(e) => e.clone().context(format!("EJBCA {op}")),
            // EJBCA wraps a CA-offline exception raised inside enrollment into a 400 with the
            // cause's message (CertificateRestResource.enrollPkcs10Certificate): still transient.
            EjbcaError::Http { status: 400, message, .. } if message.to_ascii_lowercase().contains("offline") => {
                SignError::transient(msg)
            }
            EjbcaError::Http { status, .. } => match status {
                401 => {
                    SignError::issuer_not_ready(format!("{msg}: the credentials in spec.ejbcaSecretName are refused"))
                }
                408 | 429 => SignError::transient(msg),
                500..=599 => SignError::transient(msg),
                _ => SignError::permanent(msg),
            },
        }
    }

    /// Whether the call is over at the server, so nothing more can come of it: EJBCA answered
    /// with its own error body (its `ExceptionHandler` runs when the operation has ended), a
    /// `429` said the call was not processed at all, or the request never left (connect or TLS
    /// handshake failed, or no token could be had). A transport failure after sending, an
    /// unreadable body or a bare gateway error (502/504 from a proxy) leaves open whether EJBCA
    /// is still working.
    pub fn call_is_over(&self) -> bool {
        matches!(
            self,
            EjbcaError::Http { code: Some(_), .. }
                | EjbcaError::Http { status: 429, .. }
                | EjbcaError::Unsent(_)
                | EjbcaError::Auth(_)
        )
    }

    /// The same error carrying `retry_after` (HTTP errors only; others are returned unchanged).
    pub fn with_retry_after(mut self, d: Option<Duration>) -> Self {
        if let EjbcaError::Http { retry_after, .. } = &mut self {
            *retry_after = d;
        }
        self
    }

    /// The HTTP status, if EJBCA answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            EjbcaError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    error_message: Option<String>,
}

pub(super) fn http_error(status: u16, body: &[u8], secrets: &[&str]) -> EjbcaError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error_code, error_message: Some(m) }) => {
            EjbcaError::Http { status, code: error_code, message: redact(&m, secrets), retry_after: None }
        }
        _ => EjbcaError::Http {
            status,
            code: None,
            message: format!("non-JSON error body: {}", snippet(body, secrets)),
            retry_after: None,
        },
    }
}

/// A printable, bounded excerpt of a body for messages.
pub(super) fn snippet(body: &[u8], secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(body);
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
    let clean = redact(&clean, secrets);
    if clean.trim().is_empty() { "(empty)".into() } else { format!("{:?}", clean.trim()) }
}

#[cfg(test)]
mod tests {
    use certbridge::Reaction;

    use super::*;

    #[test]
    fn errors_map_to_the_taxonomy() {
        let http =
            |status| EjbcaError::Http { status, code: Some(status as i64), message: "m".into(), retry_after: None };
        for s in [400, 403, 404, 409, 413, 422] {
            assert!(http(s).to_sign_error("enroll").reaction == Reaction::Permanent, "{s}");
        }
        for s in [500, 502, 503, 504, 429] {
            assert!(http(s).to_sign_error("enroll").reaction == Reaction::Transient, "{s}");
        }
        assert!(http(401).to_sign_error("enroll").reaction == Reaction::IssuerNotReady);
        assert!(EjbcaError::Transport("reset".into()).to_sign_error("x").reaction == Reaction::Transient);
        assert_eq!(http(404).to_sign_error("enroll").to_string(), "EJBCA enroll: HTTP 404: m (error_code 404)");
        // Retry-After travels with transient errors.
        let busy = http(429).with_retry_after(Some(Duration::from_secs(9)));
        assert_eq!(busy.to_sign_error("enroll").retry_after, Some(Duration::from_secs(9)));
        assert_eq!(http(503).to_sign_error("enroll").retry_after, None);
        // Only answers that end the call at the server close the unknown-outcome window.
        assert!(http(500).call_is_over() && http(400).call_is_over());
        let gateway = EjbcaError::Http { status: 504, code: None, message: "non-JSON".into(), retry_after: None };
        assert!(!gateway.call_is_over());
        assert!(matches!(
            gateway.clone().with_retry_after(Some(Duration::from_secs(3))),
            EjbcaError::Http { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(EjbcaError::Http { status: 429, code: None, message: String::new(), retry_after: None }.call_is_over());
        assert!(!EjbcaError::Transport("timed out".into()).call_is_over());
        assert!(EjbcaError::Unsent("connection refused".into()).call_is_over());
        assert!(EjbcaError::Unsent("refused".into()).to_sign_error("enroll").reaction == Reaction::Transient);
        assert!(!EjbcaError::BadBody("garbled".into()).call_is_over());
    }

    #[test]
    fn error_bodies_are_verbatim_minus_secrets() {
        let body = br#"{"error_code":422,"error_message":"Wrong password hunter2hunter2 for user"}"#;
        let e = http_error(422, body, &["hunter2hunter2"]);
        assert_eq!(
            e,
            EjbcaError::Http {
                status: 422,
                code: Some(422),
                message: "Wrong password <redacted> for user".into(),
                retry_after: None
            }
        );
        let e = http_error(502, b"<html>\x00bad gateway</html>", &[]);
        assert!(e.to_string().contains("non-JSON error body") && e.to_string().contains("bad gateway"), "{e}");
    }
}
