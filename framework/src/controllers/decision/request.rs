//! The request decisions — pure functions of plain values, no I/O.
//!
//! The request path follows issuer-lib's `RequestController.reconcileStatusPatch` step by step
//! (same order, same condition reasons and messages, same events), with three deliberate fixes:
//! a CertificateRequest that is only `Denied` gets Ready=False/`Denied` and a failure time (as
//! cert-manager's in-tree issuers do), a request marked `InvalidRequest=True` is left alone, and
//! the caller supplies a non-zero max retry duration (3 minutes by default) so a transient error is
//! retried instead of failing at once. What differs between the two request APIs is matched on
//! the view's [`RequestKind`]; a view is only ever built from a CertificateRequest or a Kubernetes
//! CSR, so `CommandLine` shares the CSR arm only to keep the matches exhaustive.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::controllers::decision::{
    APPROVED, DEFAULT_PENDING_REQUEUE, DENIED, EventOut, FAILED, INVALID_REQUEST, IssuerCond, Next, READY, SetCond,
    event,
};
use crate::controllers::view::RequestView;
use crate::error::{Reaction, SignError};
use crate::pki::Issued;
use crate::request::{RequestKind, SignRequest};

/// The metrics label of a sign attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Issued,
    Failed,
    Denied,
    Pending,
    Retry,
    Waiting,
}

impl Verdict {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Verdict::Issued => "issued",
            Verdict::Failed => "failed",
            Verdict::Denied => "denied",
            Verdict::Pending => "pending",
            Verdict::Retry => "retry",
            Verdict::Waiting => "waiting",
        }
    }
}

/// Everything one reconcile pass writes and does.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Outcome {
    /// Conditions to set (only these are applied; see `ssa`).
    pub set: Vec<SetCond>,
    /// Set `status.failureTime` (CertificateRequest only).
    pub failure_time: bool,
    /// The certificate to write.
    pub issued: Option<Issued>,
    pub event: Option<EventOut>,
    pub next: Next,
    /// Tell the issuer controller its issuer is not ready, with this message.
    pub issuer_error: Option<String>,
    pub verdict: Option<Verdict>,
}

impl Outcome {
    /// Whether the pass writes status at all (CSRs only write on failure or success).
    pub(crate) fn writes(&self) -> bool {
        !self.set.is_empty() || self.issued.is_some() || self.failure_time
    }
}

/// The first decision: is this request ours to act on now?
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Gate {
    /// Leave it alone (the reason is for logs).
    Ignore(&'static str),
    /// Write this and stop; the resulting update starts the next pass.
    Write(Outcome),
    /// Go on: validate the request and look at the issuer.
    Continue,
}

/// issuer-lib steps 3–6 (approval, terminal states, initialization) plus our fixes.
pub(crate) fn gate(view: &RequestView, field_owner: &str) -> Gate {
    match view.kind {
        RequestKind::CertificateRequest => {
            if view.is_true(INVALID_REQUEST) {
                return Gate::Ignore("the request is marked InvalidRequest");
            }
            if let Some(ready) = view.condition(READY) {
                if ready.status == "True" {
                    return Gate::Ignore("the request is already Ready");
                }
                if ready.status == "False" && ready.reason == "Failed" {
                    return Gate::Ignore("the request has already Failed");
                }
                if ready.status == "False" && ready.reason == "Denied" {
                    return Gate::Ignore("the request is already Denied");
                }
            }
            if view.is_true(DENIED) {
                let (message, ev) = if view.is_true(APPROVED) {
                    let m = "Detected that the CertificateRequest is denied, so it will never be Ready.";
                    (m, event(true, "PermanentError", "SyncFailed", m))
                } else {
                    // cert-manager's in-tree wording; issuer-lib would never finish such a request.
                    ("The CertificateRequest was denied by an approval controller", None)
                };
                return Gate::Write(Outcome {
                    set: vec![SetCond::new(READY, "False", "Denied", message)],
                    failure_time: true,
                    event: ev,
                    verdict: Some(Verdict::Denied),
                    ..Default::default()
                });
            }
            if !view.is_true(APPROVED) {
                return Gate::Ignore("the request is not approved yet");
            }
            if view.condition(READY).is_none() {
                return Gate::Write(Outcome {
                    set: vec![SetCond::new(
                        READY,
                        "Unknown",
                        "Initializing",
                        format!("{field_owner} has started reconciling this CertificateRequest"),
                    )],
                    ..Default::default()
                });
            }
            Gate::Continue
        }
        RequestKind::CertificateSigningRequest | RequestKind::CommandLine => {
            if !view.is_true(APPROVED) && !view.is_true(DENIED) {
                return Gate::Ignore("the request is not approved yet");
            }
            if view.has_certificate {
                return Gate::Ignore("the request already has a certificate");
            }
            if view.is_true(FAILED) {
                return Gate::Ignore("the request has already Failed");
            }
            if view.is_true(DENIED) {
                return Gate::Ignore("the request is Denied");
            }
            Gate::Continue
        }
    }
}

/// A request that can never be signed as it is (bad CSR, unknown usage, bad duration).
pub(crate) fn invalid_request(view: &RequestView, problem: &str) -> Outcome {
    permanent(view, problem)
}

/// Where the issuer stands, for a request waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IssuerState {
    /// Not found; the message is Kubernetes' NotFound text.
    Missing(String),
    NoCondition,
    Outdated,
    NotReady {
        reason: String,
        message: String,
    },
    Ready,
}

