//! `SubjectAccessReview` (authorization.k8s.io/v1) answered by evaluating the stored RBAC
//! objects (rbac.authorization.k8s.io/v1 Roles, ClusterRoles, RoleBindings,
//! ClusterRoleBindings) the way the apiserver's RBAC authorizer does:
//!
//! * ClusterRoleBindings grant their ClusterRole's rules everywhere (resource rules in every
//!   namespace and at cluster scope, and `nonResourceURLs`);
//! * a RoleBinding grants its Role's (same namespace) or ClusterRole's *resource* rules in its
//!   own namespace only (non-resource rules are ignored there, as in Kubernetes);
//! * subjects match by `User` name, `Group` name, or `ServiceAccount` (namespace defaults to
//!   the RoleBinding's), which is the user `system:serviceaccount:<ns>:<name>`;
//! * a rule matches when its verbs, apiGroups, resources (`res`, `res/sub`, `*`, `*/sub`,
//!   `res/*`) and resourceNames, or its nonResourceURLs (exact, `*`, or a `prefix*`), match;
//! * members of `system:masters` are allowed everything, as the apiserver's superuser group.
//!
//! Not modelled: aggregated ClusterRoles (`aggregationRule`), the Node/Webhook authorizers,
//! `fieldSelector`/`labelSelector` attributes, and authorization of the callers of this
//! server itself (kube-sim still authenticates and authorizes nobody). SelfSubjectAccessReview
//! keeps answering "allowed", since every caller is the administrator here.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, FieldError};
use crate::objects;
use crate::resources::ResKey;
use crate::store::Store;

const GROUP: &str = "rbac.authorization.k8s.io";

fn key(plural: &str) -> ResKey {
    ResKey { group: GROUP.into(), plural: plural.into() }
}

/// What is asked: a resource or a non-resource request by one subject.
struct Attributes<'a> {
    user: &'a str,
    groups: Vec<&'a str>,
    verb: &'a str,
    /// `Some((namespace, group, resource, subresource, name))` for resource requests.
    resource: Option<(&'a str, &'a str, &'a str, &'a str, &'a str)>,
    /// The path for non-resource requests.
    path: &'a str,
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// POST `subjectaccessreviews`.
pub(crate) fn subject_access_review(store: &Store, api_version: &str, body: &[u8]) -> ApiResult<Value> {
    let mut review: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let ra = spec.get("resourceAttributes").filter(|v| v.is_object());
    let nra = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let mut errs = Vec::new();
    if ra.is_some() == nra.is_some() {
        errs.push(FieldError::invalid(
            "spec.resourceAttributes",
            json!(ra.cloned()),
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    let user = s(&spec, "user");
    let groups = strs(&spec["groups"]);
    if user.is_empty() && groups.is_empty() {
        errs.push(FieldError::invalid("spec.user", json!(""), "at least one of user or group must be specified"));
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid("SubjectAccessReview", "authorization.k8s.io", "", &errs));
    }
    let attrs = match (ra, nra) {
        (Some(r), _) => Attributes {
            user,
            groups,
            verb: s(r, "verb"),
            resource: Some((s(r, "namespace"), s(r, "group"), s(r, "resource"), s(r, "subresource"), s(r, "name"))),
            path: "",
        },
        (None, Some(n)) => Attributes { user, groups, verb: s(n, "verb"), resource: None, path: s(n, "path") },
        (None, None) => unreachable!("checked above"),
    };
    let status = match authorize(store, &attrs) {
        Some(reason) => json!({"allowed": true, "reason": reason}),
        None => json!({"allowed": false}),
    };
    review["status"] = status;
    review["apiVersion"] = json!(api_version);
    review["kind"] = json!("SubjectAccessReview");
    if review.get("metadata").is_none() {
        review["metadata"] = json!({"creationTimestamp": null});
    }
    Ok(review)
}

/// The reason the request is allowed, or `None` when no rule allows it.
fn authorize(store: &Store, a: &Attributes) -> Option<String> {
    if a.groups.contains(&"system:masters") {
        return Some("allowed: member of system:masters".into());
    }
    for b in store.list(&key("clusterrolebindings"), None) {
        if let Some(who) = bound(b, "", a)
            && b.pointer("/roleRef/kind").and_then(Value::as_str) == Some("ClusterRole")
            && let Some(role) = store.get(&key("clusterroles"), "", s(&b["roleRef"], "name"))
            && rules_allow(role, a, true)
        {
            return Some(reason("ClusterRoleBinding", b, role, "ClusterRole", &who, ""));
        }
    }
    let (ns, ..) = a.resource?;
    if ns.is_empty() {
        return None;
    }
    for b in store.list(&key("rolebindings"), Some(ns)) {
        let Some(who) = bound(b, ns, a) else { continue };
        let role_name = s(&b["roleRef"], "name");
        let (role, kind) = match b.pointer("/roleRef/kind").and_then(Value::as_str) {
            Some("Role") => (store.get(&key("roles"), ns, role_name), "Role"),
            Some("ClusterRole") => (store.get(&key("clusterroles"), "", role_name), "ClusterRole"),
            _ => continue,
        };
        if let Some(role) = role
            && rules_allow(role, a, false)
        {
            return Some(reason("RoleBinding", b, role, kind, &who, ns));
        }
    }
    None
}

fn reason(binding_kind: &str, b: &Value, role: &Value, role_kind: &str, who: &str, ns: &str) -> String {
    let at = if ns.is_empty() { String::new() } else { format!(" in namespace {ns:?}") };
    format!(
        "RBAC: allowed by {binding_kind} {:?} of {role_kind} {:?} to {who}{at}",
        objects::name(b).unwrap_or_default(),
        objects::name(role).unwrap_or_default()
    )
}

/// The matching subject (as `Kind "name"`), if the binding names the requester.
fn bound(binding: &Value, binding_ns: &str, a: &Attributes) -> Option<String> {
    binding["subjects"].as_array()?.iter().find_map(|sub| {
        let name = s(sub, "name");
        let hit = match s(sub, "kind") {
            "User" => name == a.user,
            "Group" => a.groups.contains(&name),
            "ServiceAccount" => {
                let ns = match s(sub, "namespace") {
                    "" => binding_ns,
                    n => n,
                };
                !ns.is_empty() && a.user == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        };
        hit.then(|| format!("{} {name:?}", s(sub, "kind")))
    })
}

fn rules_allow(role: &Value, a: &Attributes, non_resource_ok: bool) -> bool {
    let Some(rules) = role["rules"].as_array() else { return false };
    rules.iter().any(|r| {
        let verbs = strs(&r["verbs"]);
        if !verbs.iter().any(|v| *v == "*" || *v == a.verb) {
            return false;
        }
        match a.resource {
            Some((_, group, resource, sub, name)) => {
                let groups = strs(&r["apiGroups"]);
                let resources = strs(&r["resources"]);
                let names = strs(&r["resourceNames"]);
                groups.iter().any(|g| *g == "*" || *g == group)
                    && resources.iter().any(|x| resource_matches(x, resource, sub))
                    && (names.is_empty() || names.contains(&name))
            }
            None => {
                non_resource_ok
                    && strs(&r["nonResourceURLs"]).iter().any(|u| {
                        *u == "*" || *u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
                    })
            }
        }
    })
}

fn resource_matches(rule: &str, resource: &str, sub: &str) -> bool {
    if rule == "*" {
        return true;
    }
    if sub.is_empty() {
        return rule == resource;
    }
    rule == format!("{resource}/{sub}") || rule == format!("*/{sub}") || rule == format!("{resource}/*")
}
