//! Field ownership (`metadata.managedFields`): field sets, their `FieldsV1` encoding, and
//! ownership tracking for non-apply writes (create/update/patch).
//!
//! A field set is a set of paths. Path elements follow structured-merge-diff: `f:` fields,
//! `k:` list-map items (by key), `v:` set items, `i:` atomic-list indices. A path that is in
//! the set and also has children in the set is written with the `.` marker, like the
//! apiserver does for list-map items.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::schema::{ListType, child, items, list_map_key, list_type, map_is_atomic};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PathElement {
    Field(String),
    /// Canonical JSON of the key object of a list-map item.
    Key(String),
    /// Canonical JSON of a set item.
    Value(String),
    Index(u64),
}

pub(crate) type FieldPath = Vec<PathElement>;
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// Metadata fields the server owns; they never appear in field sets.
const SYSTEM_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// List/map semantics of `metadata`, shared by every resource.
pub(crate) fn metadata_schema() -> &'static Value {
    static S: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        json!({
            "type": "object",
            "properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "ownerReferences": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["uid"],
                    "items": {"type": "object"}
                }
            }
        })
    })
}

/// The schema node for a top-level field of an object.
pub(crate) fn root_child<'a>(root: Option<&'a Value>, field: &str) -> Option<&'a Value> {
    if field == "metadata" { Some(metadata_schema()) } else { child(root, field) }
}

/// Serialises a JSON value canonically (serde_json maps are sorted, so `to_string` is stable).
fn canon(v: &Value) -> String {
    v.to_string()
}

/// The set of fields present in `obj` (excluding identity and server-owned metadata).
pub(crate) fn field_set(obj: &Value, root: Option<&Value>) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(o) = obj.as_object() else { return out };
    for (k, v) in o {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                if let Some(m) = v.as_object() {
                    for (mk, mv) in m {
                        if SYSTEM_META.contains(&mk.as_str()) {
                            continue;
                        }
                        let path = vec![PathElement::Field("metadata".into()), PathElement::Field(mk.clone())];
                        walk(mv, child(Some(metadata_schema()), mk), path, &mut out);
                    }
                }
            }
            _ => walk(v, child(root, k), vec![PathElement::Field(k.clone())], &mut out),
        }
    }
    out
}

fn walk(v: &Value, node: Option<&Value>, path: FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !map_is_atomic(node) && !m.is_empty() => {
            for (k, cv) in m {
                let mut p = path.clone();
                p.push(PathElement::Field(k.clone()));
                walk(cv, child(node, k), p, out);
            }
        }
        Value::Array(a) if !a.is_empty() => match list_type(node) {
            ListType::Map(keys) if !keys.is_empty() => {
                let it = items(node);
                for item in a {
                    let mut p = path.clone();
                    p.push(PathElement::Key(canon(&list_map_key(item, &keys))));
                    out.insert(p.clone());
                    if let Some(im) = item.as_object() {
                        for (k, cv) in im {
                            let mut cp = p.clone();
                            cp.push(PathElement::Field(k.clone()));
                            walk(cv, child(it, k), cp, out);
                        }
                    }
                }
            }
            ListType::Set => {
                for item in a {
                    let mut p = path.clone();
                    p.push(PathElement::Value(canon(item)));
                    out.insert(p);
                }
            }
            _ => {
                out.insert(path);
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

fn key_matches(item: &Value, key: &str) -> bool {
    let Ok(Value::Object(k)) = serde_json::from_str::<Value>(key) else { return false };
    k.iter().all(|(kk, kv)| item.get(kk) == Some(kv))
}

/// The value at `path`, if present.
pub(crate) fn value_at<'a>(obj: &'a Value, path: &[PathElement]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        cur = match el {
            PathElement::Field(f) => cur.get(f)?,
            PathElement::Key(k) => cur.as_array()?.iter().find(|i| key_matches(i, k))?,
            PathElement::Value(v) => {
                let want: Value = serde_json::from_str(v).ok()?;
                cur.as_array()?.iter().find(|i| **i == want)?
            }
            PathElement::Index(i) => cur.as_array()?.get(*i as usize)?,
        };
    }
    Some(cur)
}

fn value_at_mut<'a>(obj: &'a mut Value, path: &[PathElement]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for el in path {
        cur = match el {
            PathElement::Field(f) => cur.get_mut(f)?,
            PathElement::Key(k) => cur.as_array_mut()?.iter_mut().find(|i| key_matches(i, k))?,
            PathElement::Value(v) => {
                let want: Value = serde_json::from_str(v).ok()?;
                cur.as_array_mut()?.iter_mut().find(|i| **i == want)?
            }
            PathElement::Index(i) => cur.as_array_mut()?.get_mut(*i as usize)?,
        };
    }
    Some(cur)
}

