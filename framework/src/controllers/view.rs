//! One view of a request, whichever API it came from (issuer-lib's `request_objecthelper_*`):
//! a cert-manager `CertificateRequest` or a Kubernetes `CertificateSigningRequest` becomes a
//! [`RequestView`] that the decision logic reads and that builds the adapter's [`SignRequest`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::jiff::Timestamp;

use crate::api::CertificateRequest;
use crate::controllers::duration;
use crate::issuer::{IssuerScope, KindNames};
use crate::pki::{Csr, CsrLimits};
use crate::request::{RequestKind, RequestObject, Requester, SignRequest, resolve_usages};

/// Which API a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// cert-manager.io/v1 CertificateRequest.
    CertificateRequest,
    /// certificates.k8s.io/v1 CertificateSigningRequest.
    Csr,
}

impl Flavor {
    /// The kind name used in messages.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Flavor::CertificateRequest => "CertificateRequest",
            Flavor::Csr => "CertificateSigningRequest",
        }
    }
}

/// A condition as read from an object (either API).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Cond {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: Option<Timestamp>,
}

/// The issuer a request names, once it matched one of our kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct IssuerTarget {
    pub scope: IssuerScope,
    pub name: String,
    /// The issuer's namespace (namespaced kind only).
    pub namespace: Option<String>,
}

/// The normalized request.
#[derive(Debug, Clone)]
pub(crate) struct RequestView {
    pub flavor: Flavor,
    pub name: String,
    pub namespace: Option<String>,
    pub uid: String,
    pub created: Option<Timestamp>,
    pub annotations: BTreeMap<String, String>,
    pub conditions: Vec<Cond>,
    /// CSR: `status.certificate` is set; CR: `status.certificate` is set.
    pub has_certificate: bool,
    pub csr_pem: Vec<u8>,
    pub duration: Result<Duration, String>,
    pub is_ca: bool,
    pub usages: Vec<String>,
    pub requester: Requester,
}

impl RequestView {
    /// The view of a cert-manager CertificateRequest.
    pub(crate) fn from_certificate_request(cr: &CertificateRequest) -> Self {
        let status = cr.status.clone().unwrap_or_default();
        RequestView {
            flavor: Flavor::CertificateRequest,
            name: cr.metadata.name.clone().unwrap_or_default(),
            namespace: cr.metadata.namespace.clone(),
            uid: cr.metadata.uid.clone().unwrap_or_default(),
            created: cr.metadata.creation_timestamp.as_ref().map(|t| t.0),
            annotations: cr.metadata.annotations.clone().unwrap_or_default(),
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
            csr_pem: cr.spec.request.0.clone(),
            duration: duration::certificate_request_duration(cr.spec.duration.as_deref()),
            is_ca: cr.spec.is_ca,
            usages: cr.spec.usages.clone(),
            requester: Requester {
                username: cr.spec.username.clone().unwrap_or_default(),
                groups: cr.spec.groups.clone(),
                uid: cr.spec.uid.clone().unwrap_or_default(),
                extra: cr.spec.extra.clone(),
            },
        }
    }

    /// The view of a Kubernetes CertificateSigningRequest.
    pub(crate) fn from_csr(csr: &CertificateSigningRequest) -> Self {
        let status = csr.status.clone().unwrap_or_default();
        let annotations = csr.metadata.annotations.clone().unwrap_or_default();
        RequestView {
            flavor: Flavor::Csr,
            name: csr.metadata.name.clone().unwrap_or_default(),
            namespace: None,
            uid: csr.metadata.uid.clone().unwrap_or_default(),
            created: csr.metadata.creation_timestamp.as_ref().map(|t| t.0),
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
            csr_pem: csr.spec.request.0.clone(),
            duration: duration::csr_duration(&annotations, csr.spec.expiration_seconds),
            is_ca: duration::csr_is_ca(&annotations),
            usages: csr.spec.usages.clone().unwrap_or_default(),
            requester: Requester {
                username: csr.spec.username.clone().unwrap_or_default(),
                groups: csr.spec.groups.clone().unwrap_or_default(),
                uid: csr.spec.uid.clone().unwrap_or_default(),
                extra: csr.spec.extra.clone().unwrap_or_default(),
            },
            annotations,
        }
    }

    /// The condition of type `t`.
    pub(crate) fn condition(&self, t: &str) -> Option<&Cond> {
        self.conditions.iter().find(|c| c.type_ == t)
    }

    /// Whether condition `t` is `True`.
    pub(crate) fn is_true(&self, t: &str) -> bool {
        self.condition(t).is_some_and(|c| c.status == "True")
    }

