//! The error taxonomy a [`Signer`](crate::Signer) uses to tell the controller what to do next.
//!
//! A [`SignError`] is one flat value: its [`Reaction`] is what the controller does, exactly as in
//! cert-manager's issuer-lib, and every consumer decides by matching on [`SignError::reaction`]
//! (there is no wrapper layer to look through). Build it with the constructor named after the
//! reaction:
//!
//! | constructor → [`Reaction`] | on `sign` | on `check` |
//! |---|---|---|
//! | [`SignError::pending`] → [`Reaction::Pending`] | Ready=False/`Pending`, requeue after `requeue_after`; no retry deadline | issuer Ready=False/`Pending`¹, re-checked after `requeue_after` |
//! | [`SignError::permanent`] → [`Reaction::Permanent`] | Ready=False/`Failed`, `failureTime` set, never retried | issuer Ready=False/`Failed` until its spec or a Secret/ConfigMap it references changes |
//! | [`SignError::issuer_not_ready`] → [`Reaction::IssuerNotReady`] | the issuer is flipped to not-ready and re-checked; the request waits for it | issuer Ready=False/`Pending`¹, retried with backoff |
//! | [`SignError::transient`] → [`Reaction::Transient`] | Ready=False/`Pending`, retried with exponential backoff until the max retry duration, then Failed | issuer Ready=False/`Pending`¹, retried with backoff |
//! | `check` returns `Ok(`[`Ready`](crate::Ready)`)` | — | issuer Ready=True/`Checked` with the `Ready`'s message (default "Succeeded checking the issuer"), re-checked periodically |
//!
//! ¹ or the reason the error names with [`SignError::with_reason`] (e.g. `AuthFailed`).
//!
//! A problem in the *content* of a referenced Secret or ConfigMap (wrong password, not PEM, CA
//! not listed) is [`Reaction::IssuerNotReady`] with a message naming the object, the key and the
//! fix — never [`Reaction::Permanent`] — so that fixing the Secret brings the issuer back.
//!
//! Any error can carry one extra condition for the request ([`SignError::with_condition`]),
//! which the controller writes alongside Ready (issuer-lib's `SetCertificateRequestConditionError`).
//! The condition lives only as long as it is returned: every pass that should keep it must return
//! it again (see [`SignError::with_condition`]).
//!
//! A [`Reaction::Transient`] error can also say when the CA wants to be asked again at the
//! earliest ([`SignError::retry_after`], e.g. from an HTTP `Retry-After` header on a 429 or 503):
//! the request is then requeued no earlier than that, even if the controller's backoff would come
//! sooner. (Other reactions ignore it.)
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

/// What the controller does with a [`SignError`]; see the [module docs](self) for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// The CA has the request but has not answered yet (e.g. waiting for an approval). Not a
    /// failure: no retry deadline applies. Ask again after `requeue_after`.
    Pending {
        /// When to ask again (zero: the framework's default).
        requeue_after: Duration,
    },
    /// The request can never succeed as it is (the CA refused it, the CSR is invalid, …).
    Permanent,
    /// The issuer itself is not usable right now (credentials missing or wrong, CA unreachable
    /// during check, …).
    IssuerNotReady,
    /// A failure that may go away on its own (timeouts, 5xx, connection resets).
    Transient,
}

/// What went wrong, and therefore what the controller does next ([`SignError::reaction`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SignError {
    /// What the controller does next.
    pub reaction: Reaction,
    /// What went wrong, shown in conditions, events and logs (never a secret value).
    pub message: String,
    /// An extra condition to set on the request next to Ready ([`SignError::with_condition`]).
    /// Boxed to keep `SignError` small (it is the error type of every `Result` in a signer).
    pub condition: Option<Box<RequestCondition>>,
    /// For [`Reaction::Transient`]: the CA asked not to be called again before this long (an HTTP
    /// `Retry-After`); the request is requeued no earlier than that. `None`: the controller's
    /// backoff alone decides. Set it with [`SignError::retry_after`].
    pub retry_after: Option<Duration>,
    /// The issuer's Ready=False reason when `check` returns this error ([`SignError::with_reason`]).
    reason: Option<&'static str>,
}

impl SignError {
    fn new(reaction: Reaction, message: impl Into<String>) -> Self {
        SignError { reaction, message: message.into(), condition: None, retry_after: None, reason: None }
    }

