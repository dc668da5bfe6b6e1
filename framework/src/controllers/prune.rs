//! What the caches keep (issue 16): every watched object is pruned to what the decisions read
//! before it enters a reflector store, because a cluster keeps thousands of finished requests
//! (cert-manager keeps old ones unless `revisionHistoryLimit` is set) and each one used to cost
//! about 11 KiB in full: managedFields, the CSR PEM, the issued chain and the CA.
//!
//! * Requests (both APIs): managedFields, labels, owner references and finalizers (but the
//!   framework's own revoke-on-delete finalizer) go;
//!   `status.certificate` becomes a one-byte marker (only *whether* there is one matters) and
//!   `status.ca` goes. The CSR (`spec.request`) is kept only while the request is approved and not
//!   finished — the requests about to be signed, whose approval event brought it anyway — so the
//!   common path costs no extra read; a pass that finds it missing (a copy cached before approval)
//!   reads the request afresh from the API server before signing (see [`needs_full`]).
//! * Finished requests (CertificateRequest Ready, Failed, Denied or InvalidRequest; CSR issued,
//!   Failed or Denied) also lose their annotations, condition messages and every spec field but
//!   the issuer reference / signer name: nothing will act on them again unless they change, and a
//!   change arrives as a full object that is pruned anew.
//! * Issuers: managedFields go (the spec and status are what the decisions read).

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;

use crate::api::CertificateRequest;
use crate::controllers::view::RequestView;

/// What a pruned `status.certificate` holds: "there is a certificate".
const CERTIFICATE_MARKER: &[u8] = b"-";

/// An object that can be cut down to what the decisions read.
pub(crate) trait Prune {
    /// Drops what no decision reads; idempotent.
    fn prune(&mut self);
}

/// Metadata no decision reads on any watched object.
fn prune_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.labels = None;
    meta.owner_references = None;
    // Except the request controller's own (see `request::revoke`), which it reads from the cache.
    meta.finalizers = meta
        .finalizers
        .take()
        .map(|f| f.into_iter().filter(|f| f.ends_with(REVOKE_FINALIZER_SUFFIX)).collect::<Vec<_>>())
        .filter(|f| !f.is_empty());
}

/// The end of the revoke-on-delete finalizer's name, `<group>/revoke-on-delete`.
const REVOKE_FINALIZER_SUFFIX: &str = "/revoke-on-delete";

fn marker(certificate: &mut Option<ByteString>) {
    if certificate.as_ref().is_some_and(|c| !c.0.is_empty()) {
        *certificate = Some(ByteString(CERTIFICATE_MARKER.to_vec()));
    }
}

impl Prune for CertificateRequest {
    fn prune(&mut self) {
        prune_meta(&mut self.metadata);
        let Some(status) = self.status.as_mut() else {
            self.spec.request = ByteString(Vec::new());
            return;
        };
        marker(&mut status.certificate);
        status.ca = None;
        let is = |t: &str| status.conditions.iter().any(|c| c.type_ == t && c.status == "True");
        let finished = is("InvalidRequest")
            || status.conditions.iter().any(|c| {
                let reason = c.reason.as_deref().unwrap_or_default();
                c.type_ == "Ready"
                    && (c.status == "True" || (c.status == "False" && matches!(reason, "Failed" | "Denied")))
            });
        if finished || !is("Approved") || is("Denied") {
            self.spec.request = ByteString(Vec::new());
        }
        if finished {
            for c in &mut status.conditions {
                c.message = None;
            }
            self.metadata.annotations = None;
            let issuer_ref = std::mem::take(&mut self.spec.issuer_ref);
            self.spec = crate::api::CertificateRequestSpec { issuer_ref, ..Default::default() };
        }
    }
}

impl Prune for CertificateSigningRequest {
    fn prune(&mut self) {
        prune_meta(&mut self.metadata);
        let Some(status) = self.status.as_mut() else {
            self.spec.request = ByteString(Vec::new());
            return;
        };
        marker(&mut status.certificate);
        let conditions = status.conditions.as_deref().unwrap_or_default();
        let is = |t: &str| conditions.iter().any(|c| c.type_ == t && c.status == "True");
        let finished = status.certificate.is_some() || is("Failed") || is("Denied");
        if finished || !is("Approved") {
            self.spec.request = ByteString(Vec::new());
        }
        if finished {
            for c in status.conditions.iter_mut().flatten() {
                c.message = None;
            }
            self.metadata.annotations = None;
            let signer_name = std::mem::take(&mut self.spec.signer_name);
            self.spec =
                k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec { signer_name, ..Default::default() };
        }
    }
}

impl Prune for DynamicObject {
    fn prune(&mut self) {
        self.metadata.managed_fields = None;
    }
}

