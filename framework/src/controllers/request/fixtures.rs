//! Fixtures the request-API tests share: our two issuer kinds' names, a CSR, and a view with
//! the conditions a status body is built against.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::controllers::decision::SetCond;
use crate::controllers::view::{Cond, RequestView};
use crate::issuer::{IssuerScope, KindNames};
use crate::request::{RequestKind, Requester};

/// The namespaced and cluster issuer kinds of the demo adapter.
pub(crate) fn names() -> (KindNames, KindNames) {
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

/// A PEM CSR for `a.example.com` with `f` applied to its parameters, and its key.
pub(crate) fn csr_pem(f: impl FnOnce(&mut rcgen::CertificateParams)) -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["a.example.com".into()]).unwrap();
    f(&mut params);
    (params.serialize_request(&key).unwrap().pem().unwrap(), key)
}

/// A request that is Approved and Ready=False/Pending (both transitioned 2024-01-01).
pub(crate) fn status_view(kind: RequestKind) -> RequestView {
    RequestView {
        kind,
        name: "r".into(),
        namespace: (kind == RequestKind::CertificateRequest).then(|| "ns".into()),
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

/// A condition to set, with message "m".
pub(crate) fn set(t: &str, s: &str, r: &str) -> SetCond {
    SetCond { type_: t.into(), status: s.into(), reason: r.into(), message: "m".into() }
}
