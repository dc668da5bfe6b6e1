//! The last request state this process saved, per request uid, so that `sign` is never handed
//! state older than what the controller itself wrote (issue 12, "stale cache").
//!
//! A pass reads the request from the informer cache, and a state save does not wake the request
//! (state annotations are left out of the request fingerprint). If the watch lags or relists
//! after a save, the next pass — a backoff retry 500 ms later — would see the object *before* the
//! save: an adapter that wrote a "submitted" marker would find none and submit again. So every
//! save records the state and the `resourceVersion` the patch returned, and a pass whose cached
//! copy carries other state is read afresh from the API server first ([`SavedStates::is_stale`]).
//!
//! Entries go when the cache has caught up with them (or moved past them), when the request is
//! finished, and after [`SavedStates::MAX_AGE`] (a deleted request's entry would stay otherwise).
//!
//! The same goes for state a save could *not* write (the API server down or refusing): an
//! asynchronous CA's request ID that reached the controller while its save failed is the only
//! link to a request the CA already holds, and for a CA without search (AD CS) losing it means
//! submitting again. So a failed save keeps the state in memory ([`SavedStates::record_unsaved`])
//! and the next pass hands it to `sign`, which saves it again ([`SavedStates::unsaved`]); only a
//! process exit before a save succeeds loses it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What this process last saved for one request.
struct Saved {
    resource_version: Option<String>,
    state: BTreeMap<String, String>,
    at: Instant,
}

/// The last saved state per request uid, and the state saves failed to write.
#[derive(Default)]
pub(crate) struct SavedStates {
    by_uid: Mutex<HashMap<String, Saved>>,
    unsaved: Mutex<HashMap<String, Unsaved>>,
}

/// State a save failed to write, and when.
type Unsaved = (BTreeMap<String, String>, Instant);

impl SavedStates {
    /// How long an entry is kept at most: a watch that lags longer than this is broken anyway
    /// (and kube's watcher relists it), and deleted requests must not pile up.
    pub(crate) const MAX_AGE: Duration = Duration::from_secs(600);

    /// How long state no save could write is kept: longer than any API outage a request rides
    /// out with its backoff, short enough that a deleted request's entry goes.
    pub(crate) const UNSAVED_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

    /// A save of `state` on request `uid` failed: keep it for the next pass.
    pub(crate) fn record_unsaved(&self, uid: &str, state: &BTreeMap<String, String>) {
        if uid.is_empty() {
            return;
        }
        let now = Instant::now();
        if let Ok(mut m) = self.unsaved.lock() {
            m.retain(|_, (_, at)| now.duration_since(*at) < Self::UNSAVED_MAX_AGE);
            m.insert(uid.to_owned(), (state.clone(), now));
        }
    }

    /// The state the last failed save of request `uid` could not write, if no save succeeded
    /// since: newer than anything on the object.
    pub(crate) fn unsaved(&self, uid: &str) -> Option<BTreeMap<String, String>> {
        let m = self.unsaved.lock().ok()?;
        m.get(uid).filter(|(_, at)| at.elapsed() < Self::UNSAVED_MAX_AGE).map(|(s, _)| s.clone())
    }

    /// The state just saved on request `uid`; `resource_version` is what the patch returned.
    pub(crate) fn record(&self, uid: &str, resource_version: Option<String>, state: &BTreeMap<String, String>) {
        if uid.is_empty() {
            return;
        }
        let now = Instant::now();
        if let Ok(mut m) = self.unsaved.lock() {
            m.remove(uid);
        }
        if let Ok(mut m) = self.by_uid.lock() {
            m.retain(|_, s| now.duration_since(s.at) < Self::MAX_AGE);
            m.insert(uid.to_owned(), Saved { resource_version, state: state.clone(), at: now });
        }
    }

