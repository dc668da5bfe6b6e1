//! Bounded reads of remote CA answers.
//!
//! A CA, Vault or a man in the middle of a misconfigured `http://` URL can answer with an endless
//! body; a shared controller that buffers it runs out of memory for every tenant. Adapters read
//! response bodies through [`read_limited`] (which stops at the limit without buffering more than
//! it) and build their HTTP clients with the limits below: header count
//! ([`MAX_RESPONSE_HEADERS`]; header bytes are bounded by hyper's read buffer, about 400 KiB, for
//! HTTP/1 and by [`MAX_HEADER_LIST_BYTES`] for HTTP/2), a connect timeout and a total timeout
//! that also covers reading the body, so no read is without a deadline.
//!
//! `http_body_util::Limited` does the counting; this module only picks limits and words the
//! error.
//!
//! Transport failures are worded by [`describe`] (reqwest clients) and [`error_chain`] (any other
//! error, e.g. hyper's): hyper and rustls put the useful part in the causes, which `Display` of
//! the outer error leaves out. A CA's `Retry-After` is read by [`parse_retry_after`] and handed to
//! the controller as [`crate::SignError::retry_after`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};

/// The longest `Retry-After` taken from an answer: a bogus far-future value must not park a
/// request for days (the controllers cap it again, at 10 minutes).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A `Retry-After` value (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date (IMF-fixdate and the
/// two obsolete forms, read by `httpdate`) relative to `now`; a date in the past is zero. At most
/// [`MAX_RETRY_AFTER`]. `None` when unreadable.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v).ok()?.duration_since(now).unwrap_or(Duration::ZERO),
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// Limit for an ordinary JSON answer.
pub const BODY_LIMIT: usize = 1 << 20;
/// Limit for answers that carry certificate chains (a CA bundle, a PKCS#7 chain).
pub const CHAIN_BODY_LIMIT: usize = 4 << 20;
/// Most header fields accepted in one HTTP/1 response.
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// Most header bytes accepted in one HTTP/2 response.
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// Time allowed for TCP connect plus TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a whole request, body included, unless the issuer asks for another.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the limit; nothing past the limit was buffered.
    #[error(
        "the response body is larger than {limit} bytes (a certbridge limit; the server is misbehaving or is not what the issuer expects)"
    )]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The transfer failed (reset, timeout, bad framing).
    #[error("reading the response body: {0}")]
    Transport(String),
}

/// Reads a whole body, refusing more than `limit` bytes. With reqwest:
/// `read_limited(reqwest::Body::from(response), BODY_LIMIT)`.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(BodyError::TooLarge { limit }),
        Err(e) => Err(BodyError::Transport(error_chain(e.as_ref()))),
    }
}

/// A reqwest transport error in one sentence: what failed (`timed out`, `connection failed`,
/// `reading the answer failed` or `request failed`) followed by each cause, `: `-separated
/// (hyper and rustls hide the useful part in the causes, e.g. the certificate verification
/// error). The outer error's own text (reqwest's generic wording with the URL) is not included;
/// the causes may still quote what the server sent, so adapters redact secrets from the result.
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    };
    let mut msg = kind.to_owned();
    push_causes(&mut msg, std::error::Error::source(e));
    msg
}

/// Any error with its causes in one line, `: `-separated: for transport errors of clients that
/// are not reqwest (hyper, IO, TLS).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    push_causes(&mut msg, e.source());
    msg
}

fn push_causes(msg: &mut String, mut source: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_without_buffering_them() {
        assert_eq!(read_limited(Full::new(Bytes::from_static(b"hello")), 5).await.unwrap(), "hello");
        let err = read_limited(Full::new(Bytes::from(vec![0u8; 6])), 5).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 5 }), "{err}");
        // An endless stream of unknown length: stops at the limit.
        let endless = futures::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(&[7u8; 4096])))
        });
        let err = read_limited(StreamBody::new(endless), BODY_LIMIT).await.unwrap_err();
        assert!(err.to_string().contains("larger than 1048576 bytes"), "{err}");
    }

    #[test]
    fn error_chains_name_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("handshake")]
        struct Outer(#[source] std::io::Error);
        let inner = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        assert_eq!(error_chain(&Outer(inner)), "handshake: invalid peer certificate: UnknownIssuer");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Tue, 01 Dec 2026 10:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Tue, 01 Dec 2026 10:00:30 GMT", now), Some(Duration::from_secs(30)));
        // The obsolete RFC 850 and asctime forms a recipient must still read.
        assert_eq!(parse_retry_after("Tuesday, 01-Dec-26 10:01:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Tue Dec  1 10:00:05 2026", now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("Tue, 01 Dec 2026 09:00:00 GMT", now), Some(Duration::ZERO), "past: now");
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER), "capped");
        for bad in ["", "-5", "soon", "1.5", "Tue, 32 Dec 2026 10:00:00 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }
}
