//! Authenticated request state in the controllers (issue 11, "trusted state"): the state map a
//! pass hands to `sign` is the one whose MAC ([`crate::state_auth`]) verifies with the
//! controller's key; anything else — state annotations a requester wrote or edited, a MAC made
//! with another key, state copied from another request — is treated as absent, and a Warning
//! event on the request says so, naming the keys (adapter state is not secret) but never the
//! values. `AnnotationState` (in `state`) writes the MAC next to every state it saves.

use std::collections::BTreeMap;

use crate::controllers::decision::{EventOut, event};
use crate::controllers::view::RequestView;
use crate::state_auth::{StateKey, StateOwner, Verified, mac_annotation};

/// The identity the MAC of `view`'s state is bound to.
pub(crate) fn owner(view: &RequestView) -> StateOwner<'_> {
    StateOwner {
        kind: view.kind_name(),
        namespace: view.namespace.as_deref().unwrap_or(""),
        name: &view.name,
        uid: &view.uid,
    }
}

/// The state to hand to `sign`: the request's state annotations if their MAC verifies, else none
/// (with the Warning event to publish).
pub(crate) fn verified_state(
    key: &StateKey,
    view: &RequestView,
    group: &str,
) -> (BTreeMap<String, String>, Option<EventOut>) {
    let on_object = view.state(group);
    let keys: Vec<String> = on_object.keys().cloned().collect();
    let mac = view.annotations.get(&mac_annotation(group)).map(String::as_str);
    match key.verify(&owner(view), on_object, mac) {
        Verified::Absent => (BTreeMap::new(), None),
        Verified::Valid(state) => (state, None),
        Verified::Rejected(why) => {
            let note = format!(
                "Ignored the request's state annotations ({}): {why}; the issuer starts from no state. State is written only by the controller.",
                if keys.is_empty() { "none, only a MAC".to_owned() } else { keys.join(", ") }
            );
            tracing::warn!(keys = ?keys, why, "request state not authenticated; ignoring it");
            (BTreeMap::new(), event(true, "StateRejected", "Sign", &note))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::request::fixtures;

    #[test]
    fn only_state_signed_with_the_controllers_key_reaches_sign() {
        let (key, _) = StateKey::generate();
        let group = "demo.certbridge.io";
        let mut view = fixtures::status_view(crate::request::RequestKind::CertificateRequest);
        view.uid = "u-1".into();
        let genuine = BTreeMap::from([("approval-id".to_owned(), "41".to_owned())]);
        let mac = key.sign(&owner(&view), &genuine);
        view.annotations.insert(format!("state.{group}/approval-id"), "41".into());
        view.annotations.insert(mac_annotation(group), mac.clone());
        assert_eq!(verified_state(&key, &view, group), (genuine, None));

        // The requester edits the approval id, keeping the MAC.
        view.annotations.insert(format!("state.{group}/approval-id"), "42".into());
        let (state, ev) = verified_state(&key, &view, group);
        assert!(state.is_empty());
        let ev = ev.expect("a warning event");
        assert!(ev.warning && ev.reason == "StateRejected");
        assert!(ev.note.contains("approval-id") && !ev.note.contains("42"), "names keys, never values: {}", ev.note);

        // A MAC made with another key.
        let (other, _) = StateKey::generate();
        let forged = BTreeMap::from([("approval-id".to_owned(), "42".to_owned())]);
        view.annotations.insert(mac_annotation(group), other.sign(&owner(&view), &forged));
        assert!(verified_state(&key, &view, group).0.is_empty());

        // No state at all: nothing to say.
        let fresh = fixtures::status_view(crate::request::RequestKind::CertificateRequest);
        assert_eq!(verified_state(&key, &fresh, group), (BTreeMap::new(), None));
    }
}
