//! A minimal OpenAPI v3 surface (`/openapi/v3`, `/openapi/v3/<group-version>`).
//!
//! kubectl reads it to learn that the server supports `fieldValidation` (server-side
//! validation); without it `kubectl apply` demands client-side validation from a full
//! `/openapi/v2` document. Paths carry only the PATCH operation metadata kubectl checks;
//! schemas are not published (kubectl then falls back to its compiled-in types for
//! strategic merge).

use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::resources::Registry;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// The document for one group-version.
pub(crate) fn group_version_doc(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
    ]);
    let mut any = false;
    for def in reg.in_group_version(group, version) {
        any = true;
        let base = format!("/{}", gv_path(group, version));
        let item = if def.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", def.plural)
        } else {
            format!("{base}/{}/{{name}}", def.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": def.kind});
        let op = |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {}});
        paths.insert(item, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
    }
    any.then(|| {
        json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": paths,
            "components": {"schemas": {}},
        })
    })
}

/// The `/openapi/v3` index of group-version documents.
pub(crate) fn index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<(String, String)> = vec![(String::new(), "v1".into())];
    for (g, vs) in reg.groups() {
        for v in vs {
            gvs.push((g.clone(), v));
        }
    }
    for (g, v) in gvs {
        if let Some(doc) = group_version_doc(reg, &g, &v) {
            let hash: String =
                sha2::Sha256::digest(doc.to_string().as_bytes()).iter().take(16).map(|b| format!("{b:02X}")).collect();
            let p = gv_path(&g, &v);
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}));
        }
    }
    json!({"paths": paths})
}
