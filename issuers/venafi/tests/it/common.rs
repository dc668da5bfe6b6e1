//! Shared test equipment beyond the fixtures (`fixture`, shared with the benchmark): a recording
//! state store and the one place that reads an error's reaction.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use certbridge::context::StateStore;
use certbridge::{Resources, SignContext, SignError, async_trait};

pub use crate::fixture::*;

/// A state store that records every save, like the controller's annotation writes.
#[derive(Clone, Default)]
pub struct Store(pub Arc<Mutex<Vec<BTreeMap<String, String>>>>);

#[async_trait]
impl StateStore for Store {
    async fn save(&self, state: &BTreeMap<String, String>) -> Result<(), SignError> {
        self.0.lock().unwrap().push(state.clone());
        Ok(())
    }
}

impl Store {
    /// What a controller restarting after the `n`th save would load (0-based).
    pub fn saved(&self, n: usize) -> BTreeMap<String, String> {
        self.0.lock().unwrap()[n].clone()
    }
    pub fn last(&self) -> BTreeMap<String, String> {
        self.0.lock().unwrap().last().cloned().unwrap_or_default()
    }
}

/// A context whose saves go to `store`, starting from `state` (a "restarted controller").
pub fn ctx(res: &Resources, state: BTreeMap<String, String>, store: &Store) -> SignContext {
    SignContext::new(res.clone(), state, Some(Arc::new(store.clone())))
}

/// A state value.
pub fn st<'a>(state: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    state.get(key).map(String::as_str)
}

/// The controller's reaction to `e` — the one place that reads the error's shape, so the
/// framework-v2 rebase changes one function.
pub fn reaction(e: &SignError) -> &'static str {
    match e.reaction {
        certbridge::Reaction::Pending { .. } => "pending",
        certbridge::Reaction::Permanent => "permanent",
        certbridge::Reaction::IssuerNotReady => "issuer_not_ready",
        certbridge::Reaction::Transient => "transient",
    }
}

/// `(requeue_after, message)` of a pending answer.
pub fn pending_of(e: &SignError) -> Option<(std::time::Duration, String)> {
    match e.reaction {
        certbridge::Reaction::Pending { requeue_after } => Some((requeue_after, e.message.clone())),
        _ => None,
    }
}