    /// `namespace/name` or `name`.
    pub(crate) fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The per-request state map stored in annotations `state.<group>/<key>`.
    pub(crate) fn state(&self, group: &str) -> BTreeMap<String, String> {
        let prefix = state_prefix(group);
        self.annotations
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|key| (key.to_owned(), v.clone())))
            .collect()
    }

    /// [`RequestView::sign_request_within`] the default limits.
    #[cfg(test)]
    pub(crate) fn sign_request(&self) -> Result<SignRequest, String> {
        self.sign_request_within(&CsrLimits::default())
    }

    /// The adapter's request: CSR parsed within `limits` (the `--csr-max-*` flags) and verified,
    /// usage defaults applied and checked against what the CSR embeds. The error says what is
    /// wrong, fit for a Failed condition.
    pub(crate) fn sign_request_within(&self, limits: &CsrLimits) -> Result<SignRequest, String> {
        let duration = self.duration.clone()?;
        let csr_pem = String::from_utf8(self.csr_pem.clone())
            .map_err(|_| "spec.request is not PEM text: the CSR is not valid PEM".to_owned())?;
        let csr = Csr::from_pem_with_limits(&csr_pem, limits)?;
        let (key_usages, ext_key_usages) = resolve_usages(&self.usages, self.is_ca)?;
        csr.check_consistent(self.is_ca, &key_usages, &ext_key_usages)?;
        Ok(SignRequest {
            csr_pem,
            csr,
            duration,
            is_ca: self.is_ca,
            key_usages,
            ext_key_usages,
            requester: self.requester.clone(),
            object: RequestObject {
                kind: match self.flavor {
                    Flavor::CertificateRequest => RequestKind::CertificateRequest,
                    Flavor::Csr => RequestKind::CertificateSigningRequest,
                },
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                uid: self.uid.clone(),
                annotations: self.annotations.clone(),
            },
        })
    }
}

/// `state.<group>/`, the annotation prefix of the per-request state.
pub(crate) fn state_prefix(group: &str) -> String {
    format!("state.{group}/")
}

