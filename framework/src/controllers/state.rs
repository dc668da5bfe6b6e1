//! Per-request state that survives controller restarts: the [`StateStore`] the controllers hand to
//! [`SignContext`](crate::SignContext). The map lives in annotations `state.<group>/<key>` on the
//! request object itself, written with a JSON merge patch on the main endpoint (annotations are
//! metadata, not status), so it is deleted with the request and never shared between requests.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Mutex;

use async_trait::async_trait;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::context::StateStore;
use crate::controllers::view::state_prefix;
use crate::error::SignError;

/// Saves a request's state map into its annotations.
pub(crate) struct AnnotationState<K> {
    api: Api<K>,
    name: String,
    prefix: String,
    field_manager: String,
    /// Keys present on the object, so removed keys are deleted (set to null in the patch).
    written: Mutex<Vec<String>>,
}

impl<K> AnnotationState<K> {
    /// A store for object `name` served by `api`, with the adapter's `group`, starting from the
    /// state map currently on the object.
    pub(crate) fn new(
        api: Api<K>,
        name: &str,
        group: &str,
        field_manager: &str,
        current: &BTreeMap<String, String>,
    ) -> Self {
        AnnotationState {
            api,
            name: name.to_owned(),
            prefix: state_prefix(group),
            field_manager: field_manager.to_owned(),
            written: Mutex::new(current.keys().cloned().collect()),
        }
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
        let patch = state_patch(&self.prefix, &previous, state);
        let params = PatchParams { field_manager: Some(self.field_manager.clone()), ..Default::default() };
        self.api
            .patch(&self.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| SignError::transient(format!("cannot save the request state on {}: {e}", self.name)))?;
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
