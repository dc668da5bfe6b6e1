//! `meta.k8s.io/v1 Table` responses for `kubectl get` (CRD printer columns included), and
//! the small JSONPath subset printer columns use (`.a.b`, `[n]`, `[*]`,
//! `[?(@.k == "v")]`) — hand-written because it is ~50 lines and no crate matches
//! Kubernetes' JSONPath dialect.

use serde_json::{Value, json};

use crate::resources::{Kind, PrinterColumn, ResourceDef};

/// Evaluates a printer-column JSONPath; returns every match.
pub(crate) fn jsonpath<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut cur = vec![obj];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}').trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let field = &r[..end];
            cur = cur.into_iter().filter_map(|v| v.get(field)).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = find_close(r) else { return vec![] };
            let inner = r[..end].trim();
            rest = &r[end + 1..];
            let arrays = cur.into_iter().filter_map(Value::as_array);
            if inner == "*" {
                cur = arrays.flatten().collect();
            } else if let Some(f) = inner.strip_prefix("?(").and_then(|x| x.strip_suffix(')')) {
                let (lhs, rhs) = match f.split_once("==") {
                    Some(x) => x,
                    None => return vec![],
                };
                let field = lhs.trim().trim_start_matches('@').trim_start_matches('.');
                let want = rhs.trim().trim_matches('"').trim_matches('\'');
                cur = arrays
                    .flatten()
                    .filter(|item| match crate::objects::dotted(item, field) {
                        Some(Value::String(s)) => s == want,
                        Some(v) => *v == want.parse::<Value>().unwrap_or(Value::Null),
                        None => false,
                    })
                    .collect();
            } else if let Ok(i) = inner.parse::<usize>() {
                cur = arrays.filter_map(|a| a.get(i)).collect();
            } else {
                return vec![];
            }
        } else {
            return vec![];
        }
    }
    cur
}

fn find_close(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    None
}

/// Go's `duration.HumanDuration`, as used for the AGE column.
pub(crate) fn human_age(ts: &str) -> String {
    let Ok(t) = ts.parse::<jiff::Timestamp>() else { return "<unknown>".into() };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        let s = secs % 60;
        if s == 0 { format!("{m}m") } else { format!("{m}m{s}s") }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        let mm = m % 60;
        if mm == 0 { format!("{h}h") } else { format!("{h}h{mm}m") }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        let hh = h % 24;
        if hh == 0 { format!("{d}d") } else { format!("{d}d{hh}h") }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn col(name: &str, ty: &str, desc: &str, priority: i64) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: ty.into(),
        format: String::new(),
        description: desc.into(),
        priority,
        json_path: String::new(),
    }
}

/// A built-in column and how to compute its cell.
type Column = (PrinterColumn, fn(&Value) -> Value);

fn builtin_columns(def: &ResourceDef) -> Vec<Column> {
    fn age(o: &Value) -> Value {
        json!(human_age(o.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or_default()))
    }
    let mut cols: Vec<Column> = Vec::new();
    match def.class {
        Kind::Secret => {
            cols.push((col("Type", "string", "", 0), |o| o["type"].clone()));
            cols.push((col("Data", "string", "", 0), |o| json!(o["data"].as_object().map(|m| m.len()).unwrap_or(0))));
        }
        Kind::ConfigMap => {
            cols.push((col("Data", "string", "", 0), |o| {
                json!(
                    o["data"].as_object().map(|m| m.len()).unwrap_or(0)
                        + o["binaryData"].as_object().map(|m| m.len()).unwrap_or(0)
                )
            }));
        }
        Kind::Namespace => {
            cols.push((col("Status", "string", "", 0), |o| o.pointer("/status/phase").cloned().unwrap_or(json!(""))))
        }
        Kind::CoreEvent => {
            cols.push((col("Last Seen", "string", "", 0), |o| json!(human_age(crate::events::last_seen(o)))));
            cols.push((col("Type", "string", "", 0), |o| o["type"].clone()));
            cols.push((col("Reason", "string", "", 0), |o| o["reason"].clone()));
            cols.push((col("Object", "string", "", 0), crate::events::involved_object));
            cols.push((col("Message", "string", "", 0), |o| o["message"].clone()));
        }
        Kind::Lease => cols.push((col("Holder", "string", "", 0), |o| {
            o.pointer("/spec/holderIdentity").cloned().unwrap_or(json!(""))
        })),
        _ => {}
    }
    cols.push((
        col(
            "Age",
            "string",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
            0,
        ),
        age,
    ));
    if def.class == Kind::Csr {
        cols.push((col("SignerName", "string", "", 0), |o| {
            o.pointer("/spec/signerName").cloned().unwrap_or(json!(""))
        }));
        cols.push((col("Requestor", "string", "", 0), |o| o.pointer("/spec/username").cloned().unwrap_or(json!(""))));
        cols.push((col("RequestedDuration", "string", "", 0), |o| {
            o.pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map(|s| json!(format!("{}m", s / 60)))
                .unwrap_or(json!("<none>"))
        }));
        cols.push((col("Condition", "string", "", 0), csr_condition));
    }
    cols
}

fn csr_condition(o: &Value) -> Value {
    let mut parts: Vec<String> = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|c| c["type"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    if parts.is_empty() {
        parts.push("Pending".into());
    }
    if o.pointer("/status/certificate").is_some_and(|c| !c.is_null()) {
        parts.push("Issued".into());
    }
    json!(parts.join(","))
}

fn partial_meta(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
}

/// Renders objects as a Table; `rv` is the list resourceVersion.
pub(crate) fn table(def: &ResourceDef, version: &str, objs: &[Value], rv: &str, include_object: Option<&str>) -> Value {
    let name_col = json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0});
    let mut defs = vec![name_col];
    let custom = def.info(version).columns;
    let builtin = if def.is_custom() { vec![] } else { builtin_columns(def) };
    for c in custom.iter().chain(builtin.iter().map(|(c, _)| c)) {
        defs.push(json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}));
    }
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut cells = vec![json!(crate::objects::name(o).unwrap_or_default())];
            for c in &custom {
                let vals = jsonpath(o, &c.json_path);
                let cell = if vals.is_empty() {
                    Value::Null
                } else if c.type_ == "date" {
                    json!(human_age(vals[0].as_str().unwrap_or_default()))
                } else if vals.len() == 1 {
                    vals[0].clone()
                } else {
                    json!(
                        vals.iter()
                            .map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                };
                cells.push(cell);
            }
            for (_, f) in &builtin {
                cells.push(f(o));
            }
            let object = match include_object {
                Some("None") => Value::Null,
                Some("Object") => o.clone(),
                _ => partial_meta(o),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_filters_conditions() {
        let o = json!({"status": {"conditions": [{"type": "Approved", "status": "True"}, {"type": "Ready", "status": "False"}]}, "spec": {"a": [1, 2]}});
        assert_eq!(jsonpath(&o, ".status.conditions[?(@.type == \"Ready\")].status"), [&json!("False")]);
        assert_eq!(jsonpath(&o, ".status.conditions[?(@.type==\"Approved\")].status"), [&json!("True")]);
        assert_eq!(jsonpath(&o, ".spec.a[1]"), [&json!(2)]);
        assert_eq!(jsonpath(&o, ".spec.a[*]").len(), 2);
        assert!(jsonpath(&o, ".missing.x").is_empty());
    }
}
