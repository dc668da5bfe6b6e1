//! issuer-lib's issuer controller test case names, on this module's functions, plus the
//! transition-time rule both paths share.
use super::*;
use crate::controllers::decision::transition_time;
use crate::controllers::view::Cond;
use k8s_openapi::jiff::Timestamp;

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
    let ok = issuer_checked(Ok(Ready::default()), Duration::from_secs(300));
    assert_eq!(ok.ready, SetCond::new(READY, "True", "Checked", "Succeeded checking the issuer"));
    assert_eq!(ok.event, event(false, "Checked", "Synced", "Succeeded checking the issuer"));
    assert_eq!(ok.next, Next::After(Duration::from_secs(300)), "periodic re-check");
    let ok = issuer_checked(Ok(Ready::message("issuing CA CN=Corp Issuing CA 1")), Duration::from_secs(300));
    assert_eq!(ok.ready, SetCond::new(READY, "True", "Checked", "issuing CA CN=Corp Issuing CA 1"));
    assert_eq!(ok.event, event(false, "Checked", "Synced", "issuing CA CN=Corp Issuing CA 1"));
    let blank = issuer_checked(Ok(Ready::message("  ")), Duration::from_secs(300));
    assert_eq!(blank.ready.message, "Succeeded checking the issuer", "a blank message is the default");
}

#[test]
fn issuer_check_error_reason_replaces_pending_but_never_failed() {
    let e = SignError::issuer_not_ready("TPP answered 401 to a fresh token").with_reason("AuthFailed");
    let out = issuer_checked(Err(e.clone()), Duration::ZERO);
    assert_eq!(
        out.ready,
        SetCond::new(READY, "False", "AuthFailed", "Not ready yet: TPP answered 401 to a fresh token")
    );
    assert!(matches!(out.next, Next::Backoff(_)));
    let out = issuer_checked(Err(e.with_reaction(Reaction::Permanent)), Duration::ZERO);
    assert_eq!(out.ready.reason, "Failed", "the Failed hold depends on this reason");
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
    let step = issuer_gate(Some(&icond("True", "Checked", 1)), 1, References::Unchanged, Some("token expired"), OWNER);
    let IssuerStep::Write(out) = step else { panic!("expected a write") };
    assert_eq!(out.ready, SetCond::new(READY, "False", "Pending", "Not ready yet: token expired"));
    assert!(matches!(out.next, Next::Backoff(_)), "then checked again with backoff");
    // Not Ready already: just check.
    assert_eq!(
        issuer_gate(Some(&icond("False", "Pending", 1)), 1, References::Unchanged, Some("x"), OWNER),
        IssuerStep::Check
    );
}

#[test]
fn transition_time_is_kept_when_status_is_unchanged() {
    let now = ts("2025-01-01T00:00:00Z");
    let cur = cond(READY, "False", "Pending");
    assert_eq!(transition_time(Some(&cur), "False", now), ts("2024-01-01T00:00:00Z"));
    assert_eq!(transition_time(Some(&cur), "True", now), now);
    assert_eq!(transition_time(None::<&Cond>, "True", now), now);
    // An issuer's Ready condition follows the same rule.
    let issuer = IssuerCond { last_transition_time: Some(ts("2024-01-01T00:00:00Z")), ..icond("True", "Checked", 1) };
    assert_eq!(transition_time(Some(&issuer), "True", now), ts("2024-01-01T00:00:00Z"));
    assert_eq!(transition_time(Some(&issuer), "False", now), now);
    let unknown = icond("True", "Checked", 1);
    assert_eq!(transition_time(Some(&unknown), "True", now), now, "no recorded time: now");
}
