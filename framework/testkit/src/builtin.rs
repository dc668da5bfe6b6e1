//! Built-in resources (core/v1 namespaces, secrets, configmaps, serviceaccounts, events;
//! events.k8s.io, coordination.k8s.io leases, certificates.k8s.io CSRs, authentication
//! reviews, rbac.authorization.k8s.io roles and bindings, apiextensions CRDs) and their kind-specific write rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::{ApiError, FieldError, FieldErrorKind};
use crate::objects::{b64, meta_mut, now_time, unb64};
use crate::resources::{ALL_VERBS, Kind, Registry, ResourceDef, VersionInfo};

/// One built-in kind: every kind is served at `v1`; what [`Spec::new`] leaves at its defaults
/// (all verbs, no short names, subresources, schema or extra selectable fields) is set per row.
struct Spec {
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    class: Kind,
    short: &'static [&'static str],
    subs: &'static [(&'static str, &'static [&'static str])],
    verbs: &'static [&'static str],
    schema: Option<Value>,
    selectable: &'static [&'static str],
}

const NAMESPACED: bool = true;
const CLUSTER: bool = false;
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

impl Spec {
    fn new(group: &'static str, plural: &'static str, kind: &'static str, namespaced: bool, class: Kind) -> Spec {
        Spec {
            group,
            plural,
            kind,
            namespaced,
            class,
            short: &[],
            subs: &[],
            verbs: ALL_VERBS,
            schema: None,
            selectable: &[],
        }
    }

    /// A create-only review kind (cluster-scoped, no storage).
    fn review(group: &'static str, plural: &'static str, kind: &'static str) -> Spec {
        Spec { verbs: &["create"], ..Spec::new(group, plural, kind, CLUSTER, Kind::Review) }
    }

    fn short(self, short: &'static [&'static str]) -> Spec {
        Spec { short, ..self }
    }

    fn subs(self, subs: &'static [(&'static str, &'static [&'static str])]) -> Spec {
        Spec { subs, ..self }
    }

    fn schema(self, schema: Value) -> Spec {
        Spec { schema: Some(schema), ..self }
    }

    fn selectable(self, selectable: &'static [&'static str]) -> Spec {
        Spec { selectable, ..self }
    }
}

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const EVENTS_V1_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "type",
];

fn conditions_by_type() -> Value {
    json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"], "items": {"type": "object"}})
}

/// A schema whose only structural part is `status.conditions` as a map keyed by type.
fn status_conditions() -> Value {
    json!({"type": "object", "properties": {"status": {"type": "object", "properties": {"conditions": conditions_by_type()}}}})
}

fn specs() -> Vec<Spec> {
    vec![
        Spec {
            // Namespaces have no deletecollection.
            verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
            ..Spec::new("", "namespaces", "Namespace", CLUSTER, Kind::Namespace)
        }
        .short(&["ns"])
        .subs(&[("status", STATUS_VERBS), ("finalize", &["update"])])
        .schema(status_conditions())
        .selectable(&["status.phase"]),
        Spec::new("", "secrets", "Secret", NAMESPACED, Kind::Secret).selectable(&["type"]),
        Spec::new("", "configmaps", "ConfigMap", NAMESPACED, Kind::ConfigMap).short(&["cm"]),
        Spec::new("", "serviceaccounts", "ServiceAccount", NAMESPACED, Kind::ServiceAccount)
            .short(&["sa"])
            .subs(&[("token", &["create"])]),
        Spec::new("", "events", "Event", NAMESPACED, Kind::CoreEvent).short(&["ev"]).selectable(EVENT_FIELDS),
        Spec::new("events.k8s.io", "events", "Event", NAMESPACED, Kind::Event).short(&["ev"]).selectable(EVENTS_V1_FIELDS),
        Spec::new("coordination.k8s.io", "leases", "Lease", NAMESPACED, Kind::Lease),
        Spec::new("certificates.k8s.io", "certificatesigningrequests", "CertificateSigningRequest", CLUSTER, Kind::Csr)
            .short(&["csr"])
            .subs(&[("approval", STATUS_VERBS), ("status", STATUS_VERBS)])
            .schema(json!({"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"usages": {"type": "array", "x-kubernetes-list-type": "atomic"}}},
                "status": {"type": "object", "properties": {"conditions": conditions_by_type()}}
            }}))
            .selectable(&["spec.signerName"]),
        Spec::new("apiextensions.k8s.io", "customresourcedefinitions", "CustomResourceDefinition", CLUSTER, Kind::Crd)
            .short(&["crd", "crds"])
            .subs(&[("status", STATUS_VERBS)])
            .schema(status_conditions()),
        Spec::review("authentication.k8s.io", "tokenreviews", "TokenReview"),
        Spec::review("authorization.k8s.io", "selfsubjectaccessreviews", "SelfSubjectAccessReview"),
        Spec::review("authorization.k8s.io", "subjectaccessreviews", "SubjectAccessReview"),
        // RBAC objects are stored as written; crate::rbac evaluates them for SubjectAccessReview.
        Spec::new("rbac.authorization.k8s.io", "roles", "Role", NAMESPACED, Kind::Rbac),
        Spec::new("rbac.authorization.k8s.io", "rolebindings", "RoleBinding", NAMESPACED, Kind::Rbac),
        Spec::new("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", CLUSTER, Kind::Rbac),
        Spec::new("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", CLUSTER, Kind::Rbac),
    ]
}

