//! CustomResourceDefinitions: validating a CRD, its status (Established/NamesAccepted) and
//! turning it into a served [`ResourceDef`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::FieldError;
use crate::resources::{ALL_VERBS, Kind, PrinterColumn, ResourceDef, VersionInfo};

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Validates a CRD and sets the status a healthy apiextensions controller would.
pub(crate) fn on_write(crd: &mut Value, errs: &mut Vec<FieldError>) {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec.pointer("/names/plural").and_then(Value::as_str).unwrap_or_default();
    let kind = spec.pointer("/names/kind").and_then(Value::as_str).unwrap_or_default();
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        errs.push(FieldError {
            field: "spec.scope".into(),
            kind: crate::error::FieldErrorKind::NotSupported(
                spec["scope"].clone(),
                vec!["Cluster".into(), "Namespaced".into()],
            ),
        });
    }
    let name = crate::objects::name(crd).unwrap_or_default();
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid("metadata.name", json!(name), "must be spec.names.plural+\".\"+spec.group"));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::required("spec.versions", "must have exactly one version marked as storage version"));
    }
    let storage: Vec<&Value> = versions.iter().filter(|v| v["storage"] == true).collect();
    if !versions.is_empty() && storage.len() != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            json!(storage.len()),
            "must have exactly one version marked as storage version",
        ));
    }
    if !errs.is_empty() {
        return;
    }
    let mut names = spec["names"].clone();
    if names.get("singular").is_none() {
        names["singular"] = json!(kind.to_lowercase());
    }
    if names.get("listKind").is_none() {
        names["listKind"] = json!(format!("{kind}List"));
    }
    let now = crate::objects::now_time();
    let keep_time = |ty: &str| {
        crd.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|c| c["type"] == ty))
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or(json!(now))
    };
    let status = json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": keep_time("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": keep_time("Established")},
        ],
        "acceptedNames": names,
        "storedVersions": [storage[0]["name"].clone()],
    });
    crd["status"] = status;
}

/// The served resource described by a (valid) CRD.
pub(crate) fn def_from_crd(crd: &Value) -> Option<ResourceDef> {
    let spec = crd.get("spec")?;
    let names = spec.get("names")?;
    let kind = names.get("kind")?.as_str()?.to_string();
    let mut versions = Vec::new();
    let mut version_info = BTreeMap::new();
    let mut has_status = false;
    let all = spec.get("versions")?.as_array()?;
    // Storage version first so it is the preferred one.
    let mut ordered: Vec<&Value> = all.iter().filter(|v| v["storage"] == true).collect();
    ordered.extend(all.iter().filter(|v| v["storage"] != true));
    for v in ordered {
        if v.get("served") == Some(&json!(false)) {
            continue;
        }
        let name = v.get("name")?.as_str()?.to_string();
        has_status |= v.pointer("/subresources/status").is_some();
        let mut columns: Vec<PrinterColumn> = strs_cols(v.get("additionalPrinterColumns"));
        if !columns.iter().any(|c| c.json_path == ".metadata.creationTimestamp") {
            columns.push(PrinterColumn {
                name: "Age".into(),
                type_: "date".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".metadata.creationTimestamp".into(),
            });
        }
        let mut selectable = vec!["metadata.name".to_string()];
        if spec["scope"] == "Namespaced" {
            selectable.push("metadata.namespace".into());
        }
        if let Some(sf) = v.get("selectableFields").and_then(Value::as_array) {
            selectable.extend(
                sf.iter().filter_map(|f| f["jsonPath"].as_str()).map(|p| p.trim_start_matches('.').to_string()),
            );
        }
        let schema = v.pointer("/schema/openAPIV3Schema").cloned();
        version_info.insert(
            name.clone(),
            VersionInfo { enforce_schema: schema.is_some(), schema: schema.map(Arc::new), columns, selectable },
        );
        versions.push(name);
    }
    let mut subresources = Vec::new();
    if has_status {
        subresources.push(("status".to_string(), vec!["get", "patch", "update"]));
    }
    Some(ResourceDef {
        group: spec.get("group")?.as_str()?.to_string(),
        versions,
        version_info,
        plural: names.get("plural")?.as_str()?.to_string(),
        singular: names
            .get("singular")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| kind.to_lowercase()),
        list_kind: names
            .get("listKind")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| format!("{kind}List")),
        kind,
        namespaced: spec["scope"] == "Namespaced",
        short_names: strs(names.get("shortNames")),
        categories: strs(names.get("categories")),
        verbs: ALL_VERBS.to_vec(),
        subresources,
        class: Kind::Custom,
        tracks_generation: true,
    })
}

fn strs_cols(v: Option<&Value>) -> Vec<PrinterColumn> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| PrinterColumn {
                    name: c["name"].as_str().unwrap_or_default().into(),
                    type_: c["type"].as_str().unwrap_or("string").into(),
                    format: c["format"].as_str().unwrap_or_default().into(),
                    description: c["description"].as_str().unwrap_or_default().into(),
                    priority: c["priority"].as_i64().unwrap_or(0),
                    json_path: c["jsonPath"].as_str().unwrap_or_default().into(),
                })
                .collect()
        })
        .unwrap_or_default()
}
