//! Per-request state that survives controller restarts: the [`StateStore`] the controllers hand to
//! [`SignContext`](crate::SignContext). The map lives in annotations `state.<group>/<key>` on the
//! request object itself, written with a JSON merge patch on the main endpoint (annotations are
//! metadata, not status), so it is deleted with the request and never shared between requests.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::context::StateStore;
use crate::controllers::state_cache::SavedStates;
use crate::controllers::view::{RequestView, state_prefix};
use crate::error::SignError;
use crate::state_auth::{StateKey, mac_annotation};

/// Saves a request's state map into its annotations.
pub(crate) struct AnnotationState<K> {
    api: Api<K>,
    name: String,
    prefix: String,
    field_manager: String,
    /// Keys present on the object, so removed keys are deleted (set to null in the patch).
    written: Mutex<Vec<String>>,
    /// The request's identity the MAC is bound to: (kind, namespace, name, uid).
    owner: (&'static str, String, String, String),
    mac_annotation: String,
    key: Arc<StateKey>,
    saved: Arc<SavedStates>,
}

impl<K> AnnotationState<K> {
    /// A store for request `view` served by `api`, with the adapter's `group`: every save is
    /// signed with `key` and recorded in `saved`. The state keys on the object now (verified or
    /// not) are deleted by a save that leaves them out.
    pub(crate) fn new(
        api: Api<K>,
        view: &RequestView,
        group: &str,
        field_manager: &str,
        key: Arc<StateKey>,
        saved: Arc<SavedStates>,
    ) -> Self {
        AnnotationState {
            api,
            name: view.name.clone(),
            prefix: state_prefix(group),
            field_manager: field_manager.to_owned(),
            written: Mutex::new(view.state(group).keys().cloned().collect()),
            owner: (view.kind_name(), view.namespace.clone().unwrap_or_default(), view.name.clone(), view.uid.clone()),
            mac_annotation: mac_annotation(group),
            key,
            saved,
        }
    }

    /// The MAC of `state` for this request (`None`: no state, the MAC annotation is removed).
    fn mac(&self, state: &BTreeMap<String, String>) -> Option<String> {
        let (kind, namespace, name, uid) = &self.owner;
        let owner = crate::state_auth::StateOwner { kind, namespace, name, uid };
        (!state.is_empty()).then(|| self.key.sign(&owner, state))
    }
}

/// The merge patch that turns the object's state annotations into `state`.
pub(crate) fn state_patch(prefix: &str, previous: &[String], state: &BTreeMap<String, String>) -> Value {
    let mut annotations = Map::new();
    for key in previous {
        if !state.contains_key(key) {
            annotations.insert(format!("{prefix}{key}"), Value::Null);
        }
    }
    for (k, v) in state {
        annotations.insert(format!("{prefix}{k}"), Value::String(v.clone()));
    }
    json!({ "metadata": { "annotations": annotations } })
}

#[async_trait]
impl<K> StateStore for AnnotationState<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    async fn save(&self, state: &BTreeMap<String, String>) -> Result<(), SignError> {
        for key in state.keys() {
            if key.is_empty() || key.len() > 63 || !key.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(SignError::permanent(format!(
                    "the signer used the state key {key:?}: keys must be 1-63 letters, digits, '-', '_' or '.'"
                )));
            }
        }
        let previous = self.written.lock().map(|w| w.clone()).unwrap_or_default();
        let mut patch = state_patch(&self.prefix, &previous, state);
        patch["metadata"]["annotations"][&self.mac_annotation] = self.mac(state).map_or(Value::Null, Value::String);
        let params = PatchParams { field_manager: Some(self.field_manager.clone()), ..Default::default() };
        let saved = match self.api.patch(&self.name, &params, &Patch::Merge(&patch)).await {
            Ok(saved) => saved,
            Err(e) => {
                // Kept in memory for the next pass (state_cache): a CA's request ID must not be
                // lost because the API server was away when it arrived.
                self.saved.record_unsaved(&self.owner.3, state);
                return Err(SignError::transient(format!("cannot save the request state on {}: {e}", self.name)));
            }
        };
        self.saved.record(&self.owner.3, saved.meta().resource_version.clone(), state);
        if let Ok(mut w) = self.written.lock() {
            *w = state.keys().cloned().collect();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_keys_are_nulled_and_new_ones_written() {
        let state = BTreeMap::from([("order-id".to_owned(), "42".to_owned())]);
        let patch = state_patch("state.demo.certbridge.io/", &["token".to_owned(), "order-id".to_owned()], &state);
        assert_eq!(
            patch,
            json!({"metadata": {"annotations": {
                "state.demo.certbridge.io/order-id": "42",
                "state.demo.certbridge.io/token": null,
            }}})
        );
    }
}