/// The registry of built-in resources.
pub(crate) fn registry() -> Registry {
    let mut r = Registry::default();
    for s in specs() {
        let mut version_info = BTreeMap::new();
        let mut selectable: Vec<String> = vec!["metadata.name".into()];
        if s.namespaced {
            selectable.push("metadata.namespace".into());
        }
        selectable.extend(s.selectable.iter().map(|x| x.to_string()));
        version_info.insert(
            "v1".to_string(),
            VersionInfo { schema: s.schema.map(Arc::new), enforce_schema: false, columns: vec![], selectable },
        );
        r.insert(ResourceDef {
            group: s.group.into(),
            versions: vec!["v1".into()],
            version_info,
            plural: s.plural.into(),
            singular: s.kind.to_lowercase(),
            kind: s.kind.into(),
            list_kind: format!("{}List", s.kind),
            namespaced: s.namespaced,
            short_names: s.short.iter().map(|x| x.to_string()).collect(),
            categories: vec![],
            verbs: s.verbs.to_vec(),
            subresources: s.subs.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect(),
            class: s.class,
            tracks_generation: s.class == Kind::Crd,
        });
    }
    r
}

/// Kind-specific defaults applied on create (before validation).
pub(crate) fn prepare_create(def: &ResourceDef, obj: &mut Value) {
    match def.class {
        Kind::Namespace => {
            obj["status"] = json!({"phase": "Active"});
        }
        Kind::Csr => {
            // The apiserver records the authenticated requester; everyone is admin here.
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("username".into(), json!("kube-sim-admin"));
                spec.insert("groups".into(), json!(["system:masters", "system:authenticated"]));
            }
        }
        Kind::Secret if obj.get("type").and_then(Value::as_str).is_none_or(str::is_empty) => {
            obj["type"] = json!("Opaque");
        }
        _ => {}
    }
}

/// Kind-specific normalisation and validation on every write. `sub` is the subresource.
pub(crate) fn on_write(def: &ResourceDef, old: Option<&Value>, new: &mut Value, sub: &str) -> Result<(), ApiError> {
    let name = crate::objects::name(new).unwrap_or_default().to_string();
    let mut errs = Vec::new();
    match def.class {
        Kind::Secret => secret_write(new)?,
        Kind::Csr => csr_write(old, new, sub, &mut errs),
        Kind::Lease => {
            if let Some(d) = new.pointer("/spec/leaseDurationSeconds").and_then(Value::as_i64)
                && d <= 0
            {
                errs.push(FieldError::invalid("spec.leaseDurationSeconds", json!(d), "must be greater than 0"));
            }
        }
        Kind::Crd => crate::crd::on_write(new, &mut errs),
        _ => {}
    }
    if errs.is_empty() { Ok(()) } else { Err(ApiError::invalid(&def.kind, &def.group, &name, &errs)) }
}

