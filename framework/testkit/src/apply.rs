//! Server-side apply (`application/apply-patch+yaml`).
//!
//! A simplified structured-merge-diff: the applied configuration's field set becomes the
//! manager's `Apply` entry; changing a field another manager owns is a conflict unless
//! forced; fields the manager applied before but now omits are removed unless someone
//! else still owns them; list-map items merge by key so e.g. a controller applying the
//! `Ready` condition leaves another manager's `Approved` condition alone.

use serde_json::Value;

use crate::managed::{Entry, FieldPath, FieldSet, display_path, field_set, is_item, remove_at, root_child, value_at};
use crate::schema::{ListType, child, items, list_map_key, list_type, map_is_atomic};

/// One field another manager owns that the apply would change.
#[derive(Debug, Clone)]
pub(crate) struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: FieldPath,
}

/// The 409 message, in the apiserver's words.
pub(crate) fn conflict_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    if n == 1 {
        let c = &conflicts[0];
        return format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager,
            c.api_version,
            display_path(&c.path)
        );
    }
    let mut by_mgr: Vec<(String, String, Vec<String>)> = Vec::new();
    for c in conflicts {
        match by_mgr.iter_mut().find(|(m, v, _)| *m == c.manager && *v == c.api_version) {
            Some((_, _, ps)) => ps.push(display_path(&c.path)),
            None => by_mgr.push((c.manager.clone(), c.api_version.clone(), vec![display_path(&c.path)])),
        }
    }
    let mut s = format!("Apply failed with {n} conflicts: ");
    let parts: Vec<String> = by_mgr
        .iter()
        .map(|(m, v, ps)| {
            let lines: Vec<String> = ps.iter().map(|p| format!("- {p}")).collect();
            format!("conflicts with \"{m}\" using {v}:\n{}", lines.join("\n"))
        })
        .collect();
    s.push_str(&parts.join("\n"));
    s
}

/// Inputs naming who applies.
pub(crate) struct Applier<'a> {
    pub manager: &'a str,
    pub subresource: &'a str,
    pub api_version: &'a str,
    pub force: bool,
}

/// Applies `applied` onto `live`; returns the merged object and the new managedFields
/// entries, or the conflicts.
pub(crate) fn apply(
    live: &Value,
    applied: &Value,
    mut entries: Vec<Entry>,
    who: &Applier<'_>,
    root: Option<&Value>,
) -> Result<(Value, Vec<Entry>), Vec<Conflict>> {
    let applied_set = field_set(applied, root);
    let changed: Vec<&FieldPath> = applied_set
        .iter()
        .filter(|p| if is_item(p) { value_at(live, p).is_none() } else { value_at(live, p) != value_at(applied, p) })
        .collect();
    let is_self = |e: &Entry| e.manager == who.manager;
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !is_self(e)) {
        for p in &changed {
            if e.set.contains(*p) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: (*p).clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        if !who.force {
            return Err(conflicts);
        }
        for e in entries.iter_mut().filter(|e| e.manager != who.manager) {
            for p in &changed {
                e.set.remove(*p);
            }
        }
    }

    let prev: FieldSet = entries
        .iter()
        .find(|e| e.same_slot(who.manager, "Apply", who.subresource))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let owned_by_others = |p: &FieldPath| {
        entries
            .iter()
            .filter(|e| !e.same_slot(who.manager, "Apply", who.subresource))
            .any(|e| e.set.iter().any(|q| q.starts_with(p)))
    };
    let mut merged = live.clone();
    let mut removed: Vec<&FieldPath> =
        prev.iter().filter(|p| !applied_set.iter().any(|q| q.starts_with(p)) && !owned_by_others(p)).collect();
    // Shallowest first, skipping paths inside something already removed: removing a
    // list-map item's key field first would make the item itself unaddressable.
    removed.sort_by_key(|p| p.len());
    let mut done: Vec<&FieldPath> = Vec::new();
    for p in removed {
        if done.iter().any(|d| p.starts_with(d)) {
            continue;
        }
        remove_at(&mut merged, p);
        done.push(p);
    }
    merge_root(&mut merged, applied, root);

    match entries.iter_mut().find(|e| e.same_slot(who.manager, "Apply", who.subresource)) {
        Some(e) => {
            if e.set != applied_set {
                e.time = crate::objects::now_time();
            }
            e.set = applied_set;
            e.api_version = who.api_version.into();
        }
        None => entries.push(Entry {
            manager: who.manager.into(),
            operation: "Apply".into(),
            api_version: who.api_version.into(),
            time: crate::objects::now_time(),
            subresource: who.subresource.into(),
            set: applied_set,
        }),
    }
    Ok((merged, entries))
}

/// Drops paths that no longer exist from every entry, and empty entries.
pub(crate) fn cleanup_entries(obj: &Value, entries: &mut Vec<Entry>, root: Option<&Value>) {
    let present = field_set(obj, root);
    for e in entries.iter_mut() {
        e.set.retain(|p| present.contains(p));
    }
    entries.retain(|e| !e.set.is_empty());
}

fn merge_root(live: &mut Value, applied: &Value, root: Option<&Value>) {
    let (Some(l), Some(a)) = (live.as_object_mut(), applied.as_object()) else {
        *live = applied.clone();
        return;
    };
    for (k, av) in a {
        match l.get_mut(k) {
            Some(lv) => merge(lv, av, root_child(root, k)),
            None => {
                l.insert(k.clone(), av.clone());
            }
        }
    }
}

/// Schema-aware merge of an applied value into a live one.
pub(crate) fn merge(live: &mut Value, applied: &Value, node: Option<&Value>) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if !map_is_atomic(node) => {
            for (k, av) in a {
                match l.get_mut(k) {
                    Some(lv) => merge(lv, av, child(node, k)),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => match list_type(node) {
            ListType::Map(keys) if !keys.is_empty() => {
                for ai in a {
                    let key = list_map_key(ai, &keys);
                    match l.iter_mut().find(|x| list_map_key(x, &keys) == key) {
                        Some(li) => merge(li, ai, items(node)),
                        None => l.push(ai.clone()),
                    }
                }
            }
            ListType::Set => {
                for ai in a {
                    if !l.contains(ai) {
                        l.push(ai.clone());
                    }
                }
            }
            ListType::Atomic => *l = a.clone(),
            ListType::Map(_) => *l = a.clone(),
        },
        (l, a) => *l = a.clone(),
    }
}
