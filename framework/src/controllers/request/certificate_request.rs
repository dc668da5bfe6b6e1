//! The cert-manager `CertificateRequest` API: how the request controller watches it, reads it
//! ([`RequestView`]), finds the issuer it names (`spec.issuerRef`), and the status body it applies
//! (conditions, `certificate`, `ca`, `failureTime`).

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use serde_json::{Value, json};

use crate::api::CertificateRequest;
use crate::controllers::decision::request::Outcome;
use crate::controllers::duration;
use crate::controllers::request::api::RequestApi;
use crate::controllers::shared::Kinds;
use crate::controllers::ssa;
use crate::controllers::view::{Cond, IssuerTarget, RequestView};
use crate::controllers::watch;
use crate::controllers::watch_decode::WithoutManagedFields;
use crate::issuer::{IssuerScope, KindNames};
use crate::request::{RequestKind, Requester};

impl RequestApi for CertificateRequest {
    const CONTROLLER: &'static str = "certificaterequests";
    const NAMES_NAMESPACED_ISSUERS: bool = true;

    fn watch_api(client: &kube::Client, namespace: Option<&str>) -> Api<WithoutManagedFields<Self>> {
        watch::api(client, namespace)
    }

    fn object_api(&self, client: &kube::Client) -> Api<Self> {
        Api::namespaced(client.clone(), self.metadata.namespace.as_deref().unwrap_or_default())
    }

    fn view(&self) -> RequestView {
        let status = self.status.clone().unwrap_or_default();
        RequestView {
            kind: RequestKind::CertificateRequest,
            name: self.metadata.name.clone().unwrap_or_default(),
            namespace: self.metadata.namespace.clone(),
            uid: self.metadata.uid.clone().unwrap_or_default(),
            created: self.metadata.creation_timestamp.as_ref().map(|t| t.0),
            annotations: self.metadata.annotations.clone().unwrap_or_default(),
            conditions: status
                .conditions
                .iter()
                .map(|c| Cond {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone().unwrap_or_default(),
                    message: c.message.clone().unwrap_or_default(),
                    last_transition_time: c.last_transition_time.as_ref().map(|t| t.0),
                })
                .collect(),
            has_certificate: status.certificate.as_ref().is_some_and(|c| !c.0.is_empty()),
            csr_pem: self.spec.request.0.clone(),
            duration: duration::certificate_request_duration(self.spec.duration.as_deref()),
            is_ca: self.spec.is_ca,
            usages: self.spec.usages.clone(),
            requester: Requester {
                username: self.spec.username.clone().unwrap_or_default(),
                groups: self.spec.groups.clone(),
                uid: self.spec.uid.clone().unwrap_or_default(),
                extra: self.spec.extra.clone(),
            },
        }
    }

    fn target(&self, kinds: &Kinds) -> Result<Option<IssuerTarget>, String> {
        Ok(target_of(self, &kinds.namespaced.names, &kinds.cluster.names))
    }

    /// Ready or Failed. (Other requests an issuer change wakes are sorted out by the gate.)
    fn finished(&self) -> bool {
        self.condition("Ready").is_some_and(|c| c.status == "True" || c.reason.as_deref() == Some("Failed"))
    }

    fn status_body(view: &RequestView, outcome: &Outcome, now: Timestamp) -> Option<Value> {
        Some(status_body(view, outcome, now))
    }
}

/// The issuer a CertificateRequest names, if it is one of ours (issuer-lib's `matchIssuerType`:
/// same group, and the kind is empty or one of our two; an empty kind means the namespaced one).
fn target_of(cr: &CertificateRequest, namespaced: &KindNames, cluster: &KindNames) -> Option<IssuerTarget> {
    let r = &cr.spec.issuer_ref;
    if r.group.as_deref() != Some(namespaced.group) {
        return None;
    }
    let scope = match r.kind.as_deref() {
        None | Some("") => IssuerScope::Namespaced,
        Some(k) if k == namespaced.kind => IssuerScope::Namespaced,
        Some(k) if k == cluster.kind => IssuerScope::Cluster,
        Some(_) => return None,
    };
    Some(IssuerTarget {
        scope,
        name: r.name.clone(),
        namespace: match scope {
            IssuerScope::Namespaced => cr.metadata.namespace.clone(),
            IssuerScope::Cluster => None,
        },
    })
}

/// The status of a CertificateRequest after `outcome`, as an apply body (see `ssa`).
fn status_body(view: &RequestView, outcome: &Outcome, now: Timestamp) -> Value {
    let mut status = json!({ "conditions": ssa::conditions(&view.conditions, &outcome.set, now, false) });
    if let Some(issued) = &outcome.issued {
        status["certificate"] = ssa::bytes(&issued.chain_pem);
        if let Some(ca) = &issued.ca_pem {
            status["ca"] = ssa::bytes(ca);
        }
    }
    if outcome.failure_time {
        status["failureTime"] = ssa::time(now);
    }
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": { "name": view.name, "namespace": view.namespace },
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CertificateRequestSpec, IssuerRef};
    use crate::controllers::request::fixtures::{names, set, status_view};
    use crate::pki::Issued;

    fn cr(kind: Option<&str>, group: Option<&str>) -> CertificateRequest {
        let mut cr = CertificateRequest::new(
            "r",
            CertificateRequestSpec {
                issuer_ref: IssuerRef { name: "ca".into(), kind: kind.map(Into::into), group: group.map(Into::into) },
                ..Default::default()
            },
        );
        cr.metadata.namespace = Some("team".into());
        cr
    }

    #[test]
    fn certificate_request_issuer_ref_matching() {
        let (ns, cl) = names();
        let g = Some("demo.certbridge.io");
        let t = target_of(&cr(Some("DemoIssuer"), g), &ns, &cl).unwrap();
        assert_eq!(
            t,
            IssuerTarget { scope: IssuerScope::Namespaced, name: "ca".into(), namespace: Some("team".into()) }
        );
        let t = target_of(&cr(Some("DemoClusterIssuer"), g), &ns, &cl).unwrap();
        assert_eq!(t, IssuerTarget { scope: IssuerScope::Cluster, name: "ca".into(), namespace: None });
        assert_eq!(target_of(&cr(None, g), &ns, &cl).unwrap().scope, IssuerScope::Namespaced);
        // issuer-ref-unknown-group / issuer-ref-unknown-kind: foreign, ignored.
        assert!(target_of(&cr(Some("DemoIssuer"), Some("cert-manager.io")), &ns, &cl).is_none());
        assert!(target_of(&cr(Some("DemoIssuer"), None), &ns, &cl).is_none());
        assert!(target_of(&cr(Some("Issuer"), g), &ns, &cl).is_none());
    }

    #[test]
    fn certificate_request_body_has_only_what_this_pass_sets() {
        let now: Timestamp = "2025-06-01T00:00:00Z".parse().unwrap();
        let out = Outcome { set: vec![set("Ready", "False", "Failed")], failure_time: true, ..Default::default() };
        let body = status_body(&status_view(RequestKind::CertificateRequest), &out, now);
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
        let body = status_body(&status_view(RequestKind::CertificateRequest), &out, now);
        assert_eq!(body["status"]["conditions"][0]["lastTransitionTime"], "2025-06-01T00:00:00Z");
        assert_eq!(body["status"]["certificate"], "TEVBRg==");
        assert_eq!(body["status"]["ca"], "Q0E=");
        assert!(body["status"].get("failureTime").is_none());
    }
}
