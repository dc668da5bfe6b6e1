//! Structural OpenAPI v3 schemas: pruning, defaulting, validation, and the list/map
//! semantics (`x-kubernetes-list-type`, `x-kubernetes-map-type`) that server-side apply
//! and strategic merge need.
//!
//! The order follows the apiserver: drop non-nullable nulls and unknown fields, apply
//! `default:`s, then validate. Error texts mirror kube-openapi's so tests written against
//! this server read the same as against a cluster.

use serde_json::{Map, Value};

use crate::error::{FieldError, FieldErrorKind};

/// How a list merges (`x-kubernetes-list-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// The schema for field `name` of an object node.
pub(crate) fn child<'a>(node: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    let node = node?;
    if let Some(p) = node.get("properties").and_then(|p| p.get(name)) {
        return Some(p);
    }
    node.get("additionalProperties").filter(|a| a.is_object())
}

/// The item schema of an array node.
pub(crate) fn items(node: Option<&Value>) -> Option<&Value> {
    node?.get("items").filter(|i| i.is_object())
}

pub(crate) fn list_type(node: Option<&Value>) -> ListType {
    let Some(node) = node else { return ListType::Atomic };
    match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => {
            let keys = node
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|k| k.as_str().map(String::from)).collect())
                .unwrap_or_default();
            ListType::Map(keys)
        }
        _ => ListType::Atomic,
    }
}

/// Whether an object node is replaced as a whole (`x-kubernetes-map-type: atomic`).
pub(crate) fn map_is_atomic(node: Option<&Value>) -> bool {
    node.and_then(|n| n.get("x-kubernetes-map-type")).and_then(Value::as_str) == Some("atomic")
}

fn preserves_unknown(node: &Value) -> bool {
    node.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
}

fn nullable(node: &Value) -> bool {
    node.get("nullable").and_then(Value::as_bool) == Some(true)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_string() } else { format!("{path}.{field}") }
}

/// ObjectMeta fields a typed decoder keeps; anything else in `metadata` is dropped.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Prunes, defaults and validates a whole custom object against its version's
/// `openAPIV3Schema`. Returns the dotted paths of pruned unknown fields (for
/// `fieldValidation=Strict|Warn`) and the validation errors.
pub(crate) fn process_object(root: &Value, obj: &mut Value) -> (Vec<String>, Vec<FieldError>) {
    let mut pruned = Vec::new();
    let mut errs = Vec::new();
    let Some(o) = obj.as_object_mut() else {
        errs.push(FieldError::invalid("", Value::Null, "must be an object"));
        return (pruned, errs);
    };
    if let Some(Value::Object(m)) = o.get_mut("metadata") {
        m.retain(|k, _| {
            let keep = OBJECT_META_FIELDS.contains(&k.as_str());
            if !keep {
                pruned.push(format!("metadata.{k}"));
            }
            keep
        });
    }
    let keys: Vec<String> = o.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match child(Some(root), &k) {
            Some(s) => {
                if o.get(&k).is_some_and(Value::is_null) && !nullable(s) {
                    o.remove(&k);
                    continue;
                }
                if let Some(v) = o.get_mut(&k) {
                    prune(s, v, &k, &mut pruned);
                }
            }
            None if preserves_unknown(root) => {}
            None => {
                o.remove(&k);
                pruned.push(k);
            }
        }
    }
    apply_defaults_root(root, o);
    for (k, v) in o.iter() {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(s) = child(Some(root), k) {
            validate(s, v, k, &mut errs);
        }
    }
    if let Some(req) = root.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !matches!(r, "apiVersion" | "kind" | "metadata") && !o.contains_key(r) {
                errs.push(FieldError::required(r, ""));
            }
        }
    }
    (pruned, errs)
}

fn apply_defaults_root(root: &Value, o: &mut Map<String, Value>) {
    if let Some(props) = root.get("properties").and_then(Value::as_object) {
        for (k, s) in props {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if !o.contains_key(k)
                && let Some(d) = s.get("default")
            {
                o.insert(k.clone(), d.clone());
            }
            if let Some(v) = o.get_mut(k) {
                apply_defaults(s, v);
            }
        }
    }
}