/// issuer-lib's step 9: how the request sees its issuer.
pub(crate) fn issuer_state(ready: Option<&IssuerCond>, generation: i64) -> IssuerState {
    match ready {
        None => IssuerState::NoCondition,
        Some(c) if c.observed_generation < generation => IssuerState::Outdated,
        Some(c) if c.status != "True" => IssuerState::NotReady { reason: c.reason.clone(), message: c.message.clone() },
        Some(_) => IssuerState::Ready,
    }
}

/// issuer-lib's steps 7 and 9: what a request does while its issuer is missing or not ready.
/// `None` means the issuer is ready: sign.
pub(crate) fn waiting_for_issuer(view: &RequestView, state: &IssuerState) -> Option<Outcome> {
    let (reason, message) = match state {
        IssuerState::Ready => return None,
        IssuerState::Missing(not_found) => {
            ("WaitingForIssuerExist", format!("{not_found}. Waiting for it to be created."))
        }
        IssuerState::NoCondition => (
            "WaitingForIssuerReady",
            "Waiting for issuer to become ready. Current issuer ready condition: <none>.".to_owned(),
        ),
        IssuerState::Outdated => (
            "WaitingForIssuerReady",
            "Waiting for issuer to become ready. Current issuer ready condition is outdated.".to_owned(),
        ),
        IssuerState::NotReady { reason, message } => (
            "WaitingForIssuerReady",
            format!("Waiting for issuer to become ready. Current issuer ready condition is \"{reason}\": {message}."),
        ),
    };
    Some(Outcome {
        set: ready_if_cr(view, "False", "Pending", &message),
        event: event(false, reason, "Synced", &message),
        verdict: Some(Verdict::Waiting),
        ..Default::default()
    })
}

fn ready_if_cr(view: &RequestView, status: &str, reason: &str, message: &str) -> Vec<SetCond> {
    match view.kind {
        RequestKind::CertificateRequest => vec![SetCond::new(READY, status, reason, message)],
        RequestKind::CertificateSigningRequest | RequestKind::CommandLine => vec![],
    }
}

/// Checks what the signer returned before it is written: the leaf must carry the CSR's key. A
/// leaf for another key is transient: it is the CA's (or a proxy's) fault, not the request's,
/// and a retry (a search, for adapters that have one) can find the right certificate; the max
/// retry duration still bounds it.
pub(crate) fn verify_issued(req: &SignRequest, issued: Issued) -> Result<Issued, SignError> {
    let leaf_key = issued.leaf_public_key_der().map_err(SignError::permanent)?;
    if leaf_key != req.csr.public_key_der {
        return Err(SignError::transient(
            "the issued certificate's public key does not match the CSR's public key: the CA signed a different key",
        ));
    }
    Ok(issued)
}

/// A sign result once the request state was saved (or not). Losing the state of a request the
/// CA holds (a pending answer, whatever condition it carries) would submit it twice: then the
/// save error, which is transient, replaces it and the pass is retried. Other failures keep
/// their own reaction (the save error is only logged).
pub(crate) fn after_save(result: Result<Issued, SignError>, saved: Result<(), SignError>) -> Result<Issued, SignError> {
    match (result, saved) {
        (Ok(issued), _) => Ok(issued),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(save)) if matches!(e.reaction, Reaction::Pending { .. }) => {
            tracing::warn!(error = %save, pending = %e, "cannot save the state of a pending request; retrying");
            Err(save)
        }
        (Err(e), Err(save)) => {
            tracing::warn!(error = %save, "cannot save the request state");
            Err(e)
        }
    }
}

