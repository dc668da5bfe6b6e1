//! A CA outage seen from the request side: when `sign` keeps failing transiently for one issuer,
//! the issuer is checked again at once instead of at its next periodic re-check (5 minutes by
//! default), so the issuer's Ready condition follows what `check` says during the outage. Sign
//! errors never flip the issuer themselves — one request's transient failure says little about
//! the CA — the check decides.
//!
//! The rule: [`Outages::STREAK`] transient sign errors in a row for an issuer (across requests),
//! all within [`Outages::WINDOW`], ask for a re-check; at most one per [`Outages::MIN_INTERVAL`]
//! per issuer. Any other sign result for the issuer ends the streak.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::controllers::view::IssuerTarget;
use crate::error::{Reaction, SignError};

#[derive(Default)]
struct Streak {
    /// Times of the transient errors in the current streak (at most `STREAK`).
    errors: Vec<Instant>,
    last_recheck: Option<Instant>,
}

/// Transient sign errors per issuer.
#[derive(Default)]
pub(crate) struct Outages {
    by_issuer: Mutex<HashMap<IssuerTarget, Streak>>,
}

impl Outages {
    /// Transient errors in a row that make an outage.
    pub(crate) const STREAK: usize = 3;
    /// ...within this long.
    pub(crate) const WINDOW: Duration = Duration::from_secs(60);
    /// At most one re-check per issuer this often.
    pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(30);

    /// Records one sign result for `target` at `now`; `true` when the issuer should be checked
    /// again now.
    pub(crate) fn observe<T>(&self, target: &IssuerTarget, result: &Result<T, SignError>, now: Instant) -> bool {
        let transient = matches!(result, Err(e) if e.reaction == Reaction::Transient);
        let Ok(mut m) = self.by_issuer.lock() else { return false };
        if !transient {
            // Keep the rate limit of an issuer that had a streak; forget the others.
            if let Some(s) = m.get_mut(target) {
                s.errors.clear();
                if s.last_recheck.is_none_or(|t| now.duration_since(t) >= Self::MIN_INTERVAL) {
                    m.remove(target);
                }
            }
            return false;
        }
        let s = m.entry(target.clone()).or_default();
        s.errors.retain(|t| now.duration_since(*t) < Self::WINDOW);
        s.errors.push(now);
        if s.errors.len() < Self::STREAK {
            return false;
        }
        if s.last_recheck.is_some_and(|t| now.duration_since(t) < Self::MIN_INTERVAL) {
            return false;
        }
        s.errors.clear();
        s.last_recheck = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::IssuerScope;

    fn target(name: &str) -> IssuerTarget {
        IssuerTarget { scope: IssuerScope::Namespaced, name: name.into(), namespace: Some("ns".into()) }
    }

    #[test]
    fn three_transient_errors_in_a_minute_ask_for_one_recheck_per_30_seconds() {
        let o = Outages::default();
        let (a, b) = (target("a"), target("b"));
        let down: Result<(), SignError> = Err(SignError::transient("connect refused"));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!o.observe(&a, &down, at(0)));
        assert!(!o.observe(&b, &down, at(1)), "another issuer's errors do not count");
        assert!(!o.observe(&a, &down, at(2)));
        assert!(o.observe(&a, &down, at(3)), "the third in a row: re-check");
        // Still down: the next streak comes within 30 s of the re-check, so no second one yet.
        for s in 4..=7 {
            assert!(!o.observe(&a, &down, at(s)), "rate-limited at {s}s");
        }
        assert!(o.observe(&a, &down, at(34)), "30 s after the last re-check");
    }

    #[test]
    fn a_success_or_a_slow_trickle_is_no_outage() {
        let o = Outages::default();
        let a = target("a");
        let down: Result<(), SignError> = Err(SignError::transient("timeout"));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!o.observe(&a, &down, at(0)));
        assert!(!o.observe(&a, &down, at(1)));
        assert!(!o.observe(&a, &Ok(()), at(2)), "a success ends the streak");
        assert!(!o.observe(&a, &down, at(3)));
        assert!(!o.observe(&a, &down, at(4)));
        let other: Result<(), SignError> = Err(SignError::permanent("refused"));
        assert!(!o.observe(&a, &other, at(5)), "a permanent refusal is the CA answering");
        // Three transient errors, but spread over more than a minute.
        assert!(!o.observe(&a, &down, at(10)));
        assert!(!o.observe(&a, &down, at(50)));
        assert!(!o.observe(&a, &down, at(75)));
        assert!(o.observe(&a, &down, at(76)));
    }
}
