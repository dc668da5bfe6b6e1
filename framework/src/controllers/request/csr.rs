//! The Kubernetes `CertificateSigningRequest` API: how the request controller watches it, reads
//! it ([`RequestView`]; duration and isCA come from cert-manager's annotations), finds the issuer
//! its signer name `<plural>.<group>/<name>` names (cluster-scoped kind only), and the status body
//! it applies (conditions and `certificate`; there is no CA field).

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use serde_json::{Value, json};

use crate::controllers::decision::request::Outcome;
use crate::controllers::duration;
use crate::controllers::request::api::RequestApi;
use crate::controllers::shared::Kinds;
use crate::controllers::ssa;
use crate::controllers::view::{Cond, IssuerTarget, RequestView};
use crate::controllers::watch_decode::WithoutManagedFields;
use crate::issuer::{IssuerScope, KindNames};
use crate::request::{RequestKind, Requester};

impl RequestApi for CertificateSigningRequest {
    const CONTROLLER: &'static str = "certificatesigningrequests";
    const NAMES_NAMESPACED_ISSUERS: bool = false;

    /// CSRs are cluster-scoped: `--namespace` does not apply.
    fn watch_api(client: &kube::Client, _namespace: Option<&str>) -> Api<WithoutManagedFields<Self>> {
        Api::all(client.clone())
    }

    fn object_api(&self, client: &kube::Client) -> Api<Self> {
        Api::all(client.clone())
    }

    fn view(&self) -> RequestView {
        let status = self.status.clone().unwrap_or_default();
        let annotations = self.metadata.annotations.clone().unwrap_or_default();
        RequestView {
            kind: RequestKind::CertificateSigningRequest,
            name: self.metadata.name.clone().unwrap_or_default(),
            namespace: None,
            uid: self.metadata.uid.clone().unwrap_or_default(),
            created: self.metadata.creation_timestamp.as_ref().map(|t| t.0),
            conditions: status
                .conditions
                .unwrap_or_default()
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
            duration: duration::csr_duration(&annotations, self.spec.expiration_seconds),
            is_ca: duration::csr_is_ca(&annotations),
            usages: self.spec.usages.clone().unwrap_or_default(),
            requester: Requester {
                username: self.spec.username.clone().unwrap_or_default(),
                groups: self.spec.groups.clone().unwrap_or_default(),
                uid: self.spec.uid.clone().unwrap_or_default(),
                extra: self.spec.extra.clone().unwrap_or_default(),
            },
            annotations,
        }
    }

    fn target(&self, kinds: &Kinds) -> Result<Option<IssuerTarget>, String> {
        let signer = &self.spec.signer_name;
        signer_target(signer, &kinds.namespaced.names, &kinds.cluster.names)
            .map_err(|why| format!("signer {signer}: {why}"))
    }

    /// Issued. (A Failed or Denied CSR an issuer change wakes is sorted out by the gate.)
    fn finished(&self) -> bool {
        self.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty())
    }

    /// Nothing to write unless the pass failed or issued the request: a Kubernetes CSR has no
    /// Ready condition to keep up to date while it waits.
    fn status_body(view: &RequestView, outcome: &Outcome, now: Timestamp) -> Option<Value> {
        outcome.writes().then(|| status_body(view, outcome, now))
    }
}

/// The cluster issuer a Kubernetes CSR names with `<plural>.<group>/<name>`. `Err` explains why
/// a signer name that looks like ours is not served (namespaced kinds); `Ok(None)` is foreign.
fn signer_target(
    signer_name: &str,
    namespaced: &KindNames,
    cluster: &KindNames,
) -> Result<Option<IssuerTarget>, String> {
    let parts: Vec<&str> = signer_name.split('/').collect();
    let [type_id, name] = parts.as_slice() else {
        return Ok(None);
    };
    if *type_id == namespaced.type_identifier() {
        return Err("namespaced issuers are not supported for Kubernetes CSRs".into());
    }
    if *type_id != cluster.type_identifier() || name.is_empty() {
        return Ok(None);
    }
    Ok(Some(IssuerTarget { scope: IssuerScope::Cluster, name: (*name).to_owned(), namespace: None }))
}