/// issuer-lib's step 10: what a sign result means. `now` and `max_retry` decide when a transient
/// error becomes permanent (`creationTimestamp + max_retry`).
pub(crate) fn after_sign(
    view: &RequestView,
    result: Result<Issued, SignError>,
    now: Timestamp,
    max_retry: Duration,
) -> Outcome {
    let err = match result {
        Ok(issued) => {
            let message = format!("Succeeded signing the {}", view.kind_name());
            return Outcome {
                set: ready_if_cr(view, "True", "Issued", &message),
                issued: Some(issued),
                event: event(false, "Issued", "Synced", &message),
                verdict: Some(Verdict::Issued),
                ..Default::default()
            };
        }
        Err(e) => e,
    };

    // An issuer problem: hold the request and let the issuer controller re-check the issuer.
    if err.reaction == Reaction::IssuerNotReady {
        let mut out = waiting_for_issuer(view, &IssuerState::Outdated).unwrap_or_default();
        out.issuer_error = Some(err.message);
        return out;
    }

    let mut set = Vec::new();
    let mut custom_transitioned = false;
    if let Some(c) = &err.condition {
        custom_transitioned = view.condition(&c.type_).is_none_or(|cur| cur.status != c.status);
        set.push(SetCond::new(&c.type_, &c.status, &c.reason, err.to_string()));
    }

    let past_deadline = view.created.is_some_and(|created| {
        let deadline = created.checked_add(k8s_openapi::jiff::SignedDuration::try_from(max_retry).unwrap_or_default());
        deadline.is_ok_and(|d| now > d)
    });

    let mut out = match err.reaction {
        Reaction::Pending { requeue_after } => {
            // Deliberately doubled, not a bug: issuer-lib wraps its pending error twice and writes
            // exactly "Signing still in progress. Reason: Signing still in progress. Reason: …", so
            // users, dashboards and tests written against issuer-lib issuers see the same text from
            // certbridge ones. Do not "fix" it.
            let message = format!("Signing still in progress. Reason: Signing still in progress. Reason: {err}");
            let after = if requeue_after.is_zero() { DEFAULT_PENDING_REQUEUE } else { requeue_after };
            Outcome {
                set: ready_if_cr(view, "False", "Pending", &message),
                event: match view.kind {
                    RequestKind::CertificateRequest => event(true, "RetryableError", "Synced", &message),
                    RequestKind::CertificateSigningRequest | RequestKind::CommandLine => {
                        event(true, "Pending", "Synced", &message)
                    }
                },
                // A changed custom condition triggers the next pass by itself.
                next: if custom_transitioned { Next::Done } else { Next::After(after) },
                verdict: Some(Verdict::Pending),
                ..Default::default()
            }
        }
        Reaction::Permanent => permanent(view, &err.to_string()),
        _ if past_deadline => permanent(view, &err.to_string()),
        _ => {
            let message = format!("Failed to sign {}, will retry: {err}", view.kind_name());
            Outcome {
                set: ready_if_cr(view, "False", "Pending", &message),
                event: event(true, "RetryableError", "SyncFailed", &message),
                next: if custom_transitioned { Next::Done } else { retry(&err) },
                verdict: Some(Verdict::Retry),
                ..Default::default()
            }
        }
    };
    set.append(&mut out.set);
    out.set = set;
    out
}

/// The longest `Retry-After` a CA can impose on one retry: a CA asking for an hour must not park a
/// request beyond what an operator would wait for.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How a transient error is retried: with backoff, and no sooner than the CA asked
/// ([`SignError::retry_after`], capped at [`MAX_RETRY_AFTER`]).
fn retry(err: &SignError) -> Next {
    match err.retry_after {
        Some(d) => Next::BackoffNoSooner(err.to_string(), d.min(MAX_RETRY_AFTER)),
        None => Next::Backoff(err.to_string()),
    }
}

fn permanent(view: &RequestView, err: &str) -> Outcome {
    match view.kind {
        RequestKind::CertificateRequest => {
            let message = format!("Failed permanently to sign CertificateRequest: {err}");
            Outcome {
                set: vec![SetCond::new(READY, "False", "Failed", &message)],
                failure_time: true,
                event: event(true, "PermanentError", "SyncFailed", &message),
                verdict: Some(Verdict::Failed),
                ..Default::default()
            }
        }
        RequestKind::CertificateSigningRequest | RequestKind::CommandLine => {
            let message = format!("CertificateSigningRequest has failed permanently: {err}");
            Outcome {
                set: vec![SetCond::new(FAILED, "True", "Failed", &message)],
                event: event(true, "PermanentError", "SyncFailed", &message),
                verdict: Some(Verdict::Failed),
                ..Default::default()
            }
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
