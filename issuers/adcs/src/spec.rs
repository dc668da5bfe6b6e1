//! The issuer spec shared by `AdcsIssuer` and `AdcsClusterIssuer` (group `adcs.certbridge.io`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use certbridge::IssuerSpec;
pub use certbridge::overrides::AllowedOverride;

/// The API group of the AD CS issuer kinds, of the override annotation and of the request state.
pub const GROUP: &str = "adcs.certbridge.io";
/// The per-request template override annotation (`adcs.certbridge.io/template`).
pub const TEMPLATE_ANNOTATION: &str = "template";
/// Default interval between two polls of a pending request.
pub const DEFAULT_POLL_SECONDS: u32 = 60;
/// Default timeout of one call to certsrv (connect, TLS, authentication and answer).
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 30;

/// How to reach one AD CS certsrv web enrollment endpoint and what to ask it for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdcsIssuerSpec {
    /// certsrv base URL, e.g. `https://ca.example.com/certsrv` (https only).
    pub url: String,
    /// Certificate template name (the template's *name*, not its display name), e.g. `WebServer`.
    pub template: String,
    /// Per-request overrides this issuer honours (default none). The only one is `template`, set
    /// by the annotation `adcs.certbridge.io/template` on the request; `values` lists the
    /// templates a request may choose (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_overrides: Vec<AllowedOverride>,
    /// How to authenticate: set exactly one of `ntlm`, `kerberos`, `clientCertificate`, `basic`.
    pub auth: AuthSpec,
    /// CA bundle (PEM) that signs certsrv's TLS certificate. Default: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<certbridge::CaBundle>,
    /// Seconds between polls of a request waiting for a certificate manager (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_seconds: Option<u32>,
    /// Timeout of one call to certsrv in seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_seconds: Option<u32>,
}

/// Exactly one authentication method.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// NTLM (NTLMv2) with the username/password of a Secret, over one keep-alive connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntlm: Option<NtlmAuth>,
    /// TLS client certificate from a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`), for IIS
    /// client-certificate mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<SecretRef>,
    /// HTTP Basic with the `username`/`password` of a Secret (off by default on IIS; https only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<SecretRef>,
    /// Kerberos (HTTP Negotiate) with the `username`/`password` or `keytab` of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kerberos: Option<KerberosAuth>,
}

/// Kerberos credentials and where the KDCs are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KerberosAuth {
    /// Secret with `username` (`user` or `user@REALM`) and `password`, or `keytab` (the binary keytab
    /// file; `username` may be omitted when it holds one principal).
    pub secret_name: String,
    /// The Kerberos realm (upper case, e.g. `CORP.EXAMPLE.COM`).
    pub realm: String,
    /// KDC addresses `host[:port]` (TCP, port 88 by default), tried in order.
    pub kdc: Vec<String>,
    /// Service principal of certsrv. Default: `HTTP/<host of spec.url>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spn: Option<String>,
    /// Channel binding (EPA), as for NTLM (default `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_binding: Option<ChannelBindingMode>,
}

/// NTLM credentials and Extended Protection for Authentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NtlmAuth {
    /// Secret with `username` (`user`, `DOMAIN\user` or `user@domain.example`), `password` and
    /// optionally `domain` (NetBIOS name).
    pub secret_name: String,
    /// Channel binding (EPA): `auto` (default: send the tls-server-end-point binding), `required`
    /// (refuse to authenticate without one), `off` (never send one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_binding: Option<ChannelBindingMode>,
}

/// The `channelBinding` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelBindingMode {
    /// Send the binding whenever it can be computed.
    Auto,
    /// Never authenticate without it.
    Required,
    /// Never send it.
    Off,
}

/// A Secret in the issuer's namespace (the cluster resource namespace for cluster issuers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    pub secret_name: String,
}

impl IssuerSpec for AdcsIssuerSpec {
    const GROUP: &'static str = GROUP;
    const NAME: &'static str = "Adcs";

    fn validate(&self) -> Result<(), String> {
        crate::client::parse_url(&self.url)?;
        if self.template.trim().is_empty() {
            return Err("spec.template is empty: set the certificate template's name, e.g. WebServer".into());
        }
        certbridge::overrides::validate_allowed(&self.allowed_overrides, &[TEMPLATE_ANNOTATION])?;
        let a = &self.auth;
        let set = [a.ntlm.is_some(), a.kerberos.is_some(), a.client_certificate.is_some(), a.basic.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if set != 1 {
            return Err(format!(
                "spec.auth sets {set} methods: set exactly one of ntlm, kerberos, clientCertificate, basic"
            ));
        }
        if let Some(k) = &a.kerberos {
            if k.realm.trim().is_empty() {
                return Err("spec.auth.kerberos.realm is empty: set the Kerberos realm, e.g. CORP.EXAMPLE.COM".into());
            }
            if k.kdc.is_empty() || k.kdc.iter().any(|h| h.trim().is_empty() || h.contains("://")) {
                return Err("spec.auth.kerberos.kdc must list KDC addresses as host or host:port, e.g. [dc1.corp.example.com:88]".into());
            }
        }
        for (field, name) in [
            ("spec.auth.ntlm.secretName", a.ntlm.as_ref().map(|n| &n.secret_name)),
            ("spec.auth.clientCertificate.secretName", a.client_certificate.as_ref().map(|s| &s.secret_name)),
            ("spec.auth.basic.secretName", a.basic.as_ref().map(|s| &s.secret_name)),
            ("spec.auth.kerberos.secretName", a.kerberos.as_ref().map(|k| &k.secret_name)),
        ] {
            if name.is_some_and(|n| n.trim().is_empty()) {
                return Err(format!("{field} is empty: name the Secret holding the credentials"));
            }
        }
        if let Some(b) = &self.ca_bundle {
            b.validate("spec.caBundle")?;
        }
        if self.poll_interval_seconds == Some(0) {
            return Err("spec.pollIntervalSeconds is 0: use a positive number of seconds or remove it".into());
        }
        if self.request_timeout_seconds == Some(0) {
            return Err("spec.requestTimeoutSeconds is 0: use a positive number of seconds or remove it".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> AdcsIssuerSpec {
        AdcsIssuerSpec {
            url: "https://ca.example.com/certsrv".into(),
            template: "WebServer".into(),
            allowed_overrides: vec![],
            auth: AuthSpec {
                ntlm: Some(NtlmAuth { secret_name: "creds".into(), channel_binding: None }),
                ..Default::default()
            },
            ca_bundle: None,
            poll_interval_seconds: None,
            request_timeout_seconds: None,
        }
    }

    #[test]
    fn validate_names_the_field() {
        spec().validate().unwrap();
        let mut s = spec();
        s.template = " ".into();
        assert!(s.validate().unwrap_err().contains("spec.template"));
        let mut s = spec();
        s.auth.basic = Some(SecretRef { secret_name: "b".into() });
        assert!(s.validate().unwrap_err().contains("exactly one"));
        let mut s = spec();
        s.auth = AuthSpec::default();
        assert!(s.validate().unwrap_err().contains("sets 0 methods"));
        let mut s = spec();
        s.url = "http://ca/certsrv".into();
        assert!(s.validate().unwrap_err().contains("https"));
        let mut s = spec();
        s.allowed_overrides = vec![AllowedOverride { name: "ca".into(), values: vec![] }];
        assert!(s.validate().unwrap_err().contains("spec.allowedOverrides[0].name"));
        let crd = certbridge::crd::crds_yaml::<AdcsIssuerSpec>();
        assert!(crd.contains("kind: AdcsClusterIssuer") && crd.contains("channelBinding"));
    }
}
