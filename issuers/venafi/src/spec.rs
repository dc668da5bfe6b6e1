//! The issuer spec shared by `VenafiIssuer` and `VenafiClusterIssuer` (group `venafi.certbridge.io`).
//!
//! The fields of cert-manager's `spec.venafi` come first, with the same names and shapes (`zone`,
//! `tpp {url, credentialsRef, caBundle, caBundleSecretRef}`, `cloud {url, apiTokenSecretRef}`), so
//! an Issuer moves over by changing its `apiVersion` and `kind` and un-nesting `venafi:`. What
//! certbridge adds is optional and named after what it does (pickup timing, issuer-level custom
//! fields, which request annotations may override them, persisting a rotated refresh token).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use certbridge::IssuerSpec;
pub use certbridge::overrides::AllowedOverride;

/// The API group of the Venafi issuer kinds and of the request annotations.
pub const GROUP: &str = "venafi.certbridge.io";

/// The annotation (issuer or request) holding custom fields in cert-manager's JSON shape.
pub const CUSTOM_FIELDS_ANNOTATION: &str = "venafi.certbridge.io/custom-fields";
/// The key under [`GROUP`] of [`CUSTOM_FIELDS_ANNOTATION`], as named in `allowedOverrides`.
pub const CUSTOM_FIELDS_KEY: &str = "custom-fields";

/// Default timeout of one HTTP call, in seconds.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 30;
/// Default longest wait between two pickup attempts of a pending certificate.
pub const DEFAULT_RETRIEVE_INTERVAL: Duration = Duration::from_secs(300);
/// Default longest time a request may stay pending at Venafi before it is Failed.
pub const DEFAULT_MAX_PENDING: Duration = Duration::from_secs(24 * 3600);

/// How to reach one Venafi zone (TPP or TLS Protect Cloud) and what to send with each request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VenafiIssuerSpec {
    /// The Venafi zone: a TPP policy folder (`Certificates\Kubernetes`, with or without the
    /// `\VED\Policy\` prefix) or a TLS Protect Cloud `<Application name>\<Issuing template alias>`.
    pub zone: String,
    /// Trust Protection Platform (on premises). Set exactly one of `tpp` and `cloud`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpp: Option<TppSpec>,
    /// TLS Protect Cloud (Venafi as a Service). Set exactly one of `tpp` and `cloud`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudSpec>,
    /// certbridge: custom fields sent with every request of this issuer (merged with the issuer
    /// annotation `venafi.certbridge.io/custom-fields`; a request's own fields win per name when
    /// `allowedOverrides` lets them). Only `Plain` fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_fields: Vec<CustomField>,
    /// certbridge: the request annotations (under `venafi.certbridge.io/`) this issuer honours.
    /// Default: none — a request annotation not listed is refused, naming it. The only one is
    /// `custom-fields`; its `values` are the custom field *names* a request may set (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_overrides: Vec<AllowedOverride>,
    /// certbridge: longest wait between two pickup attempts of a pending certificate (Go duration,
    /// e.g. `30s`, `5m`; default `5m`). Attempts start after 1 s and double up to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieve_interval: Option<String>,
    /// certbridge: how long a request may stay pending at Venafi (approval, slow CA) before it is
    /// Failed (Go duration; default `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_time: Option<String>,
    /// certbridge: timeout of one HTTP call, in seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_seconds: Option<u32>,
}

/// cert-manager's `spec.venafi.tpp`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TppSpec {
    /// The WebSDK URL, e.g. `https://tpp.example.com/vedsdk` (https only; a trailing `vedsdk` is optional).
    pub url: String,
    /// Secret with `access-token`, or `username` + `password`, or `refresh-token`; optional `client-id`
    /// (default `cert-manager.io`).
    pub credentials_ref: LocalObjectReference,
    /// Base64-encoded PEM bundle of the CAs of TPP's TLS certificate (cert-manager's `[]byte`).
    /// Not with `caBundleSecretRef`. Default: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// A Secret key holding that PEM bundle (key defaults to `ca.crt`). Not with `caBundle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeySelector>,
    /// certbridge: write a rotated refresh token back to `credentialsRef` (needs update rights on
    /// that Secret; default false: the rotated token lives in memory only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_refreshed_token: Option<bool>,
}

/// cert-manager's `spec.venafi.cloud`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudSpec {
    /// API base URL; the region follows from it: `https://api.venafi.cloud/` (default, US),
    /// `https://api.venafi.eu/`, `https://api.{au,uk,sg,ca}.venafi.cloud/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Secret key holding the API key (`tppl-api-key`; key defaults to `api-key`). Set this or
    /// `serviceAccount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_secret_ref: Option<SecretKeySelector>,
    /// certbridge: service-account authentication (a JWT exchanged for an access token at
    /// `v1/oauth2/v2.0/<tenantId>/token`). Set this or `apiTokenSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<CloudServiceAccount>,
    /// certbridge: a Secret key holding the PEM CAs to trust for the API (proxies, private
    /// deployments; key defaults to `ca.crt`). Default: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeySelector>,
}

