//! The error taxonomy a [`Signer`](crate::Signer) uses to tell the controller what to do next.
//!
//! The variant's name is the controller's reaction, exactly as in cert-manager's issuer-lib:
//!
//! | variant | on `sign` | on `check` |
//! |---|---|---|
//! | [`SignError::Pending`] | Ready=False/`Pending`, requeue after `requeue_after`; no retry deadline | issuer not ready, re-checked after `requeue_after` |
//! | [`SignError::Permanent`] | Ready=False/`Failed`, `failureTime` set, never retried | issuer Ready=False/`Failed` until its spec changes |
//! | [`SignError::IssuerNotReady`] | the issuer is flipped to not-ready and re-checked; the request waits for it | issuer not ready, retried with backoff |
//! | [`SignError::Transient`] | Ready=False/`Pending`, retried with exponential backoff until the max retry duration, then Failed | issuer not ready, retried with backoff |
//!
//! Any variant can carry one extra condition for the request ([`SignError::with_condition`]),
//! which the controller writes alongside Ready (issuer-lib's `SetCertificateRequestConditionError`).
//! The condition lives only as long as it is returned: every pass that should keep it must return
//! it again (see [`SignError::with_condition`]).
//!
//! Messages end up in conditions, events and logs: never put a secret value in one.

use std::time::Duration;

/// An extra condition a signer asks the controller to set on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCondition {
    /// Condition type, e.g. `"ApprovalPending"`. Must not be `Ready`, `Approved`, `Denied` or `InvalidRequest`.
    pub type_: String,
    /// `"True"`, `"False"` or `"Unknown"`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
}

/// What went wrong, and therefore what the controller does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The CA has the request but has not answered yet (e.g. waiting for an approval). Not a failure:
    /// no retry deadline applies.
    #[error("{reason}")]
    Pending {
        /// When to ask again.
        requeue_after: Duration,
        /// Why it is pending, shown in the Ready condition.
        reason: String,
    },
    /// The request can never succeed as it is (the CA refused it, the CSR is invalid, …).
    #[error("{0}")]
    Permanent(String),
    /// The issuer itself is not usable right now (credentials missing, CA unreachable during check, …).
    #[error("{0}")]
    IssuerNotReady(String),
    /// A failure that may go away on its own (timeouts, 5xx, connection resets).
    #[error("{0}")]
    Transient(String),
    /// Any of the above plus an extra condition to set on the request.
    #[error("{error}")]
    WithCondition {
        /// The error that decides the controller's reaction.
        error: Box<SignError>,
        /// The extra condition; its message is the error's message.
        condition: RequestCondition,
    },
}

impl SignError {
    /// A pending answer: ask again after `requeue_after`.
    pub fn pending(reason: impl Into<String>, requeue_after: Duration) -> Self {
        SignError::Pending { requeue_after, reason: reason.into() }
    }

    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        SignError::Permanent(message.into())
    }

    /// The issuer is not ready.
    pub fn issuer_not_ready(message: impl Into<String>) -> Self {
        SignError::IssuerNotReady(message.into())
    }

    /// A transient failure, retried with backoff.
    pub fn transient(message: impl Into<String>) -> Self {
        SignError::Transient(message.into())
    }

    /// Attach an extra condition to set on the request, next to Ready. Its message is this error's
    /// message; attaching a second condition replaces the first.
    ///
    /// **Return it on every pass that should keep it.** Each pass writes the request's status with
    /// server-side apply, holding only the conditions set in that pass, so a condition the
    /// controller wrote before and leaves out now is removed by the API server. A `sign` that
    /// attaches the condition once (say `ApprovalPending` when it submits to the CA) and then
    /// returns a plain [`SignError::pending`] while it polls drops the condition on the very next
    /// pass: attach it to every still-waiting answer, and leave it off only once it no longer
    /// applies. Success, and passes that never reach `sign` (the issuer not found or not ready),
    /// remove it too. Keep its status stable while it should stay: a change of status wakes the
    /// request at once instead of after `requeue_after`.
    pub fn with_condition(
        self,
        type_: impl Into<String>,
        status: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        let condition = RequestCondition { type_: type_.into(), status: status.into(), reason: reason.into() };
        match self {
            SignError::WithCondition { error, .. } => SignError::WithCondition { error, condition },
            other => SignError::WithCondition { error: Box::new(other), condition },
        }
    }

    /// The error that decides the reaction, with any condition wrapper removed.
    pub fn kind(&self) -> &SignError {
        match self {
            SignError::WithCondition { error, .. } => error.kind(),
            other => other,
        }
    }

    /// The extra condition, if any.
    pub fn condition(&self) -> Option<&RequestCondition> {
        match self {
            SignError::WithCondition { condition, .. } => Some(condition),
            _ => None,
        }
    }

    /// Prefix the message with context, keeping the variant (and condition).
    pub fn context(self, prefix: impl std::fmt::Display) -> Self {
        match self {
            SignError::Pending { requeue_after, reason } => {
                SignError::Pending { requeue_after, reason: format!("{prefix}: {reason}") }
            }
            SignError::Permanent(m) => SignError::Permanent(format!("{prefix}: {m}")),
            SignError::IssuerNotReady(m) => SignError::IssuerNotReady(format!("{prefix}: {m}")),
            SignError::Transient(m) => SignError::Transient(format!("{prefix}: {m}")),
            SignError::WithCondition { error, condition } => {
                SignError::WithCondition { error: Box::new(error.context(prefix)), condition }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_wrapper_keeps_the_reaction() {
        let e = SignError::transient("CA busy").with_condition("Queued", "True", "Busy");
        assert_eq!(e.kind(), &SignError::Transient("CA busy".into()));
        assert_eq!(e.condition().unwrap().reason, "Busy");
        assert_eq!(e.to_string(), "CA busy");
        let e = e.context("ejbca");
        assert_eq!(e.to_string(), "ejbca: CA busy");
        assert!(e.condition().is_some());
    }
}