    /// Whether the cached copy of request `uid` (at `cached_version`, carrying `cached_state`)
    /// may be older than the state this process saved: then the pass must read the request
    /// afresh. A copy carrying the saved state, or with a newer `resourceVersion`, has caught up
    /// and the entry is dropped.
    pub(crate) fn is_stale(
        &self,
        uid: &str,
        cached_version: Option<&str>,
        cached_state: &BTreeMap<String, String>,
    ) -> bool {
        let Ok(mut m) = self.by_uid.lock() else { return false };
        let Some(saved) = m.get(uid) else { return false };
        if Instant::now().duration_since(saved.at) >= Self::MAX_AGE || saved.state == *cached_state {
            m.remove(uid);
            return false;
        }
        // resourceVersions are opaque in general; where both are numbers (etcd, kube-sim) a newer
        // cached copy means someone else changed the state after our save: the cache is current.
        // Otherwise read afresh: a GET is always at least as new as our own patch.
        let newer = match (cached_version.and_then(|v| v.parse::<u64>().ok()), saved.resource_version.as_deref()) {
            (Some(cached), Some(ours)) => ours.parse::<u64>().is_ok_and(|ours| cached > ours),
            _ => false,
        };
        if newer {
            m.remove(uid);
        }
        !newer
    }

    /// Forgets a finished request.
    pub(crate) fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.unsaved.lock() {
            m.remove(uid);
        }
        if let Ok(mut m) = self.by_uid.lock() {
            m.remove(uid);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_uid.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn a_cached_copy_without_the_saved_state_is_stale_until_it_catches_up() {
        let saved = SavedStates::default();
        // Nothing saved: the cache is all there is.
        assert!(!saved.is_stale("u1", Some("5"), &BTreeMap::new()));
        saved.record("u1", Some("7".into()), &state(&[("marker", "m1")]));
        // The watch lags: the cached copy predates the save (older version, no marker).
        assert!(saved.is_stale("u1", Some("6"), &BTreeMap::new()));
        assert!(saved.is_stale("u1", Some("7"), &BTreeMap::new()), "same version, other state: read afresh");
        assert!(saved.is_stale("u1", None, &BTreeMap::new()), "no version: read afresh");
        // The cache caught up: the entry goes.
        assert!(!saved.is_stale("u1", Some("7"), &state(&[("marker", "m1")])));
        assert_eq!(saved.len(), 0);
        assert!(!saved.is_stale("u1", Some("6"), &BTreeMap::new()), "forgotten once caught up");
    }

    #[test]
    fn a_newer_cached_copy_wins_and_finished_requests_are_forgotten() {
        let saved = SavedStates::default();
        saved.record("u1", Some("7".into()), &state(&[("marker", "m1")]));
        // Someone else changed the state after our save: the cache is newer, not stale.
        assert!(!saved.is_stale("u1", Some("9"), &state(&[("marker", "other")])));
        assert_eq!(saved.len(), 0);
        // Opaque versions: never trusted to be newer.
        saved.record("u2", Some("abc".into()), &state(&[("k", "v")]));
        assert!(saved.is_stale("u2", Some("abd"), &BTreeMap::new()));
        saved.forget("u2");
        assert!(!saved.is_stale("u2", Some("abd"), &BTreeMap::new()));
        // A request without a uid is never recorded.
        saved.record("", Some("1".into()), &state(&[("k", "v")]));
        assert_eq!(saved.len(), 0);
    }

    #[test]
    fn state_a_save_could_not_write_is_kept_until_a_save_succeeds() {
        let saved = SavedStates::default();
        assert_eq!(saved.unsaved("u1"), None);
        saved.record_unsaved("u1", &state(&[("req-id", "7")]));
        assert_eq!(saved.unsaved("u1"), Some(state(&[("req-id", "7")])));
        assert_eq!(saved.unsaved("u2"), None, "per request");
        saved.record("u1", Some("9".into()), &state(&[("req-id", "7")]));
        assert_eq!(saved.unsaved("u1"), None, "written at last");
        saved.record_unsaved("u1", &state(&[("req-id", "8")]));
        saved.forget("u1");
        assert_eq!(saved.unsaved("u1"), None, "finished");
        saved.record_unsaved("", &state(&[("k", "v")]));
        assert_eq!(saved.unsaved(""), None);
    }
}
