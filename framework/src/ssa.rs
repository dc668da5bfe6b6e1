//! The only place that writes status: server-side apply on the status subresource with this
//! controller's field manager, forced, and a body that holds nothing but `apiVersion`, `kind`,
//! `metadata.name`/`namespace` and the status fields set in this pass (issuer-lib's
//! `internal/ssaclient`).
//!
//! Conditions are a list-map keyed by `type`, so applying only the conditions this controller owns
//! never touches `Approved`/`Denied` (owned by the approver); a condition this manager set in an
//! earlier pass and leaves out now is removed by the API server, as in issuer-lib. A transition
//! time is kept while a condition's status does not change. An object deleted meanwhile
//! (NotFound) is not an error.

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

use crate::api::CertificateRequest;
use crate::controllers::decision::{IssuerCond, Outcome, SetCond, transition_time};
use crate::controllers::view::{Cond, RequestView};

/// Applies `outcome` to the status of the CertificateRequest `view` describes.
pub(crate) async fn apply_certificate_request(
    client: &kube::Client,
    field_manager: &str,
    view: &RequestView,
    outcome: &Outcome,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), view.namespace.as_deref().unwrap_or_default());
    let body = certificate_request_body(view, outcome, now);
    ignore_not_found(
        api.patch_status(&view.name, &PatchParams::apply(field_manager).force(), &Patch::Apply(body)).await,
    )
}

/// Applies `outcome` to the status of the Kubernetes CSR `view` describes.
pub(crate) async fn apply_csr(
    client: &kube::Client,
    field_manager: &str,
    view: &RequestView,
    outcome: &Outcome,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let body = csr_body(view, outcome, now);
    ignore_not_found(
        api.patch_status(&view.name, &PatchParams::apply(field_manager).force(), &Patch::Apply(body)).await,
    )
}

/// Applies the Ready condition of an issuer (either kind).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_issuer_ready(
    client: &kube::Client,
    field_manager: &str,
    resource: &ApiResource,
    namespace: Option<&str>,
    name: &str,
    generation: i64,
    current: Option<&IssuerCond>,
    ready: &SetCond,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    let body = issuer_body(resource, namespace, name, generation, current, ready, now);
    ignore_not_found(api.patch_status(name, &PatchParams::apply(field_manager).force(), &Patch::Apply(body)).await)
}

fn ignore_not_found<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

fn time(t: Timestamp) -> Value {
    serde_json::to_value(Time(t)).unwrap_or(Value::Null)
}

fn bytes(s: &str) -> Value {
    serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap_or(Value::Null)
}

fn conditions(current: &[Cond], set: &[SetCond], now: Timestamp, csr: bool) -> Vec<Value> {
    set.iter()
        .map(|c| {
            let cur = current.iter().find(|x| x.type_ == c.type_);
            let mut v = json!({
                "type": c.type_,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": time(transition_time(cur, &c.status, now)),
            });
            if csr {
                v["lastUpdateTime"] = time(now);
            }
            v
        })
        .collect()
}

pub(crate) fn certificate_request_body(view: &RequestView, outcome: &Outcome, now: Timestamp) -> Value {
    let mut status = json!({ "conditions": conditions(&view.conditions, &outcome.set, now, false) });
    if let Some(issued) = &outcome.issued {
        status["certificate"] = bytes(&issued.chain_pem);
        if let Some(ca) = &issued.ca_pem {
            status["ca"] = bytes(ca);
        }
    }
    if outcome.failure_time {
        status["failureTime"] = time(now);
    }
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": { "name": view.name, "namespace": view.namespace },
        "status": status,
    })
}

pub(crate) fn csr_body(view: &RequestView, outcome: &Outcome, now: Timestamp) -> Value {
    let mut status = json!({});
    if !outcome.set.is_empty() {
        status["conditions"] = Value::Array(conditions(&view.conditions, &outcome.set, now, true));
    }
    if let Some(issued) = &outcome.issued {
        // Kubernetes CSRs carry the chain only; there is no CA field.
        status["certificate"] = bytes(&issued.chain_pem);
    }
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": { "name": view.name },
        "status": status,
    })
}