    /// A pending answer: ask again after `requeue_after`.
    pub fn pending(message: impl Into<String>, requeue_after: Duration) -> Self {
        Self::new(Reaction::Pending { requeue_after }, message)
    }

    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(Reaction::Permanent, message)
    }

    /// The issuer is not ready.
    pub fn issuer_not_ready(message: impl Into<String>) -> Self {
        Self::new(Reaction::IssuerNotReady, message)
    }

    /// A transient failure, retried with backoff.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(Reaction::Transient, message)
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
        mut self,
        type_: impl Into<String>,
        status: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        self.condition =
            Some(Box::new(RequestCondition { type_: type_.into(), status: status.into(), reason: reason.into() }));
        self
    }

    /// The CA asked to be called again no earlier than `d` from now (an HTTP `Retry-After`):
    /// a [`Reaction::Transient`] error is requeued no earlier than that. Setting it again
    /// replaces the value.
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    /// The CamelCase reason (e.g. `"AuthFailed"`) the issuer controller writes on the issuer's
    /// Ready=False condition when `check` returns this error, instead of the default `Pending`, so
    /// that `kubectl get` and alerts can tell a refused credential from an unreachable CA. A
    /// [`Reaction::Permanent`] error keeps the reason `Failed` (the framework holds a Failed issuer
    /// until it changes by that reason). Not CamelCase (`[A-Z][A-Za-z0-9]*`, at most 128
    /// characters): ignored, with a warning in the log. Has no effect on a request's conditions; an
    /// [`Reaction::IssuerNotReady`] from `sign` flips the issuer to `Pending` at once and its next
    /// check (which should return the same error) writes the reason.
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        if is_camel_case(reason) {
            self.reason = Some(reason);
        } else {
            tracing::warn!(reason, "SignError::with_reason: not a CamelCase condition reason; ignored");
        }
        self
    }

    /// The reason set with [`SignError::with_reason`].
    pub fn reason(&self) -> Option<&'static str> {
        self.reason
    }

    /// The same error with another reaction (message and condition kept), e.g. a transient
    /// failure during `check` that should read as the issuer not being ready.
    pub fn with_reaction(mut self, reaction: Reaction) -> Self {
        self.reaction = reaction;
        self
    }

    /// Prefix the message with context, keeping the reaction and condition.
    pub fn context(mut self, prefix: impl std::fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

/// A Kubernetes condition reason in the CamelCase form the API conventions ask for.
fn is_camel_case(reason: &str) -> bool {
    reason.len() <= 128
        && reason.starts_with(|c: char| c.is_ascii_uppercase())
        && reason.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_must_be_camel_case() {
        let e = SignError::issuer_not_ready("401").with_reason("AuthFailed").context("TPP verify");
        assert_eq!(e.reason(), Some("AuthFailed"), "context keeps the reason");
        assert_eq!(e.clone().with_reaction(Reaction::Transient).reason(), Some("AuthFailed"));
        let long: &'static str = "A".repeat(129).leak();
        for bad in ["authFailed", "Auth Failed", "Auth-Failed", "", long] {
            assert_eq!(SignError::transient("x").with_reason(bad).reason(), None, "{bad:?}");
        }
        let kept = SignError::transient("x").with_reason("AuthFailed").with_reason("bad reason");
        assert_eq!(kept.reason(), Some("AuthFailed"), "an invalid reason leaves the previous one");
    }

    #[test]
    fn condition_keeps_the_reaction() {
        let e = SignError::transient("CA busy").with_condition("Queued", "True", "Busy");
        assert_eq!(e.reaction, Reaction::Transient);
        assert_eq!(e.condition.as_ref().unwrap().reason, "Busy");
        assert_eq!(e.to_string(), "CA busy");
        let e = e.context("ejbca");
        assert_eq!(e.to_string(), "ejbca: CA busy");
        assert_eq!(e.reaction, Reaction::Transient);
        assert!(e.condition.is_some());
        let e = SignError::pending("waiting", Duration::from_secs(5)).with_condition("A", "True", "B");
        assert_eq!(e.reaction, Reaction::Pending { requeue_after: Duration::from_secs(5) });
    }

    #[test]
    fn retry_after_is_kept_through_context() {
        assert_eq!(SignError::transient("busy").retry_after, None);
        let e = SignError::transient("HTTP 429").retry_after(Duration::from_secs(7)).context("EJBCA enroll");
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(e.reaction, Reaction::Transient);
        assert_eq!(e.to_string(), "EJBCA enroll: HTTP 429");
    }
}