/// Removes unknown fields (recording their paths) and nulls the schema does not allow.
pub(crate) fn prune(node: &Value, v: &mut Value, path: &str, pruned: &mut Vec<String>) {
    if node.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return;
    }
    match v {
        Value::Object(m) => {
            let props = node.get("properties").and_then(Value::as_object);
            let addl = node.get("additionalProperties");
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let sub = props.and_then(|p| p.get(&k)).or(addl.filter(|a| a.is_object()));
                match sub {
                    Some(s) => {
                        if m.get(&k).is_some_and(Value::is_null) && !nullable(s) {
                            m.remove(&k);
                            continue;
                        }
                        if let Some(cv) = m.get_mut(&k) {
                            prune(s, cv, &join(path, &k), pruned);
                        }
                    }
                    None => {
                        let keep = preserves_unknown(node) || addl.and_then(Value::as_bool) == Some(true);
                        if !keep {
                            m.remove(&k);
                            pruned.push(join(path, &k));
                        }
                    }
                }
            }
        }
        Value::Array(a) => {
            if let Some(it) = items(Some(node)) {
                for (i, x) in a.iter_mut().enumerate() {
                    prune(it, x, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

/// Fills in `default:` values of absent properties, recursively.
pub(crate) fn apply_defaults(node: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = node.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    if !m.contains_key(k)
                        && let Some(d) = s.get("default")
                    {
                        m.insert(k.clone(), d.clone());
                    }
                }
                for (k, cv) in m.iter_mut() {
                    if let Some(s) = props.get(k) {
                        apply_defaults(s, cv);
                    }
                }
            } else if let Some(a) = node.get("additionalProperties").filter(|a| a.is_object()) {
                for cv in m.values_mut() {
                    apply_defaults(a, cv);
                }
            }
        }
        Value::Array(a) => {
            if let Some(it) = items(Some(node)) {
                for x in a.iter_mut() {
                    apply_defaults(it, x);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_err(path: &str, want: &str, v: &Value) -> FieldError {
    let got = type_name(v);
    FieldError {
        field: path.to_string(),
        kind: FieldErrorKind::TypeInvalid(
            Value::String(got.into()),
            format!("{path} in body must be of type {want}: {got:?}"),
        ),
    }
}

/// Validates `v` against `node`, appending errors with apiserver-style field paths.
pub(crate) fn validate(node: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        if !nullable(node) && node.get("type").is_some() {
            errs.push(type_err(path, node["type"].as_str().unwrap_or("object"), v));
        }
        return;
    }
    if node.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            errs.push(type_err(path, "integer or string", v));
        }
        return;
    }
    let ty = node.get("type").and_then(Value::as_str);
    let ok = match ty {
        None => true,
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some(_) => true,
    };
    if !ok {
        errs.push(type_err(path, ty.unwrap_or_default(), v));
        return;
    }
    if let Some(en) = node.get("enum").and_then(Value::as_array)
        && !en.contains(v)
    {
        let allowed = en.iter().map(|e| e.as_str().map(String::from).unwrap_or_else(|| e.to_string())).collect();
        errs.push(FieldError { field: path.into(), kind: FieldErrorKind::NotSupported(v.clone(), allowed) });
        return;
    }
    match v {
        Value::String(s) => validate_string(node, s, v, path, errs),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            let excl_min = node.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
            let excl_max = node.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
            if let Some(min) = node.get("minimum").and_then(Value::as_f64)
                && (x < min || (excl_min && x == min))
            {
                let rel = if excl_min { "greater than" } else { "greater than or equal to" };
                errs.push(FieldError::invalid(
                    path,
                    v.clone(),
                    format!("{path} in body should be {rel} {}", node["minimum"]),
                ));
            }
            if let Some(max) = node.get("maximum").and_then(Value::as_f64)
                && (x > max || (excl_max && x == max))
            {
                let rel = if excl_max { "less than" } else { "less than or equal to" };
                errs.push(FieldError::invalid(
                    path,
                    v.clone(),
                    format!("{path} in body should be {rel} {}", node["maximum"]),
                ));
            }
        }
        Value::Object(m) => {
            if let Some(req) = node.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !m.contains_key(r) {
                        errs.push(FieldError::required(join(path, r), ""));
                    }
                }
            }
            let props = node.get("properties").and_then(Value::as_object);
            let addl = node.get("additionalProperties").filter(|a| a.is_object());
            for (k, cv) in m {
                if let Some(s) = props.and_then(|p| p.get(k)).or(addl) {
                    validate(s, cv, &join(path, k), errs);
                }
            }
        }
        Value::Array(a) => {
            if let Some(max) = node.get("maxItems").and_then(Value::as_u64)
                && a.len() as u64 > max
            {
                errs.push(FieldError { field: path.into(), kind: FieldErrorKind::TooMany(max as usize) });
            }
            if let Some(min) = node.get("minItems").and_then(Value::as_u64)
                && (a.len() as u64) < min
            {
                errs.push(FieldError::invalid(
                    path,
                    v.clone(),
                    format!("{path} in body should have at least {min} items"),
                ));
            }
            if let Some(it) = items(Some(node)) {
                for (i, x) in a.iter().enumerate() {
                    validate(it, x, &format!("{path}[{i}]"), errs);
                }
            }
            match list_type(Some(node)) {
                ListType::Set => {
                    for (i, x) in a.iter().enumerate() {
                        if a[..i].contains(x) {
                            errs.push(FieldError {
                                field: format!("{path}[{i}]"),
                                kind: FieldErrorKind::Duplicate(x.clone()),
                            });
                        }
                    }
                }
                ListType::Map(keys) => {
                    let mut seen: Vec<Value> = Vec::new();
                    for (i, x) in a.iter().enumerate() {
                        let k = list_map_key(x, &keys);
                        if seen.contains(&k) {
                            errs.push(FieldError {
                                field: format!("{path}[{i}]"),
                                kind: FieldErrorKind::Duplicate(k.clone()),
                            });
                        }
                        seen.push(k);
                    }
                }
                ListType::Atomic => {}
            }
        }
        _ => {}
    }
}

