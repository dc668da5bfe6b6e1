//! What happens next for a request or an issuer — pure functions of plain values, no I/O.
//!
//! The request path follows issuer-lib's `RequestController.reconcileStatusPatch` step by step
//! (same order, same condition reasons and messages, same events), with three deliberate fixes:
//! a CertificateRequest that is only `Denied` gets Ready=False/`Denied` and a failure time (as
//! cert-manager's in-tree issuers do), a request marked `InvalidRequest=True` is left alone, and
//! the caller supplies a non-zero max retry duration (3 minutes by default) so a transient error is
//! retried instead of failing at once. The controllers do the reads and writes around these
//! functions and nothing else.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::controllers::view::{Cond, Flavor, RequestView};
use crate::error::{Reaction, SignError};
use crate::pki::Issued;
use crate::request::SignRequest;

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
    fn new(type_: &str, status: &str, reason: &str, message: impl Into<String>) -> Self {
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

fn event(warning: bool, reason: &'static str, action: &'static str, note: &str) -> Option<EventOut> {
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
}

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
    match view.flavor {
        Flavor::CertificateRequest => {
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
        Flavor::Csr => {
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

/// The issuer's Ready condition as a request controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IssuerCond {
    pub status: String,
    pub reason: String,
    pub message: String,
    pub observed_generation: i64,
    pub last_transition_time: Option<Timestamp>,
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
    match view.flavor {
        Flavor::CertificateRequest => vec![SetCond::new(READY, status, reason, message)],
        Flavor::Csr => vec![],
    }
}

/// Checks what the signer returned before it is written: the leaf must carry the CSR's key.
pub(crate) fn verify_issued(req: &SignRequest, issued: Issued) -> Result<Issued, SignError> {
    let leaf_key = issued.leaf_public_key_der().map_err(SignError::permanent)?;
    if leaf_key != req.csr.public_key_der {
        return Err(SignError::permanent(
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
            let message = format!("Succeeded signing the {}", view.flavor.kind());
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
            // Deliberately doubled: issuer-lib wraps its pending error twice and writes exactly this
            // message, so users, dashboards and tests written against issuer-lib issuers see the
            // same text from certbridge ones.
            let message = format!("Signing still in progress. Reason: Signing still in progress. Reason: {err}");
            let after = if requeue_after.is_zero() { DEFAULT_PENDING_REQUEUE } else { requeue_after };
            Outcome {
                set: ready_if_cr(view, "False", "Pending", &message),
                event: match view.flavor {
                    Flavor::CertificateRequest => event(true, "RetryableError", "Synced", &message),
                    Flavor::Csr => event(true, "Pending", "Synced", &message),
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
            let message = format!("Failed to sign {}, will retry: {err}", view.flavor.kind());
            Outcome {
                set: ready_if_cr(view, "False", "Pending", &message),
                event: event(true, "RetryableError", "SyncFailed", &message),
                next: if custom_transitioned { Next::Done } else { Next::Backoff(err.to_string()) },
                verdict: Some(Verdict::Retry),
                ..Default::default()
            }
        }
    };
    set.append(&mut out.set);
    out.set = set;
    out
}

fn permanent(view: &RequestView, err: &str) -> Outcome {
    match view.flavor {
        Flavor::CertificateRequest => {
            let message = format!("Failed permanently to sign CertificateRequest: {err}");
            Outcome {
                set: vec![SetCond::new(READY, "False", "Failed", &message)],
                failure_time: true,
                event: event(true, "PermanentError", "SyncFailed", &message),
                verdict: Some(Verdict::Failed),
                ..Default::default()
            }
        }
        Flavor::Csr => {
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

// ---------------------------------------------------------------------------------------------
// Issuers (issuer-lib's `IssuerReconciler.reconcileStatusPatch`).

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
        return IssuerStep::Write(not_ready(err, Next::Backoff(err.to_owned())));
    }
    IssuerStep::Check
}

fn not_ready(err: &str, next: Next) -> IssuerOutcome {
    let message = format!("Not ready yet: {err}");
    IssuerOutcome {
        event: event(true, "RetryableError", "SyncFailed", &message),
        ready: SetCond::new(READY, "False", "Pending", message),
        next,
    }
}

/// What a check result means; `recheck` is the periodic re-check interval of a Ready issuer.
pub(crate) fn issuer_checked(result: Result<(), SignError>, recheck: Duration) -> IssuerOutcome {
    match result {
        Ok(()) => {
            let message = "Succeeded checking the issuer";
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
                not_ready(&e.to_string(), Next::After(after))
            }
            _ => not_ready(&e.to_string(), Next::Backoff(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    //! issuer-lib's `certificaterequest_controller_test.go` / `certificatesigningrequest_controller_test.go`
    //! case names, on this module's functions, plus certbridge's fixes.
    use std::collections::BTreeMap;

    use super::*;
    use crate::request::Requester;

    const OWNER: &str = "demo.certbridge.io";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cond(t: &str, status: &str, reason: &str) -> Cond {
        Cond {
            type_: t.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Some(ts("2024-01-01T00:00:00Z")),
        }
    }

    fn view(flavor: Flavor, conditions: Vec<Cond>) -> RequestView {
        RequestView {
            flavor,
            name: "r".into(),
            namespace: (flavor == Flavor::CertificateRequest).then(|| "ns".into()),
            uid: "u".into(),
            created: Some(ts("2024-01-01T00:00:00Z")),
            annotations: BTreeMap::new(),
            conditions,
            has_certificate: false,
            csr_pem: vec![],
            duration: Ok(Duration::from_secs(3600)),
            is_ca: false,
            usages: vec![],
            requester: Requester::default(),
        }
    }

    fn cr(conditions: Vec<Cond>) -> RequestView {
        view(Flavor::CertificateRequest, conditions)
    }

    fn csr(conditions: Vec<Cond>) -> RequestView {
        view(Flavor::Csr, conditions)
    }

    fn approved_ready_unknown() -> RequestView {
        cr(vec![cond(APPROVED, "True", "cert-manager.io"), cond(READY, "Unknown", "Initializing")])
    }

    fn just_after_creation() -> Timestamp {
        ts("2024-01-01T00:00:30Z")
    }

    const MAX_RETRY: Duration = Duration::from_secs(180);

    #[test]
    fn a_pending_answer_whose_state_cannot_be_saved_is_retried() {
        let save = || Err(SignError::transient("cannot save the request state: conflict"));
        // With a condition attached (what the EJBCA adapter returns while waiting for approval).
        let pending = SignError::pending("waiting for approval", Duration::from_secs(5)).with_condition(
            "ApprovalPending",
            "True",
            "WaitingForApproval",
        );
        let e = after_save(Err(pending.clone()), save()).unwrap_err();
        assert_eq!((e.reaction, e.condition), (Reaction::Transient, None));
        let out = sign(&approved_ready_unknown(), Err(after_save(Err(pending.clone()), save()).unwrap_err()));
        assert_eq!(out.verdict, Some(Verdict::Retry));
        // Saved: the pending answer stands, condition and all.
        assert_eq!(after_save(Err(pending.clone()), Ok(())).unwrap_err(), pending);
        // Not pending: its own reaction wins over the save error.
        let e = after_save(Err(SignError::permanent("refused")), save()).unwrap_err();
        assert_eq!(e.reaction, Reaction::Permanent);
    }

    fn sign(view: &RequestView, r: Result<Issued, SignError>) -> Outcome {
        after_sign(view, r, just_after_creation(), MAX_RETRY)
    }

    fn issued() -> Issued {
        Issued { chain_pem: "LEAF".into(), ca_pem: Some("CA".into()) }
    }

    #[test]
    fn ignore_unless_approved_or_denied() {
        assert!(matches!(gate(&cr(vec![]), OWNER), Gate::Ignore(_)));
        assert!(matches!(gate(&cr(vec![cond(APPROVED, "False", "x")]), OWNER), Gate::Ignore(_)));
        assert!(matches!(gate(&csr(vec![]), OWNER), Gate::Ignore(_)));
    }

    #[test]
    fn already_ready_failed_denied() {
        let a = cond(APPROVED, "True", "cert-manager.io");
        for ready in [cond(READY, "True", "Issued"), cond(READY, "False", "Failed"), cond(READY, "False", "Denied")] {
            assert!(matches!(gate(&cr(vec![a.clone(), ready]), OWNER), Gate::Ignore(_)));
        }
        let mut with_cert = csr(vec![a.clone()]);
        with_cert.has_certificate = true;
        assert!(matches!(gate(&with_cert, OWNER), Gate::Ignore(_)));
        assert!(matches!(gate(&csr(vec![a.clone(), cond(FAILED, "True", "Failed")]), OWNER), Gate::Ignore(_)));
        assert!(matches!(gate(&csr(vec![cond(DENIED, "True", "No")]), OWNER), Gate::Ignore(_)));
    }

    #[test]
    fn initialize_ready_condition() {
        let Gate::Write(out) = gate(&cr(vec![cond(APPROVED, "True", "cert-manager.io")]), OWNER) else {
            panic!("expected a write")
        };
        assert_eq!(
            out.set,
            vec![SetCond::new(
                READY,
                "Unknown",
                "Initializing",
                "demo.certbridge.io has started reconciling this CertificateRequest"
            )]
        );
        assert_eq!(out.event, None);
        assert!(!out.failure_time);
        assert_eq!(out.next, Next::Done);
        // A CSR has no Initializing step.
        assert_eq!(gate(&csr(vec![cond(APPROVED, "True", "x")]), OWNER), Gate::Continue);
        assert_eq!(gate(&approved_ready_unknown(), OWNER), Gate::Continue);
    }

    #[test]
    fn set_ready_denied_when_approved_and_denied_like_issuer_lib() {
        let v =
            cr(vec![cond(APPROVED, "True", "a"), cond(DENIED, "True", "b"), cond(READY, "Unknown", "Initializing")]);
        let Gate::Write(out) = gate(&v, OWNER) else { panic!("expected a write") };
        let m = "Detected that the CertificateRequest is denied, so it will never be Ready.";
        assert_eq!(out.set, vec![SetCond::new(READY, "False", "Denied", m)]);
        assert!(out.failure_time);
        assert_eq!(out.event, event(true, "PermanentError", "SyncFailed", m));
    }

    #[test]
    fn denied_only_gets_ready_denied_and_failure_time_like_in_tree() {
        let Gate::Write(out) = gate(&cr(vec![cond(DENIED, "True", "policy")]), OWNER) else {
            panic!("expected a write")
        };
        assert_eq!(
            out.set,
            vec![SetCond::new(READY, "False", "Denied", "The CertificateRequest was denied by an approval controller")]
        );
        assert!(out.failure_time);
        assert_eq!(out.event, None);
        assert_eq!(out.verdict, Some(Verdict::Denied));
    }

    #[test]
    fn invalid_request_is_left_alone() {
        let v = cr(vec![cond(APPROVED, "True", "a"), cond(INVALID_REQUEST, "True", "BadCSR")]);
        assert!(matches!(gate(&v, OWNER), Gate::Ignore(_)));
        // InvalidRequest=False does not stop anything.
        let v = cr(vec![cond(APPROVED, "True", "a"), cond(INVALID_REQUEST, "False", "Ok"), cond(READY, "Unknown", "")]);
        assert_eq!(gate(&v, OWNER), Gate::Continue);
    }

    #[test]
    fn set_ready_pending_missing_issuer() {
        let out = waiting_for_issuer(
            &approved_ready_unknown(),
            &IssuerState::Missing("demoissuers.demo.certbridge.io \"ca\" not found".into()),
        )
        .unwrap();
        let m = "demoissuers.demo.certbridge.io \"ca\" not found. Waiting for it to be created.";
        assert_eq!(out.set, vec![SetCond::new(READY, "False", "Pending", m)]);
        assert_eq!(out.event, event(false, "WaitingForIssuerExist", "Synced", m));
        assert_eq!(out.next, Next::Done);
        // The CSR only gets the event.
        let out = waiting_for_issuer(&csr(vec![]), &IssuerState::Missing("x \"y\" not found".into())).unwrap();
        assert!(out.set.is_empty() && !out.writes());
        assert_eq!(out.event.unwrap().reason, "WaitingForIssuerExist");
    }

    #[test]
    fn set_ready_pending_issuer_has_no_ready_condition_outdated_or_not_ready() {
        let c = |status: &str, g: i64| IssuerCond {
            status: status.into(),
            reason: "Pending".into(),
            message: "Not ready yet: CA down".into(),
            observed_generation: g,
            last_transition_time: None,
        };
        assert_eq!(issuer_state(None, 1), IssuerState::NoCondition);
        assert_eq!(issuer_state(Some(&c("True", 1)), 2), IssuerState::Outdated);
        assert_eq!(issuer_state(Some(&c("True", 2)), 2), IssuerState::Ready);
        let nr = issuer_state(Some(&c("False", 2)), 2);
        let v = approved_ready_unknown();
        let expect = [
            (IssuerState::NoCondition, "Waiting for issuer to become ready. Current issuer ready condition: <none>."),
            (IssuerState::Outdated, "Waiting for issuer to become ready. Current issuer ready condition is outdated."),
            (
                nr,
                "Waiting for issuer to become ready. Current issuer ready condition is \"Pending\": Not ready yet: CA down.",
            ),
        ];
        for (state, m) in expect {
            let out = waiting_for_issuer(&v, &state).unwrap();
            assert_eq!(out.set, vec![SetCond::new(READY, "False", "Pending", m)]);
            assert_eq!(out.event, event(false, "WaitingForIssuerReady", "Synced", m));
            assert_eq!(out.next, Next::Done, "no requeue: the issuer watch wakes the request");
        }
        assert_eq!(waiting_for_issuer(&v, &IssuerState::Ready), None);
    }

    #[test]
    fn success_issuer_and_clusterissuer() {
        let out = sign(&approved_ready_unknown(), Ok(issued()));
        assert_eq!(out.set, vec![SetCond::new(READY, "True", "Issued", "Succeeded signing the CertificateRequest")]);
        assert_eq!(out.issued, Some(issued()));
        assert_eq!(out.event, event(false, "Issued", "Synced", "Succeeded signing the CertificateRequest"));
        assert!(!out.failure_time);
        let out = sign(&csr(vec![cond(APPROVED, "True", "a")]), Ok(issued()));
        assert!(out.set.is_empty());
        assert_eq!(out.issued, Some(issued()));
        assert_eq!(out.event.unwrap().note, "Succeeded signing the CertificateSigningRequest");
    }

    #[test]
    fn retry_on_pending_error() {
        let out = sign(&approved_ready_unknown(), Err(SignError::pending("CA is busy", Duration::from_secs(7))));
        let m = "Signing still in progress. Reason: Signing still in progress. Reason: CA is busy";
        assert_eq!(out.set, vec![SetCond::new(READY, "False", "Pending", m)]);
        assert_eq!(out.event, event(true, "RetryableError", "Synced", m));
        assert_eq!(out.next, Next::After(Duration::from_secs(7)));
        // Zero means issuer-lib's 1 s.
        let out = sign(&approved_ready_unknown(), Err(SignError::pending("x", Duration::ZERO)));
        assert_eq!(out.next, Next::After(Duration::from_secs(1)));
        // Pending bypasses the max retry duration.
        let out = after_sign(
            &approved_ready_unknown(),
            Err(SignError::pending("x", Duration::ZERO)),
            ts("2030-01-01T00:00:00Z"),
            MAX_RETRY,
        );
        assert_eq!(out.verdict, Some(Verdict::Pending));
        // The CSR's event reason is Pending and nothing is written.
        let out = sign(&csr(vec![cond(APPROVED, "True", "a")]), Err(SignError::pending("x", Duration::ZERO)));
        assert!(!out.writes());
        assert_eq!(out.event.unwrap().reason, "Pending");
    }

    #[test]
    fn retry_on_pending_error_custom() {
        let err = SignError::pending("waiting for approval at the CA", Duration::from_secs(5)).with_condition(
            "ApprovalPending",
            "True",
            "WaitingForCA",
        );
        // The custom condition appears: no requeue, the update event triggers the next pass.
        let out = sign(&approved_ready_unknown(), Err(err.clone()));
        assert_eq!(
            out.set[0],
            SetCond::new("ApprovalPending", "True", "WaitingForCA", "waiting for approval at the CA")
        );
        assert_eq!(out.set[1].reason, "Pending");
        assert_eq!(out.next, Next::Done);
        // Already present with the same status: requeue as asked.
        let mut v = approved_ready_unknown();
        v.conditions.push(cond("ApprovalPending", "True", "WaitingForCA"));
        assert_eq!(sign(&v, Err(err)).next, Next::After(Duration::from_secs(5)));
    }

    #[test]
    fn error_set_certificate_request_condition_add_update_timeout() {
        let err = SignError::transient("CA returned 503").with_condition("CAQueue", "False", "Busy");
        // add: condition appears, no backoff (terminal), Ready pending retry message.
        let out = sign(&approved_ready_unknown(), Err(err.clone()));
        assert_eq!(out.set[0], SetCond::new("CAQueue", "False", "Busy", "CA returned 503"));
        assert_eq!(
            out.set[1],
            SetCond::new(READY, "False", "Pending", "Failed to sign CertificateRequest, will retry: CA returned 503")
        );
        assert_eq!(out.next, Next::Done);
        // update: status changes True → False, still a transition.
        let mut v = approved_ready_unknown();
        v.conditions.push(cond("CAQueue", "True", "Busy"));
        assert_eq!(sign(&v, Err(err.clone())).next, Next::Done);
        // unchanged: normal backoff.
        let mut v = approved_ready_unknown();
        v.conditions.push(cond("CAQueue", "False", "Busy"));
        assert_eq!(sign(&v, Err(err.clone())).next, Next::Backoff("CA returned 503".into()));
        // timeout: past the max retry duration the error becomes permanent, condition still set.
        let out = after_sign(&v, Err(err), ts("2024-01-01T00:03:01Z"), MAX_RETRY);
        assert_eq!(out.set[0].type_, "CAQueue");
        assert_eq!(out.set[1].reason, "Failed");
        assert!(out.failure_time);
    }

    #[test]
    fn error_set_certificate_request_condition_not_timeout_if_pending_and_no_retry_on_permanent() {
        let pending = SignError::pending("queued", Duration::from_secs(3)).with_condition("Queued", "True", "InQueue");
        let out = after_sign(&approved_ready_unknown(), Err(pending), ts("2030-01-01T00:00:00Z"), MAX_RETRY);
        assert_eq!(out.set[1].reason, "Pending");
        assert!(!out.failure_time);
        let permanent = SignError::permanent("refused").with_condition("Refused", "True", "Policy");
        let out = sign(&approved_ready_unknown(), Err(permanent));
        assert_eq!(out.set[0], SetCond::new("Refused", "True", "Policy", "refused"));
        assert_eq!(
            out.set[1],
            SetCond::new(READY, "False", "Failed", "Failed permanently to sign CertificateRequest: refused")
        );
        assert_eq!(out.next, Next::Done);
    }

    #[test]
    fn fail_on_permanent_error() {
        let out = sign(&approved_ready_unknown(), Err(SignError::permanent("the CA refused the subject")));
        let m = "Failed permanently to sign CertificateRequest: the CA refused the subject";
        assert_eq!(out.set, vec![SetCond::new(READY, "False", "Failed", m)]);
        assert!(out.failure_time);
        assert_eq!(out.event, event(true, "PermanentError", "SyncFailed", m));
        assert_eq!(out.next, Next::Done);
        let out = sign(&csr(vec![cond(APPROVED, "True", "a")]), Err(SignError::permanent("no")));
        assert_eq!(
            out.set,
            vec![SetCond::new(FAILED, "True", "Failed", "CertificateSigningRequest has failed permanently: no")]
        );
        assert!(!out.failure_time, "CSRs have no failureTime");
    }

    #[test]
    fn retry_on_error_until_max_retry_duration() {
        let out = sign(&approved_ready_unknown(), Err(SignError::transient("connection reset")));
        let m = "Failed to sign CertificateRequest, will retry: connection reset";
        assert_eq!(out.set, vec![SetCond::new(READY, "False", "Pending", m)]);
        assert_eq!(out.event, event(true, "RetryableError", "SyncFailed", m));
        assert_eq!(out.next, Next::Backoff("connection reset".into()));
        assert_eq!(out.verdict, Some(Verdict::Retry));
        // timeout-permanent-error: created 00:00:00, max 3 min, now 00:03:01.
        let out = after_sign(
            &approved_ready_unknown(),
            Err(SignError::transient("connection reset")),
            ts("2024-01-01T00:03:01Z"),
            MAX_RETRY,
        );
        assert_eq!(out.set[0].reason, "Failed");
        assert_eq!(out.set[0].message, "Failed permanently to sign CertificateRequest: connection reset");
        // A zero max retry duration makes every plain error permanent (issuer-lib's zero value).
        let out = after_sign(
            &approved_ready_unknown(),
            Err(SignError::transient("x")),
            just_after_creation(),
            Duration::ZERO,
        );
        assert_eq!(out.verdict, Some(Verdict::Failed));
        // CSR retry: event only.
        let out = sign(&csr(vec![cond(APPROVED, "True", "a")]), Err(SignError::transient("x")));
        assert!(!out.writes());
        assert_eq!(out.event.unwrap().note, "Failed to sign CertificateSigningRequest, will retry: x");
    }

    #[test]
    fn issuer_error_holds_the_request_and_reports_the_issuer() {
        let out = sign(&approved_ready_unknown(), Err(SignError::issuer_not_ready("token expired")));
        assert_eq!(out.issuer_error.as_deref(), Some("token expired"));
        assert_eq!(
            out.set,
            vec![SetCond::new(
                READY,
                "False",
                "Pending",
                "Waiting for issuer to become ready. Current issuer ready condition is outdated."
            )]
        );
        assert_eq!(out.next, Next::Done);
        // Wins over a custom condition, as errors.As(IssuerError) runs first in issuer-lib.
        let e = SignError::issuer_not_ready("x").with_condition("C", "True", "R");
        assert_eq!(sign(&approved_ready_unknown(), Err(e)).set.len(), 1);
    }

    #[test]
    fn invalid_requests_fail_naming_the_problem() {
        let out = invalid_request(&approved_ready_unknown(), "the CSR signature does not verify");
        assert_eq!(
            out.set[0].message,
            "Failed permanently to sign CertificateRequest: the CSR signature does not verify"
        );
        assert!(out.failure_time);
    }

    #[test]
    fn transition_time_is_kept_when_status_is_unchanged() {
        let now = ts("2025-01-01T00:00:00Z");
        let cur = cond(READY, "False", "Pending");
        assert_eq!(transition_time(Some(&cur), "False", now), ts("2024-01-01T00:00:00Z"));
        assert_eq!(transition_time(Some(&cur), "True", now), now);
        assert_eq!(transition_time(None::<&Cond>, "True", now), now);
        // An issuer's Ready condition follows the same rule.
        let issuer =
            IssuerCond { last_transition_time: Some(ts("2024-01-01T00:00:00Z")), ..icond("True", "Checked", 1) };
        assert_eq!(transition_time(Some(&issuer), "True", now), ts("2024-01-01T00:00:00Z"));
        assert_eq!(transition_time(Some(&issuer), "False", now), now);
        let unknown = icond("True", "Checked", 1);
        assert_eq!(transition_time(Some(&unknown), "True", now), now, "no recorded time: now");
    }

    fn icond(status: &str, reason: &str, g: i64) -> IssuerCond {
        IssuerCond {
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: g,
            last_transition_time: None,
        }
    }

    #[test]
    fn issuer_initialize_then_check() {
        let IssuerStep::Write(out) = issuer_gate(None, 1, References::Unchanged, None, OWNER) else { panic!() };
        assert_eq!(
            out.ready,
            SetCond::new(READY, "Unknown", "Initializing", "demo.certbridge.io has started reconciling this Issuer")
        );
        assert_eq!(
            issuer_gate(Some(&icond("Unknown", "Initializing", 1)), 1, References::Unchanged, None, OWNER),
            IssuerStep::Check
        );
        let ok = issuer_checked(Ok(()), Duration::from_secs(300));
        assert_eq!(ok.ready, SetCond::new(READY, "True", "Checked", "Succeeded checking the issuer"));
        assert_eq!(ok.event, event(false, "Checked", "Synced", "Succeeded checking the issuer"));
        assert_eq!(ok.next, Next::After(Duration::from_secs(300)), "periodic re-check");
    }

    #[test]
    fn issuer_permanent_failure_holds_until_generation_changes() {
        let out = issuer_checked(Err(SignError::permanent("spec.url: must be https")), Duration::from_secs(300));
        assert_eq!(out.ready, SetCond::new(READY, "False", "Failed", "Failed permanently: spec.url: must be https"));
        assert_eq!(out.next, Next::Done);
        assert_eq!(
            issuer_gate(Some(&icond("False", "Failed", 3)), 3, References::Unchanged, None, OWNER),
            IssuerStep::Ignore
        );
        assert_eq!(
            issuer_gate(Some(&icond("False", "Failed", 3)), 4, References::Unchanged, None, OWNER),
            IssuerStep::Check
        );
        // A referenced Secret changed, or this process never checked it: look again.
        for refs in [References::Changed, References::Unknown] {
            assert_eq!(issuer_gate(Some(&icond("False", "Failed", 3)), 3, refs, None, OWNER), IssuerStep::Check);
        }
    }

    #[test]
    fn issuer_retryable_and_pending_checks() {
        let out = issuer_checked(Err(SignError::issuer_not_ready("Secret \"ns/x\" not found")), Duration::ZERO);
        assert_eq!(out.ready, SetCond::new(READY, "False", "Pending", "Not ready yet: Secret \"ns/x\" not found"));
        assert_eq!(out.event.as_ref().unwrap().reason, "RetryableError");
        assert!(matches!(out.next, Next::Backoff(_)));
        let out = issuer_checked(Err(SignError::pending("warming up", Duration::from_secs(9))), Duration::ZERO);
        assert_eq!(out.next, Next::After(Duration::from_secs(9)));
        assert!(!out.is_ready());
    }

    #[test]
    fn reported_issuer_error_flips_a_ready_issuer_without_a_check() {
        let step =
            issuer_gate(Some(&icond("True", "Checked", 1)), 1, References::Unchanged, Some("token expired"), OWNER);
        let IssuerStep::Write(out) = step else { panic!("expected a write") };
        assert_eq!(out.ready, SetCond::new(READY, "False", "Pending", "Not ready yet: token expired"));
        assert!(matches!(out.next, Next::Backoff(_)), "then checked again with backoff");
        // Not Ready already: just check.
        assert_eq!(
            issuer_gate(Some(&icond("False", "Pending", 1)), 1, References::Unchanged, Some("x"), OWNER),
            IssuerStep::Check
        );
    }
}