/// Where the service-account JWT comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudServiceAccount {
    /// The TLS Protect Cloud tenant id (part of the token URL).
    pub tenant_id: String,
    /// A Secret key holding the JWT (the client assertion).
    pub jwt_secret_ref: SecretKeySelector,
}

/// A reference to an object by name in the issuer's namespace (the cluster resource namespace for
/// a cluster issuer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Object name.
    pub name: String,
}

/// One key of a Secret (cert-manager's `SecretKeySelector`: the key may be left out for a default):
/// the framework's shared type for such references (one schema across adapters).
pub use certbridge::SecretRef as SecretKeySelector;

/// A custom field, in cert-manager's shape (`{"name","value","type"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomField {
    /// The field's label as configured in Venafi.
    pub name: String,
    /// The value.
    pub value: String,
    /// `Plain` (or empty): the only type supported, as in cert-manager.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// Which Venafi product an issuer talks to, with its settings.
#[derive(Debug, Clone, Copy)]
pub enum Product<'a> {
    /// Trust Protection Platform.
    Tpp(&'a TppSpec),
    /// TLS Protect Cloud.
    Cloud(&'a CloudSpec),
}

impl VenafiIssuerSpec {
    /// The product this spec configures (after [`IssuerSpec::validate`], exactly one is set).
    pub fn product(&self) -> Result<Product<'_>, String> {
        match (&self.tpp, &self.cloud) {
            (Some(t), None) => Ok(Product::Tpp(t)),
            (None, Some(c)) => Ok(Product::Cloud(c)),
            (Some(_), Some(_)) => Err("spec sets both tpp and cloud: keep exactly one".into()),
            (None, None) => Err("spec sets neither tpp nor cloud: set one of them".into()),
        }
    }

    /// `retrieveInterval`, parsed.
    pub fn retrieve_interval(&self) -> Result<Duration, String> {
        duration_field("retrieveInterval", self.retrieve_interval.as_deref(), DEFAULT_RETRIEVE_INTERVAL)
    }

    /// `maxPendingTime`, parsed.
    pub fn max_pending_time(&self) -> Result<Duration, String> {
        duration_field("maxPendingTime", self.max_pending_time.as_deref(), DEFAULT_MAX_PENDING)
    }

    /// The HTTP timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.request_timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS).max(1)))
    }
}

fn duration_field(field: &str, value: Option<&str>, default: Duration) -> Result<Duration, String> {
    let Some(v) = value else { return Ok(default) };
    let d = humantime::parse_duration(v.trim())
        .map_err(|e| format!("spec.{field} {v:?} is not a duration ({e}): use e.g. 30s, 5m or 24h"))?;
    if d.is_zero() {
        return Err(format!("spec.{field} is zero: use a positive duration or remove it"));
    }
    Ok(d)
}

impl IssuerSpec for VenafiIssuerSpec {
    const GROUP: &'static str = GROUP;
    const NAME: &'static str = "Venafi";