/// The status of a Kubernetes CSR after `outcome`, as an apply body (see `ssa`).
fn status_body(view: &RequestView, outcome: &Outcome, now: Timestamp) -> Value {
    let mut status = json!({});
    if !outcome.set.is_empty() {
        status["conditions"] = Value::Array(ssa::conditions(&view.conditions, &outcome.set, now, true));
    }
    if let Some(issued) = &outcome.issued {
        // Kubernetes CSRs carry the chain only; there is no CA field.
        status["certificate"] = ssa::bytes(&issued.chain_pem);
    }
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": { "name": view.name },
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::controllers::request::fixtures::{csr_pem, names, set, status_view};
    use crate::pki::Issued;

    #[test]
    fn csr_signer_names() {
        let (ns, cl) = names();
        let t = signer_target("democlusterissuers.demo.certbridge.io/ca", &ns, &cl).unwrap().unwrap();
        assert_eq!(t.name, "ca");
        assert_eq!(t.scope, IssuerScope::Cluster);
        let e = signer_target("demoissuers.demo.certbridge.io/ca", &ns, &cl).unwrap_err();
        assert!(e.contains("namespaced issuers are not supported"), "{e}");
        assert_eq!(signer_target("kubernetes.io/kube-apiserver-client", &ns, &cl).unwrap(), None);
        assert_eq!(signer_target("democlusterissuers.demo.certbridge.io/a/b", &ns, &cl).unwrap(), None);
        assert_eq!(signer_target("democlusterissuers.demo.certbridge.io/", &ns, &cl).unwrap(), None);
    }

    #[test]
    fn csr_view_uses_annotations_for_duration_and_ca() {
        use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
        let (pem, _) = csr_pem(|_| {});
        let mut csr = CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: k8s_openapi::ByteString(pem.into_bytes()),
                signer_name: "democlusterissuers.demo.certbridge.io/ca".into(),
                expiration_seconds: Some(3333),
                usages: Some(vec!["digital signature".into(), "key encipherment".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        csr.metadata.name = Some("c".into());
        let v = csr.view();
        let req = v.sign_request().unwrap();
        assert_eq!(req.duration, Duration::from_secs(3333));
        assert!(!req.is_ca);
        csr.metadata.annotations = Some(
            [
                (duration::CSR_DURATION_ANNOTATION.to_owned(), "896h".to_owned()),
                (duration::CSR_IS_CA_ANNOTATION.to_owned(), "true".to_owned()),
            ]
            .into(),
        );
        let req = csr.view().sign_request().unwrap();
        assert_eq!(req.duration, Duration::from_secs(896 * 3600));
        assert!(req.is_ca && req.key_usages.contains(&crate::KeyUsage::CertSign));
        assert_eq!(req.object.kind, RequestKind::CertificateSigningRequest);
    }

    #[test]
    fn csr_body_never_writes_a_ca() {
        let now: Timestamp = "2025-06-01T00:00:00Z".parse().unwrap();
        let out = Outcome {
            issued: Some(Issued { chain_pem: "LEAF".into(), ca_pem: Some("CA".into()) }),
            ..Default::default()
        };
        let body = status_body(&status_view(RequestKind::CertificateSigningRequest), &out, now);
        assert_eq!(body["status"], json!({"certificate": "TEVBRg=="}));
        let out = Outcome { set: vec![set("Failed", "True", "Failed")], ..Default::default() };
        let body = status_body(&status_view(RequestKind::CertificateSigningRequest), &out, now);
        assert_eq!(body["status"]["conditions"][0]["lastUpdateTime"], "2025-06-01T00:00:00Z");
        assert!(body["metadata"].get("namespace").is_none());
    }
}
