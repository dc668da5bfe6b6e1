//! The reference types every issuer spec uses to point at a Secret, a ConfigMap or a CA bundle,
//! with one schema each. Read them with [`Resources::string`](crate::Resources::string),
//! [`Resources::pem`](crate::Resources::pem) and [`Resources::ca_bundle`](crate::Resources::ca_bundle),
//! which classify every problem the same way: a missing object or key, or content that is not what
//! the field needs, is [`Reaction::IssuerNotReady`](crate::Reaction::IssuerNotReady) naming the
//! object and the key, so that fixing the object brings the issuer back.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One key of a Secret in the namespace the issuer reads (its own, or the cluster resource
/// namespace for a cluster issuer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeySelector {
    /// Name of the Secret.
    pub name: String,
    /// Key in the Secret's data.
    pub key: String,
}

/// One key of a Secret where the key may be left out and the adapter supplies a default per field:
/// cert-manager's own `SecretKeySelector` (`key` is `omitempty` there), for adapters whose spec
/// mirrors cert-manager's (Vault's `tokenSecretRef` defaults to `token`, `caBundleSecretRef` to
/// `ca.crt`, …), so a manifest written for cert-manager keeps working.
///
/// Why a second type rather than an optional `key` on [`SecretKeySelector`]: making `key`
/// optional there would drop it from `required` in every CRD that uses the selector, so a
/// forgotten key in, say, a PKCS#11 `pinSecretRef` would pass the API server and fail only in the
/// controller; and a reader would have to supply a default where none makes sense. With two types
/// each field's schema says exactly what it accepts, and both have one schema each across every
/// adapter. Read it with [`SecretRef::selector`] and the [`Resources`](crate::Resources) readers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
    /// Key in the Secret's data; when left out, the field's documented default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl SecretRef {
    /// The key, or `default` when it is left out or empty.
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().filter(|k| !k.trim().is_empty()).unwrap_or(default)
    }

    /// The selector to read, with `default_key` when the key is left out: e.g.
    /// `resources.string(&r.selector("token"))`.
    pub fn selector(&self, default_key: &str) -> SecretKeySelector {
        SecretKeySelector { name: self.name.clone(), key: self.key_or(default_key).to_owned() }
    }

    /// A Secret named, or a message naming `field` (e.g. `spec.auth.tokenSecretRef`) and the fix.
    pub fn validate(&self, field: &str) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err(format!("{field}.name is required: name the Secret"));
        }
        Ok(())
    }
}

/// One key of a ConfigMap in the namespace the issuer reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct ConfigMapKeySelector {
    /// Name of the ConfigMap.
    pub name: String,
    /// Key in the ConfigMap's data.
    pub key: String,
}

/// PEM CA certificates: inline, or one key of a Secret or of a ConfigMap. Set exactly one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaBundle {
    /// The PEM certificates themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    /// A key of a Secret holding the PEM certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
    /// A key of a ConfigMap holding the PEM certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeySelector>,
}

impl SecretKeySelector {
    /// Both fields set, or a message naming `field` (e.g. `spec.pinSecretRef`) and the fix.
    pub fn validate(&self, field: &str) -> Result<(), String> {
        if self.name.trim().is_empty() || self.key.trim().is_empty() {
            return Err(format!("{field} needs both name and key: name the Secret and the key in it"));
        }
        Ok(())
    }
}

impl ConfigMapKeySelector {
    /// Both fields set, or a message naming `field` and the fix.
    pub fn validate(&self, field: &str) -> Result<(), String> {
        if self.name.trim().is_empty() || self.key.trim().is_empty() {
            return Err(format!("{field} needs both name and key: name the ConfigMap and the key in it"));
        }
        Ok(())
    }
}

impl CaBundle {
    /// Exactly one source set, and it complete; inline PEM must hold a certificate. Messages name
    /// `field` (e.g. `spec.caBundle`) and the fix.
    pub fn validate(&self, field: &str) -> Result<(), String> {
        let set = usize::from(self.pem.is_some())
            + usize::from(self.secret_ref.is_some())
            + usize::from(self.config_map_ref.is_some());
        if set != 1 {
            return Err(format!("{field}: set exactly one of pem, secretRef and configMapRef ({set} set)"));
        }
        if let Some(pem) = &self.pem {
            crate::pki::certificates_from_pem(pem).map_err(|e| format!("{field}.pem: {e}"))?;
        }
        if let Some(s) = &self.secret_ref {
            s.validate(&format!("{field}.secretRef"))?;
        }
        if let Some(c) = &self.config_map_ref {
            c.validate(&format!("{field}.configMapRef"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_names_exactly_one_source() {
        let none = CaBundle::default();
        assert!(none.validate("spec.caBundle").unwrap_err().contains("exactly one"));
        let both = CaBundle {
            pem: Some("x".into()),
            secret_ref: Some(SecretKeySelector { name: "a".into(), key: "b".into() }),
            config_map_ref: None,
        };
        assert!(both.validate("spec.caBundle").unwrap_err().contains("(2 set)"));
        let bad = CaBundle { pem: Some("not pem".into()), ..Default::default() };
        assert!(bad.validate("spec.caBundle").unwrap_err().starts_with("spec.caBundle.pem: "));
        let half = CaBundle {
            config_map_ref: Some(ConfigMapKeySelector { name: "ca".into(), key: String::new() }),
            ..Default::default()
        };
        assert!(half.validate("spec.caBundle").unwrap_err().contains("spec.caBundle.configMapRef needs"));
    }

    #[test]
    fn a_secret_ref_without_a_key_takes_the_fields_default() {
        let r: SecretRef = serde_json::from_str(r#"{"name":"vault-token"}"#).unwrap();
        assert_eq!(r.selector("token"), SecretKeySelector { name: "vault-token".into(), key: "token".into() });
        let r: SecretRef = serde_json::from_str(r#"{"name":"vault-token","key":"t"}"#).unwrap();
        assert_eq!((r.key_or("token"), r.selector("token").key.as_str()), ("t", "t"));
        assert_eq!(SecretRef { name: "a".into(), key: Some(" ".into()) }.key_or("token"), "token");
        assert_eq!(serde_json::to_string(&SecretRef { name: "a".into(), key: None }).unwrap(), r#"{"name":"a"}"#);
        assert!(SecretRef::default().validate("spec.x").unwrap_err().starts_with("spec.x.name is required"));
        // Only `name` is required in the schema; `key` stays required for SecretKeySelector.
        let required = |s: schemars::Schema| serde_json::to_value(s).unwrap()["required"].clone();
        assert_eq!(required(schemars::schema_for!(SecretRef)), serde_json::json!(["name"]));
        assert_eq!(required(schemars::schema_for!(SecretKeySelector)), serde_json::json!(["name", "key"]));
    }
}
