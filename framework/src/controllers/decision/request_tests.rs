//! issuer-lib's `certificaterequest_controller_test.go` / `certificatesigningrequest_controller_test.go`
//! case names, on this module's functions, plus certbridge's fixes.
use std::collections::BTreeMap;

use super::*;
use crate::controllers::view::Cond;
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

fn view(kind: RequestKind, conditions: Vec<Cond>) -> RequestView {
    RequestView {
        kind,
        name: "r".into(),
        namespace: (kind == RequestKind::CertificateRequest).then(|| "ns".into()),
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
    view(RequestKind::CertificateRequest, conditions)
}

fn csr(conditions: Vec<Cond>) -> RequestView {
    view(RequestKind::CertificateSigningRequest, conditions)
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
    let v = cr(vec![cond(APPROVED, "True", "a"), cond(DENIED, "True", "b"), cond(READY, "Unknown", "Initializing")]);
    let Gate::Write(out) = gate(&v, OWNER) else { panic!("expected a write") };
    let m = "Detected that the CertificateRequest is denied, so it will never be Ready.";
    assert_eq!(out.set, vec![SetCond::new(READY, "False", "Denied", m)]);
    assert!(out.failure_time);
    assert_eq!(out.event, event(true, "PermanentError", "SyncFailed", m));
}

#[test]
fn denied_only_gets_ready_denied_and_failure_time_like_in_tree() {
    let Gate::Write(out) = gate(&cr(vec![cond(DENIED, "True", "policy")]), OWNER) else { panic!("expected a write") };
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
    // Doubled on purpose: issuer-lib writes exactly this text (see `after_sign`).
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
    assert_eq!(out.set[0], SetCond::new("ApprovalPending", "True", "WaitingForCA", "waiting for approval at the CA"));
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
    let out =
        after_sign(&approved_ready_unknown(), Err(SignError::transient("x")), just_after_creation(), Duration::ZERO);
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
    assert_eq!(out.set[0].message, "Failed permanently to sign CertificateRequest: the CSR signature does not verify");
    assert!(out.failure_time);
}

/// Issue 12: a CA's `Retry-After` on a transient error is honoured (no retry sooner), capped at
/// [`MAX_RETRY_AFTER`]; without one, the controller's backoff alone decides.
#[test]
fn retry_after_on_a_transient_error_sets_the_earliest_retry() {
    let e = SignError::transient("HTTP 429 Too Many Requests").retry_after(Duration::from_secs(30));
    let out = sign(&approved_ready_unknown(), Err(e));
    assert_eq!(out.next, Next::BackoffNoSooner("HTTP 429 Too Many Requests".into(), Duration::from_secs(30)));
    assert_eq!(out.verdict, Some(Verdict::Retry));
    let e = SignError::transient("HTTP 503").retry_after(Duration::from_secs(3600));
    assert_eq!(sign(&approved_ready_unknown(), Err(e)).next, Next::BackoffNoSooner("HTTP 503".into(), MAX_RETRY_AFTER));
    assert_eq!(MAX_RETRY_AFTER, Duration::from_secs(600));
    // Still bounded by the max retry duration.
    let e = SignError::transient("HTTP 429").retry_after(Duration::from_secs(30));
    let out = after_sign(&approved_ready_unknown(), Err(e), ts("2024-01-01T00:03:01Z"), MAX_RETRY);
    assert_eq!(out.verdict, Some(Verdict::Failed));
    // And the controller's error policy waits at least that long.
    let next = crate::controllers::shared::action(&Next::BackoffNoSooner("x".into(), Duration::from_secs(30)));
    assert_eq!(next.unwrap_err().no_sooner_than(), Some(Duration::from_secs(30)));
}

/// Issue 12: a leaf for another key is the CA's fault: transient (retried with backoff within the
/// max retry duration), with the same clear message, never written.
#[test]
fn a_leaf_for_another_key_is_transient_with_a_clear_message() {
    use crate::pki::KeyKind;
    let ca = crate::testing::TestCa::new(&KeyKind::EcP256).unwrap();
    let (csr_pem, _) = crate::testing::generate_csr(&KeyKind::EcP256, &["a.example.com"]).unwrap();
    let mut v = approved_ready_unknown();
    v.csr_pem = csr_pem.into_bytes();
    let req = v.sign_request().unwrap();
    let (other, _) = ca.leaf(&KeyKind::EcP256, &["a.example.com"]).unwrap();
    let issued = Issued::from_pem_bundle(&format!("{other}{}", ca.cert_pem())).unwrap();
    let err = verify_issued(&req, issued).unwrap_err();
    assert_eq!(err.reaction, Reaction::Transient);
    assert!(
        err.message.starts_with("the issued certificate's public key does not match the CSR's public key"),
        "{err}"
    );
    let out = sign(&v, Err(err.clone()));
    assert_eq!(out.verdict, Some(Verdict::Retry));
    assert!(out.issued.is_none());
    assert!(matches!(out.next, Next::Backoff(ref m) if m.contains("does not match the CSR's public key")));
    let out = after_sign(&v, Err(err), ts("2024-01-01T00:03:01Z"), MAX_RETRY);
    assert_eq!(out.verdict, Some(Verdict::Failed), "bounded by the max retry duration");
}
