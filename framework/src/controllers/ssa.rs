//! The only place that writes status: server-side apply on the status subresource with this
//! controller's field manager, forced, and a body that holds nothing but `apiVersion`, `kind`,
//! `metadata.name`/`namespace` and the status fields set in this pass (issuer-lib's
//! `internal/ssaclient`). Each request API builds its own body (`request/certificate_request.rs`,
//! `request/csr.rs`) from the condition helpers here; the issuer body is built here.
//!
//! Conditions are a list-map keyed by `type`, so applying only the conditions this controller owns
//! never touches `Approved`/`Denied` (owned by the approver); a condition this manager set in an
//! earlier pass and leaves out now is removed by the API server, as in issuer-lib. A transition
//! time is kept while a condition's status does not change. An object deleted meanwhile
//! (NotFound) is not an error.

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

use crate::controllers::decision::{IssuerCond, SetCond, transition_time};
use crate::controllers::view::Cond;

/// Applies `body` (a request API's status body) to the status of object `name` served by `api`.
///
/// `Api::patch_status` would decode the reply, the whole object with the certificate and CA just
/// written, into `K`, and the pass has no use for it: the watch brings the new state to the cache.
/// That decode was about 5 % of the example controller's CPU at full speed (BENCHMARKS.md, issue
/// 16), so the reply is read as text and dropped; errors are still the API server's `Status`.
pub(crate) async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    field_manager: &str,
    body: Value,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone,
{
    let mut request = kube::core::Request::new(api.resource_url())
        .patch_subresource("status", name, &PatchParams::apply(field_manager).force(), &Patch::Apply(body))
        .map_err(kube::Error::BuildRequest)?;
    // The name kube's own `patch_status` gives the request (its tracing span reads it).
    request.extensions_mut().insert("patch_status");
    ignore_not_found(api.clone().into_client().request_text(request).await)
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

/// A Kubernetes `Time` as JSON.
pub(crate) fn time(t: Timestamp) -> Value {
    serde_json::to_value(Time(t)).unwrap_or(Value::Null)
}

/// Bytes as Kubernetes serializes them (base64).
pub(crate) fn bytes(s: &str) -> Value {
    serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap_or(Value::Null)
}

/// The conditions in `set` as applied: `lastTransitionTime` kept while a status does not change
/// (against `current`), and `lastUpdateTime` set for Kubernetes CSRs.
pub(crate) fn conditions(current: &[Cond], set: &[SetCond], now: Timestamp, csr: bool) -> Vec<Value> {
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
    use super::*;

    fn set(t: &str, s: &str, r: &str) -> SetCond {
        SetCond { type_: t.into(), status: s.into(), reason: r.into(), message: "m".into() }
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
