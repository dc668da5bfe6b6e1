//! The issuer spec shared by `EjbcaIssuer` and `EjbcaClusterIssuer` (group `ejbca.certbridge.io`).
//!
//! Field names follow Keyfactor's ejbca-cert-manager-issuer so a migration is a copy of the spec,
//! with one deliberate difference: `caBundle` is the framework's CA-bundle reference (inline `pem`,
//! `secretRef: {name, key}` or `configMapRef: {name, key}`, exactly one), the same shape in every
//! certbridge issuer, so it always names its key (Keyfactor picks a random key of the object when
//! none is given). The shape this issuer had before, `{secretName | configMapName, key}`, is still
//! accepted in the same field, deprecated, and read as the framework type it stands for.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use certbridge::{CaBundle, ConfigMapKeySelector, IssuerSpec, SecretKeySelector};

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
    /// The CA certificates that sign EJBCA's TLS certificate: exactly one of `pem`, `secretRef`
    /// or `configMapRef`. Default: the system roots.
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

/// `spec.caBundle`: the framework's [`CaBundle`] (`pem`, `secretRef` or `configMapRef`), plus the
/// deprecated fields of the shape it replaced (`secretName` or `configMapName`, with `key`), so
/// issuers written before keep working. [`CaBundleRef::resolve`] gives the one `CaBundle` to read;
/// the two shapes together are refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    /// The CA bundle: `pem`, `secretRef` or `configMapRef`.
    #[serde(flatten)]
    pub bundle: CaBundle,
    /// Deprecated: use `secretRef: {name, key}`. A Secret holding the bundle (with `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Deprecated: use `configMapRef: {name, key}`. A ConfigMap holding the bundle (with `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// Deprecated: the key of `secretName` / `configMapName` holding the PEM bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl CaBundleRef {
    /// Whether any of the deprecated `secretName`, `configMapName`, `key` is set.
    pub fn uses_deprecated_fields(&self) -> bool {
        self.secret_name.is_some() || self.config_map_name.is_some() || self.key.is_some()
    }

    /// The CA bundle to read: the framework fields as they are, or the deprecated
    /// `secretName`/`configMapName` + `key` converted to `secretRef`/`configMapRef`. Both shapes,
    /// or an incomplete deprecated one → a message naming the fields and the fix. The result is
    /// not yet validated (see [`CaBundle::validate`]).
    pub fn resolve(&self) -> Result<CaBundle, String> {
        if !self.uses_deprecated_fields() {
            return Ok(self.bundle.clone());
        }
        if self.bundle != CaBundle::default() {
            return Err("spec.caBundle mixes pem/secretRef/configMapRef with the deprecated secretName/configMapName/key: keep only secretRef: {name, key} or configMapRef: {name, key}".into());
        }
        let key = self.key.clone().filter(|k| !k.trim().is_empty()).ok_or(
            "spec.caBundle.key is empty: name the key holding the PEM bundle, e.g. ca.crt (better: move to secretRef or configMapRef: {name, key})",
        )?;
        match (&self.secret_name, &self.config_map_name) {
            (Some(_), Some(_)) => Err("spec.caBundle sets both secretName and configMapName: keep exactly one (better: move to secretRef or configMapRef: {name, key})".into()),
            (None, None) => Err("spec.caBundle.key is set without secretName or configMapName: use secretRef or configMapRef: {name, key}".into()),
            (Some(name), None) => Ok(CaBundle {
                secret_ref: Some(SecretKeySelector { name: name.clone(), key }),
                ..Default::default()
            }),
            (None, Some(name)) => Ok(CaBundle {
                config_map_ref: Some(ConfigMapKeySelector { name: name.clone(), key }),
                ..Default::default()
            }),
        }
    }
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
            b.resolve()?.validate("spec.caBundle")?;
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
        s.ca_bundle = Some(CaBundleRef {
            secret_name: Some("a".into()),
            config_map_name: Some("b".into()),
            key: Some("k".into()),
            ..Default::default()
        });
        assert!(s.validate().unwrap_err().contains("both secretName and configMapName"));
        let mut s = spec();
        s.ca_bundle = Some(CaBundleRef::default());
        assert!(
            s.validate().unwrap_err().contains("spec.caBundle: set exactly one of pem, secretRef and configMapRef")
        );
        let mut s = spec();
        s.hostname = "http://ejbca.example.com".into();
        assert!(s.validate().unwrap_err().contains("spec.hostname"));
        let crd = certbridge::crd::crds_yaml::<EjbcaIssuerSpec>();
        assert!(crd.contains("kind: EjbcaClusterIssuer") && crd.contains("certificateAuthorityName"));
    }

    /// A manifest written before `caBundle` became the framework type still parses, and names the
    /// same object and key as its replacement; both shapes at once are refused, naming the fields.
    #[tokio::test]
    async fn the_deprecated_ca_bundle_shape_reads_the_same_bundle() {
        let ca = certbridge::testing::TestCa::new(&certbridge::KeyKind::EcP256).unwrap();
        let old: CaBundleRef = serde_json::from_str(r#"{"configMapName": "ejbca-ca", "key": "ca.crt"}"#).unwrap();
        let new: CaBundleRef =
            serde_json::from_str(r#"{"configMapRef": {"name": "ejbca-ca", "key": "ca.crt"}}"#).unwrap();
        assert_eq!(old.resolve().unwrap(), new.resolve().unwrap());
        let resources = certbridge::Resources::from_objects(
            "team-a",
            vec![certbridge::testing::secret("team-a", "tls-ca", None, &[("bundle.pem", ca.cert_pem().as_bytes())])],
            vec![certbridge::testing::config_map("team-a", "ejbca-ca", &[("ca.crt", ca.cert_pem())])],
        );
        let ders = resources.ca_bundle(&old.resolve().unwrap()).await.unwrap();
        assert_eq!(ders, certbridge::pki::certificates_from_pem(ca.cert_pem()).unwrap());
        let old_secret: CaBundleRef = serde_json::from_str(r#"{"secretName": "tls-ca", "key": "bundle.pem"}"#).unwrap();
        assert_eq!(resources.ca_bundle(&old_secret.resolve().unwrap()).await.unwrap(), ders);
        // The new field serializes without the deprecated ones.
        assert_eq!(
            serde_json::to_value(&new).unwrap(),
            serde_json::json!({"configMapRef": {"name": "ejbca-ca", "key": "ca.crt"}})
        );

        let mut s = spec();
        s.ca_bundle = Some(
            serde_json::from_str(r#"{"secretRef": {"name": "a", "key": "k"}, "configMapName": "b", "key": "k"}"#)
                .unwrap(),
        );
        let e = s.validate().unwrap_err();
        assert!(e.contains("secretRef") && e.contains("deprecated secretName/configMapName/key"), "{e}");
        s.ca_bundle = Some(serde_json::from_str(r#"{"configMapName": "b"}"#).unwrap());
        assert!(s.validate().unwrap_err().contains("spec.caBundle.key is empty"));
    }
}
