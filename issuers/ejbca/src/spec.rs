//! The issuer spec shared by `EjbcaIssuer` and `EjbcaClusterIssuer` (group `ejbca.certbridge.io`).
//!
//! Field names follow Keyfactor's ejbca-cert-manager-issuer so a migration is a copy of the spec,
//! with two deliberate differences: the CA bundle names its key explicitly (Keyfactor picks a random
//! key of the object when none is given) and a Secret *or* a ConfigMap is allowed, never both.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use certbridge::IssuerSpec;

/// The API group of the EJBCA issuer kinds and of the per-request override annotations.
pub const GROUP: &str = "ejbca.certbridge.io";

/// How to talk to one EJBCA CA and what to ask it for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EjbcaIssuerSpec {
    /// EJBCA host (`ejbca.example.com`, `ejbca.example.com:8443`) or an `https://` URL. A URL's path
    /// is ignored: the REST API always lives under `/ejbca/ejbca-rest-api`.
    pub hostname: String,
    /// Certificate profile to enroll with (override per request:
    /// annotation `ejbca.certbridge.io/certificateProfileName`).
    pub certificate_profile_name: String,
    /// End-entity profile to enroll with (override: `ejbca.certbridge.io/endEntityProfileName`).
    pub end_entity_profile_name: String,
    /// CA name as EJBCA knows it (override: `ejbca.certbridge.io/certificateAuthorityName`).
    pub certificate_authority_name: String,
    /// How the EJBCA end entity (username) is named: `cn`, `dns`, `uri`, `ip`, `certificateName`, or
    /// any other string used literally. Default: the CSR's common name, else its first DNS name,
    /// URI, IP address, else the cert-manager Certificate name
    /// (override: `ejbca.certbridge.io/endEntityName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_entity_name: Option<String>,
    /// Secret with the credentials: `tls.crt` + `tls.key` (type kubernetes.io/tls: mTLS client
    /// certificate) or `tokenUrl`, `clientId`, `clientSecret` and optional `scopes` (space
    /// separated) and `audience` (type Opaque: OAuth 2.0 client credentials).
    pub ejbca_secret_name: String,
    /// Where the CA certificates that sign EJBCA's TLS certificate are. Default: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleRef>,
    /// Timeout of one HTTP call to EJBCA or the token endpoint, in seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_seconds: Option<u32>,
    /// Which per-request override annotations (`ejbca.certbridge.io/<name>`) this issuer
    /// honours, optionally only with the listed values. Default: none — a request carrying one
    /// is refused, since Certificate authors would otherwise choose the CA, profiles and end
    /// entity with this issuer's credentials. Names: certificateAuthorityName,
    /// certificateProfileName, endEntityProfileName, endEntityName.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_overrides: Vec<certbridge::overrides::AllowedOverride>,
}

/// A PEM bundle in one key of a Secret or a ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    /// Secret holding the bundle (set this or `configMapName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// ConfigMap holding the bundle (set this or `secretName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// The key holding the PEM bundle, e.g. `ca.crt`.
    pub key: String,
}

/// The default timeout of one HTTP call.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 30;

impl IssuerSpec for EjbcaIssuerSpec {
    const GROUP: &'static str = GROUP;
    const NAME: &'static str = "Ejbca";

    fn validate(&self) -> Result<(), String> {
        crate::client::base_url(&self.hostname)?;
        certbridge::overrides::validate_allowed(&self.allowed_overrides, &crate::signer::annotations::OVERRIDES)?;
        for (field, value) in [
            ("certificateProfileName", &self.certificate_profile_name),
            ("endEntityProfileName", &self.end_entity_profile_name),
            ("certificateAuthorityName", &self.certificate_authority_name),
            ("ejbcaSecretName", &self.ejbca_secret_name),
        ] {
            if value.trim().is_empty() {
                return Err(format!("spec.{field} is empty: set it to the name configured in EJBCA"));
            }
        }
        if let Some(name) = &self.end_entity_name
            && name.trim().is_empty()
        {
            return Err("spec.endEntityName is empty: remove it for the default or set cn, dns, uri, ip, certificateName or a literal name".into());
        }
        if let Some(b) = &self.ca_bundle {
            match (&b.secret_name, &b.config_map_name) {
                (Some(_), Some(_)) => {
                    return Err("spec.caBundle sets both secretName and configMapName: keep exactly one".into());
                }
                (None, None) => return Err("spec.caBundle sets neither secretName nor configMapName: set one".into()),
                _ => {}
            }
            if b.key.trim().is_empty() {
                return Err("spec.caBundle.key is empty: name the key holding the PEM bundle, e.g. ca.crt".into());
            }
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

    fn spec() -> EjbcaIssuerSpec {
        EjbcaIssuerSpec {
            hostname: "ejbca.example.com".into(),
            certificate_profile_name: "ENDUSER".into(),
            end_entity_profile_name: "EMPTY".into(),
            certificate_authority_name: "ManagementCA".into(),
            end_entity_name: None,
            ejbca_secret_name: "creds".into(),
            ca_bundle: None,
            request_timeout_seconds: None,
            allowed_overrides: vec![],
        }
    }

    #[test]
    fn validate_names_the_field() {
        spec().validate().unwrap();
        let mut s = spec();
        s.certificate_profile_name = " ".into();
        assert!(s.validate().unwrap_err().contains("spec.certificateProfileName"));
        let mut s = spec();
        s.ca_bundle =
            Some(CaBundleRef { secret_name: Some("a".into()), config_map_name: Some("b".into()), key: "k".into() });
        assert!(s.validate().unwrap_err().contains("both"));
        let mut s = spec();
        s.hostname = "http://ejbca.example.com".into();
        assert!(s.validate().unwrap_err().contains("spec.hostname"));
        let crd = certbridge::crd::crds_yaml::<EjbcaIssuerSpec>();
        assert!(crd.contains("kind: EjbcaClusterIssuer") && crd.contains("certificateAuthorityName"));
    }
}