/// The issuer a CertificateRequest names, if it is one of ours (issuer-lib's `matchIssuerType`:
/// same group, and the kind is empty or one of our two; an empty kind means the namespaced one).
pub(crate) fn certificate_request_target(
    cr: &CertificateRequest,
    namespaced: &KindNames,
    cluster: &KindNames,
) -> Option<IssuerTarget> {
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

/// The cluster issuer a Kubernetes CSR names with `<plural>.<group>/<name>`. `Err` explains why
/// a signer name that looks like ours is not served (namespaced kinds); `Ok(None)` is foreign.
pub(crate) fn csr_target(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CertificateRequestSpec, IssuerRef};

    fn names() -> (KindNames, KindNames) {
        let ns = KindNames {
            group: "demo.certbridge.io",
            kind: "DemoIssuer".into(),
            plural: "demoissuers".into(),
            scope: IssuerScope::Namespaced,
        };
        let cl = KindNames {
            group: "demo.certbridge.io",
            kind: "DemoClusterIssuer".into(),
            plural: "democlusterissuers".into(),
            scope: IssuerScope::Cluster,
        };
        (ns, cl)
    }

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
        let t = certificate_request_target(&cr(Some("DemoIssuer"), g), &ns, &cl).unwrap();
        assert_eq!(
            t,
            IssuerTarget { scope: IssuerScope::Namespaced, name: "ca".into(), namespace: Some("team".into()) }
        );
        let t = certificate_request_target(&cr(Some("DemoClusterIssuer"), g), &ns, &cl).unwrap();
        assert_eq!(t, IssuerTarget { scope: IssuerScope::Cluster, name: "ca".into(), namespace: None });
        assert_eq!(certificate_request_target(&cr(None, g), &ns, &cl).unwrap().scope, IssuerScope::Namespaced);
        // issuer-ref-unknown-group / issuer-ref-unknown-kind: foreign, ignored.
        assert!(certificate_request_target(&cr(Some("DemoIssuer"), Some("cert-manager.io")), &ns, &cl).is_none());
        assert!(certificate_request_target(&cr(Some("DemoIssuer"), None), &ns, &cl).is_none());
        assert!(certificate_request_target(&cr(Some("Issuer"), g), &ns, &cl).is_none());
    }

    #[test]
    fn csr_signer_names() {
        let (ns, cl) = names();
        let t = csr_target("democlusterissuers.demo.certbridge.io/ca", &ns, &cl).unwrap().unwrap();
        assert_eq!(t.name, "ca");
        assert_eq!(t.scope, IssuerScope::Cluster);
        let e = csr_target("demoissuers.demo.certbridge.io/ca", &ns, &cl).unwrap_err();
        assert!(e.contains("namespaced issuers are not supported"), "{e}");
        assert_eq!(csr_target("kubernetes.io/kube-apiserver-client", &ns, &cl).unwrap(), None);
        assert_eq!(csr_target("democlusterissuers.demo.certbridge.io/a/b", &ns, &cl).unwrap(), None);
        assert_eq!(csr_target("democlusterissuers.demo.certbridge.io/", &ns, &cl).unwrap(), None);
    }

    fn csr_pem(f: impl FnOnce(&mut rcgen::CertificateParams)) -> (String, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".into()]).unwrap();
        f(&mut params);
        (params.serialize_request(&key).unwrap().pem().unwrap(), key)
    }

    fn cr_with(pem: &str, usages: &[&str], is_ca: bool, duration: Option<&str>) -> RequestView {
        let (ns, cl) = names();
        let _ = (ns, cl);
        let mut c = cr(Some("DemoIssuer"), Some("demo.certbridge.io"));
        c.spec.request = k8s_openapi::ByteString(pem.as_bytes().to_vec());
        c.spec.usages = usages.iter().map(|u| (*u).to_owned()).collect();
        c.spec.is_ca = is_ca;
        c.spec.duration = duration.map(Into::into);
        c.spec.username = Some("alice".into());
        c.metadata.annotations = Some([("state.demo.certbridge.io/order".to_owned(), "42".to_owned())].into());
        RequestView::from_certificate_request(&c)
    }

    #[test]
    fn sign_request_applies_defaults_and_validates() {
        let (pem, _) = csr_pem(|_| {});
        let v = cr_with(&pem, &[], false, Some("24h"));
        let req = v.sign_request().unwrap();
        assert_eq!(req.duration, Duration::from_secs(24 * 3600));
        assert_eq!(req.key_usages, vec![crate::KeyUsage::DigitalSignature, crate::KeyUsage::KeyEncipherment]);
        assert_eq!(req.requester.username, "alice");
        assert_eq!(req.object.kind, RequestKind::CertificateRequest);
        assert_eq!(req.object.namespace.as_deref(), Some("team"));
        assert_eq!(v.state("demo.certbridge.io"), BTreeMap::from([("order".to_owned(), "42".to_owned())]));

        // Bad PEM, unknown usage, bad duration, embedded usages that contradict the request.
        let e = cr_with("not a csr", &[], false, None).sign_request().unwrap_err();
        assert!(e.contains("not valid PEM"), "{e}");
        let e = cr_with(&pem, &["teleport"], false, None).sign_request().unwrap_err();
        assert!(e.contains("\"teleport\""), "{e}");
        let e = cr_with(&pem, &[], false, Some("forever")).sign_request().unwrap_err();
        assert!(e.starts_with("spec.duration"), "{e}");
        let (pem_ku, _) = csr_pem(|p| {
            p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
            p.is_ca = rcgen::IsCa::ExplicitNoCa;
        });
        let e = cr_with(&pem_ku, &[], false, None).sign_request().unwrap_err();
        assert!(e.contains("KeyUsages"), "{e}");
        let e = cr_with(&pem_ku, &["digital signature"], true, None).sign_request().unwrap_err();
        assert!(e.contains("isCA"), "{e}");
        // Tampered: flip a byte of the SAN.
        let mut der = pem::parse(&pem).unwrap().into_contents();
        let pos = der.windows(5).position(|w| w == b"a.exa").unwrap();
        der[pos] = b'b';
        let tampered = crate::pki::to_pem(&der).replace("CERTIFICATE", "CERTIFICATE REQUEST");
        let e = cr_with(&tampered, &[], false, None).sign_request().unwrap_err();
        assert!(e.contains("signature does not verify"), "{e}");
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
        let v = RequestView::from_csr(&csr);
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
        let req = RequestView::from_csr(&csr).sign_request().unwrap();
        assert_eq!(req.duration, Duration::from_secs(896 * 3600));
        assert!(req.is_ca && req.key_usages.contains(&crate::KeyUsage::CertSign));
        assert_eq!(req.object.kind, RequestKind::CertificateSigningRequest);
    }

    #[test]
    fn issued_leaf_must_carry_the_csr_key() {
        use crate::controllers::decision::verify_issued;
        let (pem, key) = csr_pem(|_| {});
        let req = cr_with(&pem, &[], false, None).sign_request().unwrap();
        let ca = crate::testing::TestCa::new(&crate::KeyKind::EcP256).unwrap();
        let good = ca.sign_key(&key, &["a.example.com"]).unwrap();
        assert!(verify_issued(&req, crate::Issued::from_pem_bundle(&good).unwrap()).is_ok());
        let (bad, _) = ca.leaf(&crate::KeyKind::EcP256, &["a.example.com"]).unwrap();
        let e = verify_issued(&req, crate::Issued::from_pem_bundle(&bad).unwrap()).unwrap_err();
        assert!(e.reaction == crate::Reaction::Permanent && e.message.contains("does not match the CSR's public key"));
    }
}