/// Folds `stringData` into `data` and checks `data` is base64, as the Secret codec does.
fn secret_write(new: &mut Value) -> Result<(), ApiError> {
    if let Some(Value::Object(sd)) = new.as_object_mut().and_then(|o| o.remove("stringData")) {
        let data = new.as_object_mut().expect("secret is an object").entry("data").or_insert_with(|| json!({}));
        if let Some(d) = data.as_object_mut() {
            for (k, v) in sd {
                d.insert(k, json!(b64(v.as_str().unwrap_or_default().as_bytes())));
            }
        }
    }
    if let Some(d) = new.get("data").and_then(Value::as_object) {
        for (k, v) in d {
            if v.as_str().is_none_or(|s| unb64(s).is_none()) {
                return Err(ApiError::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at data[{k:?}]"
                )));
            }
        }
    }
    Ok(())
}

const KEY_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

fn pem_blocks(field: &str, v: Option<&Value>) -> Result<Vec<pem::Pem>, FieldError> {
    let s = v.and_then(Value::as_str).unwrap_or_default();
    let bytes = unb64(s).ok_or_else(|| FieldError::invalid(field, json!("<data>"), "must be base64-encoded"))?;
    pem::parse_many(&bytes).map_err(|e| FieldError::invalid(field, json!("<data>"), e.to_string()))
}

fn condition(obj: &Value, ty: &str) -> Option<Value> {
    obj.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == ty).cloned()
}

/// CSR rules: spec immutable, approval conditions only via `approval`, certificate only
/// via `status` once approved, condition timestamps filled in.
fn csr_write(old: Option<&Value>, new: &mut Value, sub: &str, errs: &mut Vec<FieldError>) {
    if let Some(old) = old {
        new["spec"] = old["spec"].clone();
        match sub {
            "" => new["status"] = old.get("status").cloned().unwrap_or(Value::Null),
            "status" => {
                // Updating status must not change approval decisions.
                let mut conds: Vec<Value> = new
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter(|c| c["type"] != "Approved" && c["type"] != "Denied").cloned().collect())
                    .unwrap_or_default();
                for t in ["Approved", "Denied"] {
                    if let Some(c) = condition(old, t) {
                        conds.push(c);
                    }
                }
                set_conditions(new, conds);
            }
            "approval" => {
                // Only Approved/Denied conditions come from the request.
                let mut conds: Vec<Value> = old
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter(|c| c["type"] != "Approved" && c["type"] != "Denied").cloned().collect())
                    .unwrap_or_default();
                if let Some(a) = new.pointer("/status/conditions").and_then(Value::as_array) {
                    conds.extend(a.iter().filter(|c| c["type"] == "Approved" || c["type"] == "Denied").cloned());
                }
                let cert = old.pointer("/status/certificate").cloned();
                set_conditions(new, conds);
                if let Some(st) = new.get_mut("status").and_then(Value::as_object_mut) {
                    match cert {
                        Some(c) => st.insert("certificate".into(), c),
                        None => st.remove("certificate"),
                    };
                }
                for t in ["Approved", "Denied"] {
                    if condition(old, t).is_some() && condition(new, t).is_none() {
                        errs.push(FieldError::forbidden(
                            "status.conditions",
                            format!("updates may not remove a condition of type {t:?}"),
                        ));
                    }
                }
            }
            _ => {}
        }
        if new.get("status").is_some_and(Value::is_null) {
            new.as_object_mut().expect("object").remove("status");
        }
    }
    populate_condition_times(old, new);
    validate_csr(old, new, errs);
}

fn set_conditions(obj: &mut Value, conds: Vec<Value>) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    if conds.is_empty() {
        obj["status"].as_object_mut().expect("object").remove("conditions");
    } else {
        obj["status"]["conditions"] = Value::Array(conds);
    }
}