fn validate_string(node: &Value, s: &str, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    match node.get("format").and_then(Value::as_str) {
        Some("byte") if crate::objects::unb64(s).is_none() => {
            errs.push(FieldError::invalid(path, v.clone(), format!("{path} in body must be of type byte: {s:?}")));
        }
        Some("date-time") if s.parse::<jiff::Timestamp>().is_err() => {
            errs.push(FieldError::invalid(path, v.clone(), format!("{path} in body must be of type date-time: {s:?}")));
        }
        _ => {}
    }
    if let Some(max) = node.get("maxLength").and_then(Value::as_u64)
        && s.chars().count() as u64 > max
    {
        errs.push(FieldError { field: path.into(), kind: FieldErrorKind::TooLong(max as usize) });
    }
    if let Some(min) = node.get("minLength").and_then(Value::as_u64)
        && (s.chars().count() as u64) < min
    {
        errs.push(FieldError::invalid(path, v.clone(), format!("{path} in body should be at least {min} chars long")));
    }
    if let Some(p) = node.get("pattern").and_then(Value::as_str)
        && let Ok(re) = regex::Regex::new(p)
        && !re.is_match(s)
    {
        errs.push(FieldError::invalid(path, v.clone(), format!("{path} in body should match '{p}'")));
    }
}

/// The key object of a list-map item (`{"type":"Ready"}`), used for identity.
pub(crate) fn list_map_key(item: &Value, keys: &[String]) -> Value {
    let mut m = Map::new();
    for k in keys {
        if let Some(x) = item.get(k) {
            m.insert(k.clone(), x.clone());
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prunes_defaults_and_validates() {
        let root = json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["n"], "properties": {
            "n": {"type": "integer", "minimum": 1},
            "mode": {"type": "string", "default": "fast", "enum": ["fast", "slow"]},
            "blob": {"type": "string", "format": "byte"},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "ios": {"x-kubernetes-int-or-string": true},
            "opt": {"type": "string"}
        }}}});
        let mut obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a", "junk": 1},
            "spec": {"n": 2, "unknown": true, "free": {"anything": [1]}, "ios": "50%", "opt": null}, "extra": 1});
        let (pruned, errs) = process_object(&root, &mut obj);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(pruned, ["metadata.junk", "extra", "spec.unknown"]);
        assert_eq!(obj["spec"], json!({"n": 2, "mode": "fast", "free": {"anything": [1]}, "ios": "50%"}));

        let mut bad = json!({"spec": {"n": 0, "mode": "medium", "blob": "!!", "ios": 1.5}});
        let (_, errs) = process_object(&root, &mut bad);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.blob", "spec.ios", "spec.mode", "spec.n"]);
        let mut missing = json!({"spec": {}});
        let (_, errs) = process_object(&root, &mut missing);
        assert_eq!(errs[0].message(), "spec.n: Required value");
    }
}
