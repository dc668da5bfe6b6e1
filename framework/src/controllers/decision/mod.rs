//! What happens next for a request or an issuer: pure functions of plain values, no I/O. The
//! controllers do the reads and writes around them and nothing else.
//!
//! - [`request`]: the request path (issuer-lib's `RequestController.reconcileStatusPatch`);
//! - [`issuer`]: the issuer path (issuer-lib's `IssuerReconciler.reconcileStatusPatch`);
//! - here: what both write (condition types, [`SetCond`], [`EventOut`], [`Next`]) and the
//!   transition-time rule the status writer (`ssa`) applies to either.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::controllers::view::Cond;

pub(crate) mod issuer;
pub(crate) mod pending_limit;
pub(crate) mod request;

pub(crate) const READY: &str = "Ready";
pub(crate) const APPROVED: &str = "Approved";
pub(crate) const DENIED: &str = "Denied";
pub(crate) const INVALID_REQUEST: &str = "InvalidRequest";
/// The Kubernetes CSR condition issuer-lib sets on permanent failure.
pub(crate) const FAILED: &str = "Failed";

/// issuer-lib's requeue for a `PendingError` without a delay.
pub(crate) const DEFAULT_PENDING_REQUEUE: Duration = Duration::from_secs(1);

/// A condition this pass sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetCond {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl SetCond {
    pub(super) fn new(type_: &str, status: &str, reason: &str, message: impl Into<String>) -> Self {
        SetCond { type_: type_.into(), status: status.into(), reason: reason.into(), message: message.into() }
    }
}

/// An event to publish on the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventOut {
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

pub(super) fn event(warning: bool, reason: &'static str, action: &'static str, note: &str) -> Option<EventOut> {
    Some(EventOut { warning, reason, action, note: note.to_owned() })
}

/// What the controller does after writing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Next {
    /// Wait for the object (or its issuer) to change.
    #[default]
    Done,
    /// Reconcile again after this long.
    After(Duration),
    /// Retry with exponential backoff; counts as a reconcile error.
    Backoff(String),
    /// As `Backoff`, but no sooner than this (a CA's `Retry-After`, capped: see `retry_after`).
    BackoffNoSooner(String, Duration),
}

/// The issuer's Ready condition as a request controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IssuerCond {
    pub status: String,
    pub reason: String,
    pub message: String,
    pub observed_generation: i64,
    pub last_transition_time: Option<Timestamp>,
}

/// A condition as last written on an object (a request's or an issuer's): all that decides its
/// next transition time.
pub(crate) trait WrittenCondition {
    fn status(&self) -> &str;
    fn transitioned_at(&self) -> Option<Timestamp>;
}

impl WrittenCondition for Cond {
    fn status(&self) -> &str {
        &self.status
    }
    fn transitioned_at(&self) -> Option<Timestamp> {
        self.last_transition_time
    }
}

impl WrittenCondition for IssuerCond {
    fn status(&self) -> &str {
        &self.status
    }
    fn transitioned_at(&self) -> Option<Timestamp> {
        self.last_transition_time
    }
}

/// The transition time of a condition being set: kept when the status does not change.
pub(crate) fn transition_time<C: WrittenCondition>(current: Option<&C>, new_status: &str, now: Timestamp) -> Timestamp {
    match current {
        Some(c) if c.status() == new_status => c.transitioned_at().unwrap_or(now),
        _ => now,
    }
}