pub(crate) fn issuer_body(
    resource: &ApiResource,
    namespace: Option<&str>,
    name: &str,
    generation: i64,
    current: Option<&IssuerCond>,
    ready: &SetCond,
    now: Timestamp,
) -> Value {
    let mut metadata = json!({ "name": name });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": metadata,
        "status": { "conditions": [{
            "type": ready.type_,
            "status": ready.status,
            "reason": ready.reason,
            "message": ready.message,
            "lastTransitionTime": time(transition_time(current, &ready.status, now)),
            "observedGeneration": generation,
        }]},
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::controllers::view::Flavor;
    use crate::pki::Issued;
    use crate::request::Requester;

    fn view(flavor: Flavor) -> RequestView {
        RequestView {
            flavor,
            name: "r".into(),
            namespace: (flavor == Flavor::CertificateRequest).then(|| "ns".into()),
            uid: String::new(),
            created: None,
            annotations: BTreeMap::new(),
            conditions: vec![
                Cond {
                    type_: "Approved".into(),
                    status: "True".into(),
                    reason: "cert-manager.io".into(),
                    message: "ok".into(),
                    last_transition_time: Some("2024-01-01T00:00:00Z".parse().unwrap()),
                },
                Cond {
                    type_: "Ready".into(),
                    status: "False".into(),
                    reason: "Pending".into(),
                    message: "old".into(),
                    last_transition_time: Some("2024-01-01T00:00:00Z".parse().unwrap()),
                },
            ],
            has_certificate: false,
            csr_pem: vec![],
            duration: Ok(Duration::from_secs(1)),
            is_ca: false,
            usages: vec![],
            requester: Requester::default(),
        }
    }

    fn set(t: &str, s: &str, r: &str) -> SetCond {
        SetCond { type_: t.into(), status: s.into(), reason: r.into(), message: "m".into() }
    }

    #[test]
    fn certificate_request_body_has_only_what_this_pass_sets() {
        let now: Timestamp = "2025-06-01T00:00:00Z".parse().unwrap();
        let out = Outcome { set: vec![set("Ready", "False", "Failed")], failure_time: true, ..Default::default() };
        let body = certificate_request_body(&view(Flavor::CertificateRequest), &out, now);
        assert_eq!(
            body,
            json!({
                "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
                "metadata": {"name": "r", "namespace": "ns"},
                "status": {
                    "conditions": [{"type": "Ready", "status": "False", "reason": "Failed", "message": "m",
                                    "lastTransitionTime": "2024-01-01T00:00:00Z"}],
                    "failureTime": "2025-06-01T00:00:00Z",
                }
            }),
            "same status keeps the transition time; Approved is not in the body"
        );
        let out = Outcome {
            set: vec![set("Ready", "True", "Issued")],
            issued: Some(Issued { chain_pem: "LEAF".into(), ca_pem: Some("CA".into()) }),
            ..Default::default()
        };
        let body = certificate_request_body(&view(Flavor::CertificateRequest), &out, now);
        assert_eq!(body["status"]["conditions"][0]["lastTransitionTime"], "2025-06-01T00:00:00Z");
        assert_eq!(body["status"]["certificate"], "TEVBRg==");
        assert_eq!(body["status"]["ca"], "Q0E=");
        assert!(body["status"].get("failureTime").is_none());
    }

    #[test]
    fn csr_body_never_writes_a_ca() {
        let now: Timestamp = "2025-06-01T00:00:00Z".parse().unwrap();
        let out = Outcome {
            issued: Some(Issued { chain_pem: "LEAF".into(), ca_pem: Some("CA".into()) }),
            ..Default::default()
        };
        let body = csr_body(&view(Flavor::Csr), &out, now);
        assert_eq!(body["status"], json!({"certificate": "TEVBRg=="}));
        let out = Outcome { set: vec![set("Failed", "True", "Failed")], ..Default::default() };
        let body = csr_body(&view(Flavor::Csr), &out, now);
        assert_eq!(body["status"]["conditions"][0]["lastUpdateTime"], "2025-06-01T00:00:00Z");
        assert!(body["metadata"].get("namespace").is_none());
    }

    #[test]
    fn issuer_body_carries_observed_generation() {
        let ar = ApiResource {
            group: "demo.certbridge.io".into(),
            version: "v1alpha1".into(),
            api_version: "demo.certbridge.io/v1alpha1".into(),
            kind: "DemoClusterIssuer".into(),
            plural: "democlusterissuers".into(),
        };
        let now: Timestamp = "2025-06-01T00:00:00Z".parse().unwrap();
        let body = issuer_body(&ar, None, "ca", 7, None, &set("Ready", "True", "Checked"), now);
        assert_eq!(body["status"]["conditions"][0]["observedGeneration"], 7);
        assert_eq!(body["kind"], "DemoClusterIssuer");
        assert!(body["metadata"].get("namespace").is_none());
        assert_eq!(body["status"]["conditions"][0]["lastTransitionTime"], "2025-06-01T00:00:00Z");

        let checked = IssuerCond {
            status: "True".into(),
            reason: "Checked".into(),
            message: "m".into(),
            observed_generation: 7,
            last_transition_time: Some("2024-01-01T00:00:00Z".parse().unwrap()),
        };
        let body = issuer_body(&ar, None, "ca", 7, Some(&checked), &set("Ready", "True", "Checked"), now);
        assert_eq!(body["status"]["conditions"][0]["lastTransitionTime"], "2024-01-01T00:00:00Z", "re-check: kept");
        let body = issuer_body(&ar, None, "ca", 7, Some(&checked), &set("Ready", "False", "Pending"), now);
        assert_eq!(body["status"]["conditions"][0]["lastTransitionTime"], "2025-06-01T00:00:00Z", "status moved");
    }
}