/// Removes the field or list item at `path` (no-op when absent).
pub(crate) fn remove_at(obj: &mut Value, path: &[PathElement]) {
    let Some((last, parent)) = path.split_last() else { return };
    let Some(p) = value_at_mut(obj, parent) else { return };
    match last {
        PathElement::Field(f) => {
            if let Some(m) = p.as_object_mut() {
                m.remove(f);
            }
        }
        PathElement::Key(k) => {
            if let Some(a) = p.as_array_mut() {
                a.retain(|i| !key_matches(i, k));
            }
        }
        PathElement::Value(v) => {
            if let (Some(a), Ok(want)) = (p.as_array_mut(), serde_json::from_str::<Value>(v)) {
                a.retain(|i| *i != want);
            }
        }
        PathElement::Index(i) => {
            if let Some(a) = p.as_array_mut()
                && (*i as usize) < a.len()
            {
                a.remove(*i as usize);
            }
        }
    }
}

/// Human form used in conflict messages: `.status.conditions[type="Ready"].status`.
pub(crate) fn display_path(path: &[PathElement]) -> String {
    let mut s = String::new();
    for el in path {
        match el {
            PathElement::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            PathElement::Key(k) => {
                let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                    .map(|m| m.iter().map(|(kk, kv)| format!("{kk}={kv}")).collect())
                    .unwrap_or_default();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            PathElement::Value(v) => s.push_str(&format!("[={v}]")),
            PathElement::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn encode_el(el: &PathElement) -> String {
    match el {
        PathElement::Field(f) => format!("f:{f}"),
        PathElement::Key(k) => format!("k:{k}"),
        PathElement::Value(v) => format!("v:{v}"),
        PathElement::Index(i) => format!("i:{i}"),
    }
}

fn decode_el(s: &str) -> Option<PathElement> {
    let (p, rest) = s.split_at_checked(2)?;
    Some(match p {
        "f:" => PathElement::Field(rest.to_string()),
        "k:" => PathElement::Key(canon(&serde_json::from_str::<Value>(rest).ok()?)),
        "v:" => PathElement::Value(canon(&serde_json::from_str::<Value>(rest).ok()?)),
        "i:" => PathElement::Index(rest.parse().ok()?),
        _ => return None,
    })
}

/// `FieldsV1` JSON for a set.
pub(crate) fn encode_fields(set: &FieldSet) -> Value {
    let mut root = Value::Object(Map::new());
    for p in set {
        let mut cur = &mut root;
        for el in p {
            cur = cur
                .as_object_mut()
                .expect("nodes are objects")
                .entry(encode_el(el))
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    for p in set {
        let mut cur = &mut root;
        for el in p {
            cur = cur.get_mut(encode_el(el)).expect("inserted above");
        }
        if let Some(m) = cur.as_object_mut()
            && !m.is_empty()
        {
            m.insert(".".into(), json!({}));
        }
    }
    root
}

/// Parses `FieldsV1` JSON back into a set (unknown element prefixes are skipped).
pub(crate) fn decode_fields(v: &Value) -> FieldSet {
    fn rec(v: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        for (k, c) in m {
            if k == "." {
                out.insert(prefix.clone());
                continue;
            }
            let Some(el) = decode_el(k) else { continue };
            prefix.push(el);
            if c.as_object().is_some_and(Map::is_empty) {
                out.insert(prefix.clone());
            } else {
                rec(c, prefix, out);
            }
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub manager: String,
    /// "Apply" or "Update".
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub set: FieldSet,
}

impl Entry {
    pub fn same_slot(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": encode_fields(&self.set),
        });
        if !self.subresource.is_empty() {
            v["subresource"] = json!(self.subresource);
        }
        v
    }
}

pub(crate) fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(a) = obj.pointer("/metadata/managedFields").and_then(Value::as_array) else { return vec![] };
    a.iter()
        .map(|e| Entry {
            manager: e.get("manager").and_then(Value::as_str).unwrap_or_default().into(),
            operation: e.get("operation").and_then(Value::as_str).unwrap_or("Update").into(),
            api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or_default().into(),
            time: e.get("time").and_then(Value::as_str).unwrap_or_default().into(),
            subresource: e.get("subresource").and_then(Value::as_str).unwrap_or_default().into(),
            set: e.get("fieldsV1").map(decode_fields).unwrap_or_default(),
        })
        .collect()
}

pub(crate) fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let m = crate::objects::meta_mut(obj);
    if entries.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), Value::Array(entries.iter().map(Entry::to_json).collect()));
    }
}

/// True for paths naming a list item rather than a leaf value.
pub(crate) fn is_item(path: &[PathElement]) -> bool {
    matches!(path.last(), Some(PathElement::Key(_) | PathElement::Value(_)))
}

/// Ownership after a non-apply write: the writer takes every field it added or changed,
/// removed fields disappear from every manager.
pub(crate) fn track_update(
    old: Option<&Value>,
    new: &Value,
    mut entries: Vec<Entry>,
    manager: &str,
    subresource: &str,
    api_version: &str,
    root: Option<&Value>,
) -> Vec<Entry> {
    let old_set = old.map(|o| field_set(o, root)).unwrap_or_default();
    let new_set = field_set(new, root);
    let changed: FieldSet =
        new_set
            .iter()
            .filter(|p| {
                if is_item(p) { !old_set.contains(*p) } else { old.and_then(|o| value_at(o, p)) != value_at(new, p) }
            })
            .cloned()
            .collect();
    for e in entries.iter_mut() {
        e.set.retain(|p| new_set.contains(p));
        if !e.same_slot(manager, "Update", subresource) {
            e.set.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| e.same_slot(manager, "Update", subresource)) {
            Some(e) => {
                e.set.extend(changed);
                e.time = crate::objects::now_time();
                e.api_version = api_version.into();
            }
            None => entries.push(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                time: crate::objects::now_time(),
                subresource: subresource.into(),
                set: changed,
            }),
        }
    }
    entries.retain(|e| !e.set.is_empty());
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conditions_schema() -> Value {
        json!({"properties": {"status": {"properties": {"conditions": {
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
            "items": {"type": "object"}}}}}})
    }

    #[test]
    fn fields_v1_round_trips_with_item_markers() {
        let schema = conditions_schema();
        let obj = json!({"metadata": {"name": "x", "labels": {"a": "b"}, "finalizers": ["f"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let set = field_set(&obj, Some(&schema));
        let enc = encode_fields(&set);
        assert_eq!(
            enc,
            json!({"f:metadata": {"f:labels": {"f:a": {}}, "f:finalizers": {"v:\"f\"": {}}},
                "f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
        );
        assert_eq!(decode_fields(&enc), set);
    }

    #[test]
    fn update_moves_ownership_of_changed_fields() {
        let old = json!({"data": {"a": "1", "b": "2"}});
        let first = track_update(None, &old, vec![], "alice", "", "v1", None);
        let new = json!({"data": {"a": "1", "b": "3"}});
        let entries = track_update(Some(&old), &new, first, "bob", "", "v1", None);
        let owner = |p: &str| {
            entries
                .iter()
                .filter(|e| e.set.contains(&vec![PathElement::Field("data".into()), PathElement::Field(p.into())]))
                .map(|e| e.manager.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(owner("a"), ["alice"]);
        assert_eq!(owner("b"), ["bob"]);
    }

    #[test]
    fn remove_at_addresses_list_map_items() {
        let mut obj = json!({"c": [{"type": "A"}, {"type": "B"}]});
        remove_at(&mut obj, &[PathElement::Field("c".into()), PathElement::Key("{\"type\":\"A\"}".into())]);
        assert_eq!(obj, json!({"c": [{"type": "B"}]}));
    }
}