    fn validate(&self) -> Result<(), String> {
        if self.zone.trim().is_empty() {
            return Err(
                "spec.zone is empty: set the TPP policy folder or the Cloud <Application>\\<template alias>".into()
            );
        }
        match self.product()? {
            Product::Tpp(t) => {
                crate::client::tpp_base_url(&t.url)?;
                if t.credentials_ref.name.trim().is_empty() {
                    return Err(
                        "spec.tpp.credentialsRef.name is empty: name the Secret with the TPP credentials".into()
                    );
                }
                if t.ca_bundle.is_some() && t.ca_bundle_secret_ref.is_some() {
                    return Err("spec.tpp sets both caBundle and caBundleSecretRef: keep exactly one".into());
                }
                if let Some(b) = &t.ca_bundle {
                    crate::client::decode_ca_bundle(b)?;
                }
                if let Some(r) = &t.ca_bundle_secret_ref
                    && r.name.trim().is_empty()
                {
                    return Err(
                        "spec.tpp.caBundleSecretRef.name is empty: name the Secret holding the CA bundle".into()
                    );
                }
            }
            Product::Cloud(c) => {
                crate::cloud::cloud_base_url(c.url.as_deref())?;
                match (&c.api_token_secret_ref, &c.service_account) {
                    (Some(_), Some(_)) => {
                        return Err(
                            "spec.cloud sets both apiTokenSecretRef and serviceAccount: keep exactly one".into()
                        );
                    }
                    (None, None) => {
                        return Err("spec.cloud sets neither apiTokenSecretRef nor serviceAccount: set one".into());
                    }
                    (Some(r), None) if r.name.trim().is_empty() => {
                        return Err(
                            "spec.cloud.apiTokenSecretRef.name is empty: name the Secret with the API key".into()
                        );
                    }
                    (None, Some(sa)) => {
                        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-';
                        if sa.tenant_id.is_empty() || !sa.tenant_id.chars().all(ok) {
                            return Err(format!(
                                "spec.cloud.serviceAccount.tenantId {:?} is not a tenant id: use the id shown in the service account's token URL",
                                sa.tenant_id
                            ));
                        }
                        if sa.jwt_secret_ref.name.trim().is_empty() {
                            return Err(
                                "spec.cloud.serviceAccount.jwtSecretRef.name is empty: name the Secret with the JWT"
                                    .into(),
                            );
                        }
                    }
                    _ => {}
                }
                crate::cloud::split_zone(&self.zone)?;
            }
        }
        crate::fields::check_issuer_fields(&self.custom_fields).map_err(|e| format!("spec.customFields: {e}"))?;
        certbridge::overrides::validate_allowed(&self.allowed_overrides, &[CUSTOM_FIELDS_KEY])?;
        self.retrieve_interval()?;
        self.max_pending_time()?;
        if self.request_timeout_seconds == Some(0) {
            return Err("spec.requestTimeoutSeconds is 0: use a positive number of seconds or remove it".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpp() -> VenafiIssuerSpec {
        serde_json::from_value(serde_json::json!({
            "zone": "Certificates\\Kubernetes",
            "tpp": {"url": "https://tpp.example.com/vedsdk", "credentialsRef": {"name": "tpp-creds"}},
        }))
        .unwrap()
    }

    #[test]
    fn cert_managers_spec_venafi_parses_unchanged() {
        // cert-manager's documented examples, copied from `spec.venafi`.
        let cloud: VenafiIssuerSpec = serde_json::from_value(serde_json::json!({
            "zone": "My Application\\My CIT",
            "cloud": {"apiTokenSecretRef": {"name": "vaas-secret", "key": "apikey"}},
        }))
        .unwrap();
        cloud.validate().unwrap();
        let t = tpp();
        t.validate().unwrap();
        let mut with_bundle = t.clone();
        with_bundle.tpp.as_mut().unwrap().ca_bundle = Some("bm90IHBlbQ==".into());
        assert!(with_bundle.validate().unwrap_err().contains("spec.tpp.caBundle"));
        let crd = certbridge::crd::crds_yaml::<VenafiIssuerSpec>();
        assert!(crd.contains("kind: VenafiClusterIssuer") && crd.contains("credentialsRef"));
    }

    #[test]
    fn validate_names_the_field() {
        let mut s = tpp();
        s.zone = " ".into();
        assert!(s.validate().unwrap_err().contains("spec.zone"));
        let mut s = tpp();
        s.cloud = Some(CloudSpec {
            url: None,
            api_token_secret_ref: None,
            service_account: None,
            ca_bundle_secret_ref: None,
        });
        assert!(s.validate().unwrap_err().contains("both tpp and cloud"));
        let mut s = tpp();
        s.tpp.as_mut().unwrap().url = "http://tpp.example.com/vedsdk".into();
        assert!(s.validate().unwrap_err().contains("spec.tpp.url"));
        let mut s = tpp();
        s.tpp.as_mut().unwrap().ca_bundle = Some("x".into());
        s.tpp.as_mut().unwrap().ca_bundle_secret_ref = Some(SecretKeySelector { name: "a".into(), key: None });
        assert!(s.validate().unwrap_err().contains("both caBundle and caBundleSecretRef"));
        let mut s = tpp();
        s.retrieve_interval = Some("soon".into());
        assert!(s.validate().unwrap_err().contains("spec.retrieveInterval"));
        let mut s = tpp();
        s.allowed_overrides = vec![AllowedOverride { name: "zone".into(), values: vec![] }];
        assert!(s.validate().unwrap_err().contains("spec.allowedOverrides[0].name"));
        let mut s = tpp();
        s.custom_fields = vec![CustomField { name: "Cost".into(), value: "1".into(), type_: Some("List".into()) }];
        assert!(s.validate().unwrap_err().contains("spec.customFields"));
        let mut s = tpp();
        s.tpp = None;
        s.cloud = Some(CloudSpec {
            url: Some("https://api.venafi.eu".into()),
            api_token_secret_ref: Some(SecretKeySelector { name: "k".into(), key: None }),
            service_account: None,
            ca_bundle_secret_ref: None,
        });
        s.zone = "Kubernetes".into();
        assert!(s.validate().unwrap_err().contains("<Application>"), "{:?}", s.validate());
        s.zone = "App\\cit".into();
        s.validate().unwrap();
    }
}
