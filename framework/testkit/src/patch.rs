//! PATCH bodies other than server-side apply: RFC 7386 merge patch and RFC 6902 JSON patch
//! (both via the `json-patch` crate) and strategic merge patch for built-in kinds.
//!
//! Strategic merge is hand-written because no Rust crate implements it; it covers the
//! directives kubectl and kube-rs emit (`$patch`, `$deleteFromPrimitiveList/…`,
//! `$setElementOrder/…`, `$retainKeys`) and merges lists by the schema's list-map keys
//! (e.g. `conditions` by `type`) or as sets (`finalizers`).

use serde_json::{Map, Value};

use crate::managed::root_child;
use crate::schema::{ListType, child, items, list_map_key, list_type};

/// The PATCH flavours, chosen by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        Some(match base {
            "application/json-patch+json" => PatchKind::Json,
            "application/merge-patch+json" => PatchKind::Merge,
            "application/strategic-merge-patch+json" => PatchKind::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+json" | "application/apply-patch+cbor" => {
                PatchKind::Apply
            }
            _ => return None,
        })
    }
}

/// Applies an RFC 6902 patch; the error text is the crate's.
pub(crate) fn json_patch(target: &mut Value, body: &[u8]) -> Result<(), String> {
    let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    json_patch::patch(target, &p).map_err(|e| e.to_string())
}

pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Strategic merge patch of a whole object.
pub(crate) fn strategic(target: &mut Value, patch: &Value, root: Option<&Value>) {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (k, pv) in pm {
        if handle_directive(target, k, pv) {
            continue;
        }
        let node = root_child(root, k);
        let t = target.as_object_mut().expect("object ensured above");
        apply_field(t, k, pv, node);
    }
}

/// Handles `$…` keys; returns true when `k` was a directive.
fn handle_directive(target: &mut Value, k: &str, pv: &Value) -> bool {
    if !k.starts_with('$') {
        return false;
    }
    if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/")
        && let (Some(list), Some(del)) = (target.get_mut(field).and_then(Value::as_array_mut), pv.as_array())
    {
        list.retain(|x| !del.contains(x));
    }
    // `$setElementOrder/…`, `$retainKeys` and `$patch` on a map handled by the caller are
    // ordering/cleanup hints; ignoring them keeps content correct.
    true
}

fn apply_field(t: &mut Map<String, Value>, k: &str, pv: &Value, node: Option<&Value>) {
    match pv {
        Value::Null => {
            t.remove(k);
        }
        Value::Object(po) => {
            match po.get("$patch").and_then(Value::as_str) {
                Some("delete") => {
                    t.remove(k);
                    return;
                }
                Some("replace") => {
                    let mut v = pv.clone();
                    if let Some(m) = v.as_object_mut() {
                        m.remove("$patch");
                    }
                    t.insert(k.to_string(), v);
                    return;
                }
                _ => {}
            }
            let cur = t.entry(k.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !cur.is_object() {
                *cur = Value::Object(Map::new());
            }
            for (ck, cv) in po {
                if handle_directive(cur, ck, cv) {
                    continue;
                }
                let m = cur.as_object_mut().expect("object ensured above");
                apply_field(m, ck, cv, child(node, ck));
            }
        }
        Value::Array(pa) => {
            let merged = merge_list(t.get(k), pa, node);
            t.insert(k.to_string(), Value::Array(merged));
        }
        other => {
            t.insert(k.to_string(), other.clone());
        }
    }
}

fn merge_list(cur: Option<&Value>, pa: &[Value], node: Option<&Value>) -> Vec<Value> {
    let cur: Vec<Value> = cur.and_then(Value::as_array).cloned().unwrap_or_default();
    match list_type(node) {
        ListType::Map(keys) if !keys.is_empty() => {
            let mut out = cur;
            for item in pa {
                let key = list_map_key(item, &keys);
                let pos = out.iter().position(|x| list_map_key(x, &keys) == key);
                match item.get("$patch").and_then(Value::as_str) {
                    Some("delete") => {
                        if let Some(i) = pos {
                            out.remove(i);
                        }
                    }
                    Some("replace") => return pa.to_vec(),
                    _ => match pos {
                        Some(i) => {
                            if let (Some(dst), Some(src)) = (out[i].as_object_mut(), item.as_object()) {
                                for (ck, cv) in src {
                                    apply_field(dst, ck, cv, child(items(node), ck));
                                }
                            }
                        }
                        None => out.push(item.clone()),
                    },
                }
            }
            out
        }
        ListType::Set => {
            let mut out = cur;
            for item in pa {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            out
        }
        _ => pa.to_vec(),
    }
}
