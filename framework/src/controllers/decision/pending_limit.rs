//! A maximum time Pending (`--max-pending`, 7 days by default): a request the CA keeps answering
//! "pending" for longer fails, with a message saying what to check, instead of staying Pending
//! forever (issue 12: an EJBCA approval that only creates the end entity never yields a
//! certificate, and nothing would ever tell the user). A pure function, no I/O.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::controllers::decision::READY;
use crate::controllers::view::RequestView;
use crate::error::{Reaction, SignError};

/// The default `--max-pending`.
pub(crate) const DEFAULT_MAX_PENDING: Duration = Duration::from_secs(7 * 24 * 3600);

/// Since when the request has been waiting: when its Ready condition turned False (the first
/// Pending, CertificateRequest), else its creation.
pub(crate) fn pending_since(view: &RequestView) -> Option<Timestamp> {
    view.condition(READY).filter(|c| c.status == "False").and_then(|c| c.last_transition_time).or(view.created)
}

/// A sign result with the maximum applied: a [`Reaction::Pending`] answer for a request pending
/// longer than `max` at `now` becomes a permanent failure saying what to check. Anything else is
/// returned as it is.
pub(crate) fn bound<T>(
    view: &RequestView,
    result: Result<T, SignError>,
    now: Timestamp,
    max: Duration,
) -> Result<T, SignError> {
    let err = match result {
        Err(e) if matches!(e.reaction, Reaction::Pending { .. }) => e,
        other => return other,
    };
    let Some(since) = pending_since(view) else { return Err(err) };
    let waited = now.duration_since(since);
    let limit = SignedDuration::try_from(max).unwrap_or(SignedDuration::MAX);
    if waited <= limit {
        return Err(err);
    }
    let waited = Duration::from_secs(waited.as_secs().max(0).unsigned_abs());
    Err(SignError::permanent(format!(
        "the request has been pending at the CA for {} (longer than --max-pending {}): check at the CA that the request was approved and that approval issued the certificate (not only created the end entity), and that it is not stuck in the CA's queue; then create a new request. The CA's last answer: {err}",
        humantime::format_duration(waited),
        humantime::format_duration(max),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::decision::request::{Verdict, after_sign};
    use crate::controllers::request::fixtures;
    use crate::request::RequestKind;

    fn pending() -> Result<(), SignError> {
        Err(SignError::pending("waiting for approval 7", Duration::from_secs(30)))
    }

    #[test]
    fn a_request_pending_past_the_maximum_fails_saying_what_to_check() {
        // Ready turned False (first Pending) at 2024-01-01T00:00:00Z in the fixture.
        let view = fixtures::status_view(RequestKind::CertificateRequest);
        let max = Duration::from_secs(7 * 24 * 3600);
        let within: Timestamp = "2024-01-07T23:59:59Z".parse().unwrap();
        assert_eq!(
            bound(&view, pending(), within, max).unwrap_err().reaction,
            Reaction::Pending { requeue_after: Duration::from_secs(30) }
        );
        let past: Timestamp = "2024-01-08T00:00:01Z".parse().unwrap();
        let err = bound(&view, pending(), past, max).unwrap_err();
        assert_eq!(err.reaction, Reaction::Permanent);
        assert!(
            err.message
                .starts_with("the request has been pending at the CA for 7days 1s (longer than --max-pending 7days)"),
            "{err}"
        );
        assert!(err.message.contains("approved") && err.message.contains("queue"), "{err}");
        assert!(err.message.ends_with("The CA's last answer: waiting for approval 7"), "{err}");

        // Through the request decision: Failed, with the message, never retried.
        let out = after_sign(&view, bound(&view, Err(err_of(pending())), past, max), past, Duration::from_secs(180));
        assert_eq!(out.verdict, Some(Verdict::Failed));
        assert!(
            out.set[0]
                .message
                .starts_with("Failed permanently to sign CertificateRequest: the request has been pending")
        );
        assert!(out.failure_time);

        // Only pending answers are bounded: a transient error or a success passes through.
        let transient: Result<(), SignError> = Err(SignError::transient("503"));
        assert_eq!(bound(&view, transient, past, max).unwrap_err().reaction, Reaction::Transient);
        assert!(bound(&view, Ok(()), past, max).is_ok());
    }

    fn err_of(r: Result<(), SignError>) -> SignError {
        r.unwrap_err()
    }

    #[test]
    fn pending_is_measured_from_the_first_pending_or_the_creation() {
        let mut view = fixtures::status_view(RequestKind::CertificateRequest);
        view.created = Some("2023-12-31T00:00:00Z".parse().unwrap());
        assert_eq!(pending_since(&view), Some("2024-01-01T00:00:00Z".parse().unwrap()), "Ready turned False");
        view.conditions.retain(|c| c.type_ != READY);
        assert_eq!(pending_since(&view), Some("2023-12-31T00:00:00Z".parse().unwrap()), "no Ready yet: creation");
        // A Kubernetes CSR has no Ready condition: its creation.
        let mut csr = fixtures::status_view(RequestKind::CertificateSigningRequest);
        csr.conditions.retain(|c| c.type_ != READY);
        csr.created = Some("2024-02-01T00:00:00Z".parse().unwrap());
        let past: Timestamp = "2024-02-01T00:00:03Z".parse().unwrap();
        let err = bound(&csr, pending(), past, Duration::from_secs(2)).unwrap_err();
        assert_eq!(err.reaction, Reaction::Permanent);
        // Nothing to measure from: left pending.
        csr.created = None;
        assert!(matches!(
            bound(&csr, pending(), past, Duration::from_secs(2)).unwrap_err().reaction,
            Reaction::Pending { .. }
        ));
    }
}
