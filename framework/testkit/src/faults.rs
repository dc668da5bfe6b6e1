//! Fault injection and request counting for tests.
//!
//! Rules are matched in insertion order before a request is handled; the first matching
//! rule with remaining uses fires. Every API request is counted per (verb, resource),
//! whether or not a fault fired, so tests can assert e.g. "exactly one status patch".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The Kubernetes API verb of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    /// The lower-case verb name used in RBAC and discovery (`deletecollection`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Answer with this `Status` instead of handling the request.
    Error { code: u16, reason: String, message: String },
    /// Delay the request, then handle it normally.
    Latency(Duration),
}

/// A fault to inject. `None` fields match anything; `subresource: None` matches requests
/// on the main resource and on its subresources alike. `times: None` fires forever.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    pub verb: Option<Verb>,
    /// Resource plural, e.g. `certificaterequests`.
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub times: Option<u32>,
    pub action: FaultAction,
}

impl FaultRule {
    /// A rule answering every request with `code`/`reason`/`message`; narrow it with the builders.
    pub fn error(code: u16, reason: impl Into<String>, message: impl Into<String>) -> Self {
        FaultRule {
            verb: None,
            resource: None,
            subresource: None,
            times: None,
            action: FaultAction::Error { code, reason: reason.into(), message: message.into() },
        }
    }

    /// A rule delaying every request by `d`; narrow it with the builders.
    pub fn latency(d: Duration) -> Self {
        FaultRule { verb: None, resource: None, subresource: None, times: None, action: FaultAction::Latency(d) }
    }

    pub fn verb(mut self, v: Verb) -> Self {
        self.verb = Some(v);
        self
    }

    pub fn resource(mut self, r: impl Into<String>) -> Self {
        self.resource = Some(r.into());
        self
    }

    pub fn subresource(mut self, s: impl Into<String>) -> Self {
        self.subresource = Some(s.into());
        self
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

/// Identifies an injected rule (for [`Faults::remove`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(pub u64);

#[derive(Default)]
struct FaultState {
    next_id: u64,
    rules: Vec<(FaultId, FaultRule)>,
    counts: HashMap<(Verb, String, String), u64>,
}

/// Cloneable handle to the server's fault hooks and request counters.
#[derive(Clone)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
    watches: Arc<Mutex<CancellationToken>>,
}

impl Faults {
    pub(crate) fn new(shutdown: &CancellationToken) -> Self {
        Faults { state: Arc::default(), watches: Arc::new(Mutex::new(shutdown.child_token())) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a rule; it applies to requests arriving after this returns.
    pub fn inject(&self, rule: FaultRule) -> FaultId {
        let mut s = self.lock();
        s.next_id += 1;
        let id = FaultId(s.next_id);
        s.rules.push((id, rule));
        id
    }

    /// Removes one rule.
    pub fn remove(&self, id: FaultId) {
        self.lock().rules.retain(|(i, _)| *i != id);
    }

    /// Removes all rules (counters are kept).
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Closes every open watch stream; clients must re-watch.
    pub fn drop_watches(&self) {
        let mut t = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        t.cancel();
        // A fresh token for watches opened from now on; it must not inherit the
        // cancellation, so derive it from the same parent via a new child of nothing.
        *t = CancellationToken::new();
    }

    /// Requests seen for `verb` on `resource` (plural), including its subresources.
    pub fn count(&self, verb: Verb, resource: &str) -> u64 {
        self.lock().counts.iter().filter(|((v, r, _), _)| *v == verb && r == resource).map(|(_, n)| n).sum()
    }

    /// Requests seen for `verb` on one subresource (`""` = the main resource only).
    pub fn count_subresource(&self, verb: Verb, resource: &str, subresource: &str) -> u64 {
        self.lock().counts.get(&(verb, resource.to_string(), subresource.to_string())).copied().unwrap_or(0)
    }

    /// Resets all counters to zero.
    pub fn reset_counts(&self) {
        self.lock().counts.clear();
    }

    pub(crate) fn watch_token(&self) -> CancellationToken {
        self.watches.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Counts the request and returns the action of the first matching rule, consuming one use.
    pub(crate) fn on_request(&self, verb: Verb, resource: &str, sub: &str) -> Option<FaultAction> {
        let mut s = self.lock();
        *s.counts.entry((verb, resource.to_string(), sub.to_string())).or_default() += 1;
        let idx = s.rules.iter().position(|(_, r)| {
            r.verb.is_none_or(|v| v == verb)
                && r.resource.as_deref().is_none_or(|x| x == resource)
                && r.subresource.as_deref().is_none_or(|x| x == sub)
                && r.times != Some(0)
        })?;
        let rule = &mut s.rules[idx].1;
        let action = rule.action.clone();
        if let Some(t) = rule.times.as_mut() {
            *t -= 1;
        }
        if rule.times == Some(0) {
            s.rules.remove(idx);
        }
        Some(action)
    }
}
