//! One Event storage served through two APIs, as kube-apiserver does.
//!
//! Kubernetes keeps a single `events` resource and serves it both as core `v1` Event and as
//! `events.k8s.io/v1` Event, converting field names between the two: an event a controller
//! records through `events.k8s.io/v1` (kube-rs' `Recorder`) is what `kubectl describe` and
//! `kubectl get events --field-selector involvedObject.name=…` read through core `v1`.
//!
//! Here objects are stored in the core form (the storage key of both definitions is core
//! `events`); every read through `events.k8s.io` renames the fields to that API's names, and
//! every write through it renames them back before the object is stored. Field and label
//! selectors are evaluated on the form the request's API serves, so `regarding.name=x` and
//! `involvedObject.name=x` select the same events.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::resources::{Kind, ResKey, ResourceDef};

/// (core `v1` field, `events.k8s.io/v1` field). Every other field (`reason`, `type`, `action`,
/// `related`, `eventTime`, `series`, `reportingInstance`, metadata) has the same name in both.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// Where a resource's objects live: `events.k8s.io` events share core `events`' storage.
pub(crate) fn storage_key(def: &ResourceDef) -> ResKey {
    if def.class == Kind::Event { ResKey { group: String::new(), plural: "events".into() } } else { def.key() }
}

/// A stored object in the form `def`'s API serves it (unchanged for every other resource).
pub(crate) fn served<'a>(def: &ResourceDef, stored: &'a Value) -> Cow<'a, Value> {
    if def.class != Kind::Event {
        return Cow::Borrowed(stored);
    }
    let mut o = stored.clone();
    if let Some(m) = o.as_object_mut() {
        rename(m, |(core, v1)| (core, v1));
    }
    Cow::Owned(o)
}

/// An object written through `def`'s API in the form it is stored in.
pub(crate) fn to_storage(def: &ResourceDef, mut obj: Value) -> Value {
    if def.class == Kind::Event
        && let Some(m) = obj.as_object_mut()
    {
        rename(m, |(core, v1)| (v1, core));
    }
    obj
}

/// Renames each present field; idempotent, so an object already in the target form is unchanged.
fn rename(
    m: &mut Map<String, Value>,
    direction: impl Fn((&'static str, &'static str)) -> (&'static str, &'static str),
) {
    for &pair in RENAMED {
        let (from, to) = direction(pair);
        if let Some(v) = m.remove(from) {
            m.insert(to.into(), v);
        }
    }
}

/// When a core event was last seen: `lastTimestamp`, else its series' or its own `eventTime`
/// (events recorded through events.k8s.io have only the latter two), as kubectl prints it.
pub(crate) fn last_seen(core: &Value) -> &str {
    ["/lastTimestamp", "/series/lastObservedTime", "/eventTime", "/metadata/creationTimestamp"]
        .iter()
        .find_map(|p| core.pointer(p).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .unwrap_or_default()
}

/// The `OBJECT` column of `kubectl get events`: `kind/name` in lower case kind.
pub(crate) fn involved_object(core: &Value) -> Value {
    let kind = core.pointer("/involvedObject/kind").and_then(Value::as_str).unwrap_or_default();
    let name = core.pointer("/involvedObject/name").and_then(Value::as_str).unwrap_or_default();
    Value::String(format!("{}/{name}", kind.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn defs() -> (ResourceDef, ResourceDef) {
        let reg = crate::builtin::registry();
        let core = reg.lookup("", "v1", "events").expect("core events").as_ref().clone();
        let v1 = reg.lookup("events.k8s.io", "v1", "events").expect("events.k8s.io events").as_ref().clone();
        (core, v1)
    }

    #[test]
    fn both_apis_share_the_core_storage() {
        let (core, v1) = defs();
        assert_eq!(storage_key(&v1), storage_key(&core));
        assert_eq!(storage_key(&core), core.key());
    }

    #[test]
    fn fields_are_renamed_both_ways() {
        let (core, v1) = defs();
        let written = json!({
            "metadata": {"name": "e", "namespace": "ns"},
            "regarding": {"kind": "CertificateRequest", "name": "cr", "namespace": "ns", "uid": "u1"},
            "note": "Certificate issued", "reason": "Issued", "type": "Normal", "action": "Sign",
            "reportingController": "certbridge", "reportingInstance": "pod-a",
            "eventTime": "2026-12-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-12-01T00:01:00.000000Z"},
            "deprecatedSource": {"component": "certbridge"}, "deprecatedCount": 3,
            "deprecatedFirstTimestamp": "2026-12-01T00:00:00Z", "deprecatedLastTimestamp": "2026-12-01T00:01:00Z"
        });
        let stored = to_storage(&v1, written.clone());
        assert_eq!(stored["involvedObject"]["name"], "cr");
        assert_eq!(stored["message"], "Certificate issued");
        assert_eq!(stored["reportingComponent"], "certbridge");
        assert_eq!(stored["source"]["component"], "certbridge");
        assert_eq!(stored["count"], 3);
        assert_eq!(stored["firstTimestamp"], "2026-12-01T00:00:00Z");
        assert_eq!(stored["lastTimestamp"], "2026-12-01T00:01:00Z");
        assert_eq!(stored["series"]["count"], 2);
        assert_eq!(stored["reportingInstance"], "pod-a");
        for gone in ["regarding", "note", "reportingController", "deprecatedSource", "deprecatedCount"] {
            assert!(stored.get(gone).is_none(), "{gone} left in storage");
        }
        // Through core v1 the stored form is served as is; through events.k8s.io it round-trips.
        assert_eq!(served(&core, &stored).as_ref(), &stored);
        assert_eq!(served(&v1, &stored).into_owned(), written);
        // Serving an already served object changes nothing (writes reply with what they stored).
        assert_eq!(served(&v1, &written).into_owned(), written);
    }

    #[test]
    fn other_resources_are_untouched() {
        let reg = crate::builtin::registry();
        let cm = reg.lookup("", "v1", "configmaps").unwrap();
        let o = json!({"message": "x", "note": "y"});
        assert_eq!(to_storage(&cm, o.clone()), o);
        assert!(matches!(served(&cm, &o), Cow::Borrowed(_)));
    }
}
