//! Fixtures shared by the tests and the benchmark (`benches/issuance.rs` includes this file): a
//! simulator, issuers for both auth modes, and requests.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use certbridge::{Issuer, IssuerScope, KeyKind, Resources, SignRequest};
use certbridge_ejbca::sim::{EjbcaSim, SimOptions};
use certbridge_ejbca::{CaBundleRef, EjbcaIssuerSpec};

pub const NS: &str = "team-a";

pub async fn sim() -> EjbcaSim {
    EjbcaSim::start(SimOptions::default()).await.expect("simulator starts")
}

pub fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let data: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    certbridge::testing::secret(NS, name, None, &data)
}

pub fn config_map(name: &str, key: &str, value: &str) -> ConfigMap {
    certbridge::testing::config_map(NS, name, &[(key, value)])
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Mtls,
    OAuth,
}

/// Resources with the credentials Secret `creds` for `mode` and the CA bundle ConfigMap `ejbca-ca`.
pub fn resources(sim: &EjbcaSim, mode: Mode) -> Resources {
    let creds = match mode {
        Mode::Mtls => {
            let (cert, key) = sim.client_identity();
            secret("creds", &[("tls.crt", &cert), ("tls.key", &key)])
        }
        Mode::OAuth => {
            let (id, secret_value) = sim.oauth_client();
            secret(
                "creds",
                &[
                    ("tokenUrl", &sim.token_url()),
                    ("clientId", &id),
                    ("clientSecret", &secret_value),
                    ("scopes", "ejbca:enroll ejbca:read"),
                    ("audience", "ejbca"),
                ],
            )
        }
    };
    Resources::from_objects(NS, vec![creds], vec![config_map("ejbca-ca", "ca.crt", &sim.root_pem())])
}

pub fn spec(sim: &EjbcaSim) -> EjbcaIssuerSpec {
    EjbcaIssuerSpec {
        hostname: sim.host(),
        certificate_profile_name: "ENDUSER".into(),
        end_entity_profile_name: "EMPTY".into(),
        certificate_authority_name: "IssuingCA".into(),
        end_entity_name: None,
        ejbca_secret_name: "creds".into(),
        ca_bundle: Some(CaBundleRef {
            bundle: certbridge::CaBundle {
                config_map_ref: Some(certbridge::ConfigMapKeySelector {
                    name: "ejbca-ca".into(),
                    key: "ca.crt".into(),
                }),
                ..Default::default()
            },
            ..Default::default()
        }),
        request_timeout_seconds: Some(5),
        // The adapter and controller tests exercise every override; the tenant tests (security)
        // start from the real default, an empty list.
        allowed_overrides: [
            "certificateAuthorityName",
            "certificateProfileName",
            "endEntityProfileName",
            "endEntityName",
        ]
        .map(|name| certbridge::overrides::AllowedOverride { name: name.into(), values: vec![] })
        .to_vec(),
    }
}

pub fn issuer(spec: EjbcaIssuerSpec) -> Issuer<EjbcaIssuerSpec> {
    Issuer {
        name: "ejbca".into(),
        namespace: Some(NS.into()),
        scope: IssuerScope::Namespaced,
        uid: "uid-1".into(),
        generation: 1,
        annotations: BTreeMap::new(),
        spec,
    }
}

/// A CertificateRequest-shaped request for a fresh P-256 key with CN and DNS name `cn`.
pub fn request(cn: &str, annotations: &[(&str, &str)]) -> SignRequest {
    let (pem, _key) = certbridge::testing::generate_csr(&KeyKind::EcP256, &[cn]).unwrap();
    let mut r = SignRequest::from_csr_pem::<&str>(&pem, Duration::from_secs(7 * 86400), false, &[]).unwrap();
    r.object.kind = certbridge::RequestKind::CertificateRequest;
    r.object.name = format!("{cn}-1");
    r.object.namespace = Some(NS.into());
    r.object.annotations = annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    r
}
