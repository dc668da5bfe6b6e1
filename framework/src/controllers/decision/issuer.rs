//! The issuer decisions (issuer-lib's `IssuerReconciler.reconcileStatusPatch`) — pure functions
//! of plain values, no I/O: whether to check an issuer, and what a check result means.

use std::time::Duration;

use crate::controllers::decision::{DEFAULT_PENDING_REQUEUE, EventOut, IssuerCond, Next, READY, SetCond, event};
use crate::error::{Reaction, SignError};
use crate::signer::Ready;

/// What an issuer reconcile pass writes and does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IssuerOutcome {
    pub ready: SetCond,
    pub event: Option<EventOut>,
    pub next: Next,
}

impl IssuerOutcome {
    /// Whether this outcome makes the issuer Ready.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.status == "True"
    }
}

/// The first issuer decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IssuerStep {
    /// Permanently failed at this generation: leave it until the spec changes.
    Ignore,
    /// Write this without checking.
    Write(IssuerOutcome),
    /// Run the adapter's check.
    Check,
}

/// Whether the Secrets and ConfigMaps an issuer's last check read are as they were then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum References {
    /// Same `resourceVersion`s as at the last check.
    Unchanged,
    /// One was created, changed or deleted since.
    Changed,
    /// Not known: this process has not checked the issuer yet (e.g. after a restart).
    Unknown,
}

/// issuer-lib's issuer gate: a fresh issuer is initialized first, a sign-time issuer error flips a
/// Ready issuer without a check, and a permanent failure holds until the issuer is *outdated*:
/// its generation changed, or an object it references changed (or is not known, after a
/// restart). Fixing a referenced Secret therefore re-checks even a Failed issuer.
pub(crate) fn issuer_gate(
    ready: Option<&IssuerCond>,
    generation: i64,
    references: References,
    reported_error: Option<&str>,
    field_owner: &str,
) -> IssuerStep {
    let Some(ready) = ready else {
        return IssuerStep::Write(IssuerOutcome {
            ready: SetCond::new(
                READY,
                "Unknown",
                "Initializing",
                format!("{field_owner} has started reconciling this Issuer"),
            ),
            event: None,
            next: Next::Done,
        });
    };
    if ready.status == "False"
        && ready.reason == "Failed"
        && ready.observed_generation >= generation
        && references == References::Unchanged
    {
        return IssuerStep::Ignore;
    }
    if let Some(err) = reported_error
        && ready.status == "True"
    {
        return IssuerStep::Write(not_ready(err, None, Next::Backoff(err.to_owned())));
    }
    IssuerStep::Check
}

/// Not ready with `reason` (the signer's, else issuer-lib's `Pending`).
fn not_ready(err: &str, reason: Option<&str>, next: Next) -> IssuerOutcome {
    let message = format!("Not ready yet: {err}");
    IssuerOutcome {
        event: event(true, "RetryableError", "SyncFailed", &message),
        ready: SetCond::new(READY, "False", reason.unwrap_or("Pending"), message),
        next,
    }
}

/// What a check result means; `recheck` is the periodic re-check interval of a Ready issuer.
pub(crate) fn issuer_checked(result: Result<Ready, SignError>, recheck: Duration) -> IssuerOutcome {
    match result {
        Ok(ready) => {
            let message = ready.text().unwrap_or("Succeeded checking the issuer");
            IssuerOutcome {
                ready: SetCond::new(READY, "True", "Checked", message),
                event: event(false, "Checked", "Synced", message),
                next: Next::After(recheck),
            }
        }
        Err(e) => match e.reaction {
            Reaction::Permanent => {
                let message = format!("Failed permanently: {e}");
                IssuerOutcome {
                    event: event(true, "PermanentError", "SyncFailed", &message),
                    ready: SetCond::new(READY, "False", "Failed", message),
                    next: Next::Done,
                }
            }
            Reaction::Pending { requeue_after } => {
                let after = if requeue_after.is_zero() { DEFAULT_PENDING_REQUEUE } else { requeue_after };
                not_ready(&e.to_string(), e.reason(), Next::After(after))
            }
            _ => not_ready(&e.to_string(), e.reason(), Next::Backoff(e.to_string())),
        },
    }
}

#[cfg(test)]
#[path = "issuer_tests.rs"]
mod tests;
