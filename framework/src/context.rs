//! What a signer gets besides the request: the issuer's [`Resources`] and a small per-request
//! state map that survives controller restarts.
//!
//! State is how an asynchronous CA's request ID outlives the process: the framework stores it on
//! the request object as annotations `state.<group>/<key>` and hands it back on the next call.
//! It is saved after every `sign` call whatever the outcome; call [`SignContext::save_state`] to
//! save *before* a call to the CA that must never be repeated (e.g. an idempotency key).
//!
//! The framework guarantees two things about the state `sign` is handed: it is never older than
//! the state this process last saved for the request (a lagging watch makes the controller read
//! the request afresh), and it is state the controller wrote itself (it carries an HMAC with the
//! controller's key; annotations a requester wrote or edited are handed over as no state at all,
//! with a `StateRejected` Warning event). Adapters can therefore trust an `approval-id` or an
//! "enroll started" marker they find here.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::SignError;
use crate::resources::Resources;

/// Persists a request's state map (implemented by the controllers; a no-op offline).
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Write `state` so that the next sign call for the same request sees it.
    async fn save(&self, state: &BTreeMap<String, String>) -> Result<(), SignError>;
}

/// Context for one `sign` call.
pub struct SignContext {
    resources: Resources,
    state: BTreeMap<String, String>,
    saved: BTreeMap<String, String>,
    store: Option<Arc<dyn StateStore>>,
}

impl std::fmt::Debug for SignContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignContext")
            .field("resources", &self.resources)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl SignContext {
    /// A context with the state loaded from the request object and a store to save it.
    pub fn new(resources: Resources, state: BTreeMap<String, String>, store: Option<Arc<dyn StateStore>>) -> Self {
        SignContext { resources, saved: state.clone(), state, store }
    }

    /// Hands `sign` state that a failed save could not write (the controller kept it in memory):
    /// it is newer than the saved state, and the next [`SignContext::save_state`] writes it.
    pub(crate) fn restore_unsaved(&mut self, state: BTreeMap<String, String>) {
        self.state = state;
    }

    /// A context without persistence (command line, unit tests).
    pub fn offline(resources: Resources) -> Self {
        SignContext::new(resources, BTreeMap::new(), None)
    }

    /// The issuer's Secrets, ConfigMaps and service-account tokens.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// A state value from an earlier call for this request.
    pub fn state(&self, key: &str) -> Option<&str> {
        self.state.get(key).map(String::as_str)
    }

    /// Sets a state value (keys: lower-case letters, digits and `-`; values are not secret:
    /// they are stored in plain annotations).
    pub fn set_state(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.state.insert(key.into(), value.into());
    }

    /// Removes a state value.
    pub fn remove_state(&mut self, key: &str) {
        self.state.remove(key);
    }

    /// The whole state map.
    pub fn state_map(&self) -> &BTreeMap<String, String> {
        &self.state
    }

    /// Saves the state now if it changed since it was last saved.
    pub async fn save_state(&mut self) -> Result<(), SignError> {
        if self.state == self.saved {
            return Ok(());
        }
        if let Some(store) = &self.store {
            store.save(&self.state).await?;
        }
        self.saved = self.state.clone();
        Ok(())
    }
}