fn populate_condition_times(old: Option<&Value>, new: &mut Value) {
    let now = now_time();
    let Some(conds) = new.pointer_mut("/status/conditions").and_then(Value::as_array_mut) else { return };
    for c in conds.iter_mut() {
        let ty = c["type"].clone();
        let prev = old.and_then(|o| condition(o, ty.as_str().unwrap_or_default()));
        if c.get("lastUpdateTime").is_none_or(Value::is_null) {
            c["lastUpdateTime"] = json!(now);
        }
        if c.get("lastTransitionTime").is_none_or(Value::is_null) {
            let keep =
                prev.as_ref().filter(|p| p["status"] == c["status"]).and_then(|p| p.get("lastTransitionTime").cloned());
            c["lastTransitionTime"] = keep.unwrap_or(json!(now));
        }
    }
}

fn validate_csr(old: Option<&Value>, new: &Value, errs: &mut Vec<FieldError>) {
    let spec = &new["spec"];
    match spec.get("request") {
        None | Some(Value::Null) => errs.push(FieldError::required("spec.request", "")),
        r => match pem_blocks("spec.request", r) {
            Ok(b) if b.iter().any(|p| p.tag() == "CERTIFICATE REQUEST") => {}
            Ok(_) => errs.push(FieldError::invalid(
                "spec.request",
                json!("<data>"),
                "PEM block type must be CERTIFICATE REQUEST",
            )),
            Err(e) => errs.push(e),
        },
    }
    if spec.get("signerName").and_then(Value::as_str).is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.signerName", ""));
    }
    match spec.get("usages").and_then(Value::as_array) {
        None => errs.push(FieldError::required("spec.usages", "")),
        Some(us) => {
            for (i, u) in us.iter().enumerate() {
                if !u.as_str().is_some_and(|s| KEY_USAGES.contains(&s)) {
                    errs.push(FieldError {
                        field: format!("spec.usages[{i}]"),
                        kind: FieldErrorKind::NotSupported(
                            u.clone(),
                            KEY_USAGES.iter().map(|s| s.to_string()).collect(),
                        ),
                    });
                }
            }
        }
    }
    if let Some(e) = spec.get("expirationSeconds").and_then(Value::as_i64)
        && e < 600
    {
        errs.push(FieldError::invalid(
            "spec.expirationSeconds",
            json!(e),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    let approved = condition(new, "Approved").is_some();
    let denied = condition(new, "Denied").is_some();
    if approved && denied {
        errs.push(FieldError::invalid(
            "status.conditions",
            json!("Denied"),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    if let Some(conds) = new.pointer("/status/conditions").and_then(Value::as_array) {
        let mut seen: Vec<&Value> = Vec::new();
        for (i, c) in conds.iter().enumerate() {
            let ty = &c["type"];
            if ty.as_str().is_none_or(str::is_empty) {
                errs.push(FieldError::required(format!("status.conditions[{i}].type"), ""));
            }
            if (ty == "Approved" || ty == "Denied") && c["status"] != "True" {
                errs.push(FieldError {
                    field: format!("status.conditions[{i}].status"),
                    kind: FieldErrorKind::NotSupported(c["status"].clone(), vec!["True".into()]),
                });
            }
            if (ty == "Approved" || ty == "Denied" || ty == "Failed") && seen.contains(&ty) {
                errs.push(FieldError {
                    field: format!("status.conditions[{i}].type"),
                    kind: FieldErrorKind::Duplicate(ty.clone()),
                });
            }
            seen.push(ty);
            if !matches!(c["status"].as_str(), Some("True" | "False" | "Unknown")) {
                errs.push(FieldError {
                    field: format!("status.conditions[{i}].status"),
                    kind: FieldErrorKind::NotSupported(
                        c["status"].clone(),
                        vec!["False".into(), "True".into(), "Unknown".into()],
                    ),
                });
            }
        }
    }
    let cert = new.pointer("/status/certificate").filter(|c| !c.is_null());
    if let Some(c) = cert {
        match pem_blocks("status.certificate", Some(c)) {
            Ok(b) if !b.is_empty() && b.iter().all(|p| p.tag() == "CERTIFICATE") => {}
            Ok(_) => errs.push(FieldError::invalid(
                "status.certificate",
                json!("<certificate data>"),
                "must contain at least one CERTIFICATE PEM block and only CERTIFICATE blocks",
            )),
            Err(e) => errs.push(e),
        }
        let old_cert = old.and_then(|o| o.pointer("/status/certificate")).filter(|c| !c.is_null());
        match old_cert {
            Some(oc) if oc != c => errs.push(FieldError::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            )),
            None if !approved || denied => {
                errs.push(FieldError::forbidden(
                    "status.certificate",
                    "updates may not set certificate content unless the Approved condition is present",
                ));
            }
            _ => {}
        }
    }
}

/// A regex compiled once: validation runs on every write, and compiling a pattern costs far more
/// than matching a name (issue 16's profile found it on every create).
macro_rules! static_regex {
    ($re:expr) => {{
        static RE: std::sync::LazyLock<regex::Regex> =
            std::sync::LazyLock::new(|| regex::Regex::new($re).expect("static regex"));
        &*RE
    }};
}

/// `metadata.name` rules: DNS-1123 label for namespaces, subdomain otherwise.
pub(crate) fn validate_name(def: &ResourceDef, name: &str) -> Option<FieldError> {
    let (re, max, what) = if def.class == Kind::Namespace {
        (
            static_regex!("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
            63,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        )
    } else {
        (
            static_regex!("^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
            253,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    };
    // Event names carry a timestamp suffix with dots; core events accept any subdomain too.
    let ok = name.len() <= max && re.is_match(name);
    (!ok).then(|| FieldError::invalid("metadata.name", json!(name), what))
}

/// Label keys/values as `metav1validation.ValidateLabels` checks them.
pub(crate) fn validate_labels(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) else { return errs };
    let value_re = static_regex!("^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$");
    let name_re = static_regex!("^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$");
    for (k, v) in labels {
        let key_name = k.rsplit_once('/').map(|(_, n)| n).unwrap_or(k);
        if key_name.len() > 63 || !name_re.is_match(key_name) {
            errs.push(FieldError::invalid("metadata.labels", json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
        match v.as_str() {
            Some(s) if s.len() <= 63 && value_re.is_match(s) => {}
            _ => errs.push(FieldError::invalid("metadata.labels", v.clone(), "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")),
        }
    }
    errs
}

/// Ensures `metadata.namespace` etc. exist on an object being created.
pub(crate) fn stamp_new(def: &ResourceDef, obj: &mut Value) {
    let gen_tracking = def.tracks_generation;
    let m = meta_mut(obj);
    m.insert("uid".into(), json!(crate::objects::new_uid()));
    m.insert("creationTimestamp".into(), json!(now_time()));
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.remove("resourceVersion");
    m.remove("managedFields");
    m.remove("selfLink");
    if gen_tracking {
        m.insert("generation".into(), json!(1));
    } else {
        m.remove("generation");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_validated_as_kubernetes_does() {
        let reg = registry();
        let ns = reg.lookup("", "v1", "namespaces").unwrap();
        let cm = reg.lookup("", "v1", "configmaps").unwrap();
        assert!(validate_name(&cm, "r1.example.com").is_none());
        assert!(validate_name(&cm, "web.1865f0a1b2c3d4e5").is_none());
        assert!(validate_name(&ns, "team-a").is_none());
        for bad in ["Upper", "-lead", "trail-", "a..b", "a_b", ""] {
            assert!(validate_name(&cm, bad).is_some(), "{bad:?} accepted");
        }
        assert!(validate_name(&ns, "a.b").is_some(), "a namespace is a label, not a subdomain");
        assert!(validate_name(&ns, &"a".repeat(64)).is_some());
        assert!(validate_name(&cm, &"a".repeat(253)).is_none());
        assert!(validate_name(&cm, &"a".repeat(254)).is_some());
        let obj = |labels: Value| json!({"metadata": {"labels": labels}});
        assert!(validate_labels(&obj(json!({"app.kubernetes.io/name": "web", "tier": ""}))).is_empty());
        assert_eq!(validate_labels(&obj(json!({"-bad": "ok", "good": "bad value"}))).len(), 2);
    }
}