/// Whether a pass must read the request afresh before going on: its cached copy was pruned of
/// the CSR, which signing (and validating) needs.
pub(crate) fn needs_full(view: &RequestView) -> bool {
    view.csr_pem.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CertificateRequestCondition, CertificateRequestSpec, CertificateRequestStatus, IssuerRef};
    use crate::controllers::request::api::RequestApi;

    fn cr(conditions: &[(&str, &str, &str)], certificate: bool) -> CertificateRequest {
        let mut cr = CertificateRequest::new(
            "r",
            CertificateRequestSpec {
                issuer_ref: IssuerRef { name: "ca".into(), kind: Some("K".into()), group: Some("g".into()) },
                request: ByteString(b"-----BEGIN CERTIFICATE REQUEST-----".to_vec()),
                usages: vec!["server auth".into()],
                username: Some("alice".into()),
                ..Default::default()
            },
        );
        cr.metadata.namespace = Some("ns".into());
        cr.metadata.annotations = Some([("a".to_owned(), "b".to_owned())].into());
        cr.metadata.managed_fields = Some(vec![Default::default()]);
        cr.metadata.labels = Some([("l".to_owned(), "v".to_owned())].into());
        cr.status = Some(CertificateRequestStatus {
            conditions: conditions
                .iter()
                .map(|(t, s, r)| CertificateRequestCondition {
                    type_: (*t).into(),
                    status: (*s).into(),
                    reason: Some((*r).into()),
                    message: Some("m".into()),
                    ..Default::default()
                })
                .collect(),
            certificate: certificate.then(|| ByteString(b"LEAF".to_vec())),
            ca: certificate.then(|| ByteString(b"CA".to_vec())),
            failure_time: None,
        });
        cr
    }

    #[test]
    fn pending_request_keeps_what_the_gate_and_the_fingerprint_read() {
        let mut c = cr(&[("Approved", "True", "cert-manager.io"), ("Ready", "False", "Pending")], false);
        c.metadata.finalizers = Some(vec!["other.io/keep".into(), "demo.certbridge.io/revoke-on-delete".into()]);
        let before = c.view();
        c.prune();
        c.prune();
        let after = c.view();
        assert!(c.metadata.managed_fields.is_none() && c.metadata.labels.is_none());
        assert_eq!(
            c.metadata.finalizers,
            Some(vec!["demo.certbridge.io/revoke-on-delete".into()]),
            "the request controller reads its own finalizer from the cache"
        );
        let mut other = cr(&[], false);
        other.metadata.finalizers = Some(vec!["other.io/keep".into()]);
        other.prune();
        assert_eq!(other.metadata.finalizers, None);
        assert!(!needs_full(&after), "approved and unfinished: about to be signed, the CSR stays");
        assert_eq!(after.csr_pem, before.csr_pem);
        let mut unapproved = cr(&[], false);
        unapproved.prune();
        assert!(needs_full(&unapproved.view()), "not approved: the CSR goes");
        assert_eq!(after.conditions, before.conditions);
        assert_eq!(after.annotations, before.annotations);
        assert_eq!((&after.usages, &after.requester.username), (&before.usages, &before.requester.username));
        assert_eq!(
            crate::controllers::request::pass::fingerprint(&after),
            crate::controllers::request::pass::fingerprint(&before)
        );
    }

    #[test]
    fn finished_request_keeps_its_issuer_and_conditions_only() {
        for conds in [
            &[("Approved", "True", "a"), ("Ready", "True", "Issued")][..],
            &[("Ready", "False", "Failed")][..],
            &[("Denied", "True", "d"), ("Ready", "False", "Denied")][..],
            &[("InvalidRequest", "True", "x")][..],
        ] {
            let full = cr(conds, conds[0].0 == "Approved");
            let mut c = full.clone();
            c.prune();
            let (before, after) = (full.view(), c.view());
            assert_eq!(c.spec.issuer_ref, full.spec.issuer_ref);
            assert!(c.spec.usages.is_empty() && c.metadata.annotations.is_none());
            assert_eq!(after.has_certificate, before.has_certificate, "{conds:?}");
            assert!(c.status.as_ref().unwrap().ca.is_none());
            let types = |v: &RequestView| {
                v.conditions.iter().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone())).collect::<Vec<_>>()
            };
            assert_eq!(types(&after), types(&before));
            let owner = "g";
            assert_eq!(
                crate::controllers::decision::request::gate(&after, owner),
                crate::controllers::decision::request::gate(&before, owner),
                "{conds:?}"
            );
        }
    }

    #[test]
    fn csr_keeps_its_signer_and_the_certificate_marker() {
        use k8s_openapi::api::certificates::v1::{
            CertificateSigningRequestCondition, CertificateSigningRequestSpec, CertificateSigningRequestStatus,
        };
        let mut csr = CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(b"PEM".to_vec()),
                signer_name: "x.g/ca".into(),
                ..Default::default()
            },
            status: Some(CertificateSigningRequestStatus {
                certificate: Some(ByteString(b"LEAF".to_vec())),
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    message: Some("m".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        };
        let before = csr.view();
        csr.prune();
        let after = csr.view();
        assert_eq!(csr.spec.signer_name, "x.g/ca");
        assert!(after.has_certificate && csr.spec.request.0.is_empty());
        assert_eq!(
            crate::controllers::decision::request::gate(&after, "g"),
            crate::controllers::decision::request::gate(&before, "g")
        );
    }
}
