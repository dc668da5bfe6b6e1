//! Fixtures shared by the tests and the benchmark (`benches/issuance.rs` includes this file): a
//! simulator, issuers for each auth mode, and requests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;

use certbridge::{Issuer, IssuerScope, KeyKind, Resources, SignRequest};
use certbridge_venafi::VenafiIssuerSpec;
use certbridge_venafi::sim::{SimOptions, VenafiSim};
use certbridge_venafi::spec::{CloudServiceAccount, CloudSpec, LocalObjectReference, SecretKeySelector, TppSpec};

pub const NS: &str = "team-a";
pub const ZONE: &str = "Certificates\\Kubernetes";
pub const CLOUD_ZONE: &str = "Kubernetes\\Default";

pub async fn sim() -> VenafiSim {
    VenafiSim::start(SimOptions::default()).await.expect("simulator starts")
}

pub fn secret_in(ns: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    let data: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    certbridge::testing::secret(ns, name, None, &data)
}

/// How the issuer authenticates.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Auth {
    /// TPP `username` + `password`.
    Password,
    /// TPP `access-token`.
    AccessToken,
    /// TPP `refresh-token` + `client-id`.
    RefreshToken,
    /// Cloud `tppl-api-key`.
    ApiKey,
    /// Cloud service-account JWT.
    ServiceAccount,
}

impl Auth {
    pub fn is_cloud(self) -> bool {
        matches!(self, Auth::ApiKey | Auth::ServiceAccount)
    }
}

/// The credentials Secret `creds` and CA Secret `venafi-ca` for `auth`, in namespace `ns`.
pub fn secrets(sim: &VenafiSim, auth: Auth, ns: &str) -> Vec<Secret> {
    let o = sim.options();
    let creds = match auth {
        Auth::Password => secret_in(ns, "creds", &[("username", &o.username), ("password", &o.password)]),
        Auth::AccessToken => secret_in(ns, "creds", &[("access-token", &sim.mint_tokens().0)]),
        Auth::RefreshToken => {
            secret_in(ns, "creds", &[("refresh-token", &sim.mint_tokens().1), ("client-id", "certbridge")])
        }
        Auth::ApiKey => secret_in(ns, "creds", &[("api-key", &o.api_key)]),
        Auth::ServiceAccount => secret_in(ns, "creds", &[("jwt", &o.jwt)]),
    };
    vec![creds, secret_in(ns, "venafi-ca", &[("ca.crt", &sim.root_pem())])]
}

pub fn resources(sim: &VenafiSim, auth: Auth) -> Resources {
    Resources::from_objects(NS, secrets(sim, auth, NS), vec![])
}

pub fn spec(sim: &VenafiSim, auth: Auth) -> VenafiIssuerSpec {
    let ca = Some(SecretKeySelector { name: "venafi-ca".into(), key: Some("ca.crt".into()) });
    let (zone, tpp, cloud) = if auth.is_cloud() {
        let (api, sa) = match auth {
            Auth::ApiKey => (Some(SecretKeySelector { name: "creds".into(), key: None }), None),
            _ => (
                None,
                Some(CloudServiceAccount {
                    tenant_id: sim.options().tenant.clone(),
                    jwt_secret_ref: SecretKeySelector { name: "creds".into(), key: Some("jwt".into()) },
                }),
            ),
        };
        let cloud = CloudSpec {
            url: Some(sim.cloud_url()),
            api_token_secret_ref: api,
            service_account: sa,
            ca_bundle_secret_ref: ca,
        };
        (CLOUD_ZONE, None, Some(cloud))
    } else {
        let tpp = TppSpec {
            url: sim.tpp_url(),
            credentials_ref: LocalObjectReference { name: "creds".into() },
            ca_bundle: None,
            ca_bundle_secret_ref: ca,
            persist_refreshed_token: None,
        };
        (ZONE, Some(tpp), None)
    };
    VenafiIssuerSpec {
        zone: zone.into(),
        tpp,
        cloud,
        custom_fields: vec![],
        allowed_overrides: vec![],
        retrieve_interval: Some("1s".into()),
        max_pending_time: None,
        request_timeout_seconds: Some(5),
    }
}

pub fn issuer(spec: VenafiIssuerSpec) -> Issuer<VenafiIssuerSpec> {
    Issuer {
        name: "venafi".into(),
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
