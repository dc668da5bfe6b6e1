//! Issuer resources: the adapter's spec type, the two kinds the framework derives from it, and the
//! status every certbridge issuer shares.
//!
//! An adapter declares one spec struct and implements [`IssuerSpec`] on it; the framework serves it
//! as two kinds in the adapter's own API group: `<Name>Issuer` (namespaced) and
//! `<Name>ClusterIssuer` (cluster-scoped), version [`API_VERSION`], with the shared
//! [`IssuerStatus`]. CRDs come from [`crate::crd`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The version every certbridge issuer kind is served at.
pub const API_VERSION: &str = "v1alpha1";

/// An adapter's issuer spec. One struct serves both the namespaced and the cluster-scoped kind.
///
/// ```ignore
/// #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
/// #[serde(rename_all = "camelCase")]
/// pub struct LocalCaSpec { pub secret_name: String }
/// impl IssuerSpec for LocalCaSpec {
///     const GROUP: &'static str = "example.certbridge.io";
///     const NAME: &'static str = "LocalCA";   // → LocalCAIssuer, LocalCAClusterIssuer
/// }
/// ```
pub trait IssuerSpec:
    Serialize + DeserializeOwned + JsonSchema + Clone + Send + Sync + std::fmt::Debug + 'static
{
    /// The adapter's API group, e.g. `"vault.certbridge.io"`.
    const GROUP: &'static str;
    /// The kind prefix, e.g. `"Vault"` gives `VaultIssuer` and `VaultClusterIssuer`.
    const NAME: &'static str;

    /// Checks that cannot be expressed in the schema (exactly one of several fields, URL shapes…).
    /// Return a message that names the field and the fix; it becomes a permanent issuer failure.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Whether an issuer is namespaced or cluster-scoped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IssuerScope {
    /// `<Name>Issuer`: reads Secrets in its own namespace, serves requests in its own namespace.
    Namespaced,
    /// `<Name>ClusterIssuer`: reads Secrets in the cluster resource namespace, serves all namespaces
    /// and Kubernetes CertificateSigningRequests.
    Cluster,
}

/// Names of the two kinds derived from an [`IssuerSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindNames {
    /// API group.
    pub group: &'static str,
    /// `<Name>Issuer` or `<Name>ClusterIssuer`.
    pub kind: String,
    /// Lower-case plural, e.g. `vaultclusterissuers`.
    pub plural: String,
    /// The scope of this kind.
    pub scope: IssuerScope,
}

impl KindNames {
    /// The kind names for `S` in `scope`.
    pub fn of<S: IssuerSpec>(scope: IssuerScope) -> Self {
        let kind = match scope {
            IssuerScope::Namespaced => format!("{}Issuer", S::NAME),
            IssuerScope::Cluster => format!("{}ClusterIssuer", S::NAME),
        };
        let plural = format!("{}s", kind.to_ascii_lowercase());
        KindNames { group: S::GROUP, kind, plural, scope }
    }

    /// `<plural>.<group>`, issuer-lib's issuer type identifier and the first half of a CSR signerName.
    pub fn type_identifier(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    /// `<group>/v1alpha1`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, API_VERSION)
    }
}

/// The status every certbridge issuer kind shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerStatus {
    /// Conditions; `Ready` is the one the framework maintains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl IssuerStatus {
    /// The Ready condition, if set.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == "Ready")
    }
}

/// An issuer as a signer sees it: identity, scope and the typed spec.
#[derive(Debug, Clone)]
pub struct Issuer<S> {
    /// Object name.
    pub name: String,
    /// Namespace for a namespaced issuer; `None` for a cluster issuer.
    pub namespace: Option<String>,
    /// Which of the two kinds this is.
    pub scope: IssuerScope,
    /// Object UID (empty when loaded from a file by `check -f` / `sign -f`).
    pub uid: String,
    /// `metadata.generation` (0 when loaded from a file).
    pub generation: i64,
    /// Object annotations.
    pub annotations: BTreeMap<String, String>,
    /// The adapter's spec.
    pub spec: S,
}

impl<S: IssuerSpec> Issuer<S> {
    /// The kind, e.g. `VaultClusterIssuer`.
    pub fn kind(&self) -> String {
        KindNames::of::<S>(self.scope).kind
    }

    /// `namespace/name` or `name`, for messages.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{}", ns, self.name),
            None => self.name.clone(),
        }
    }

    /// Which issuer object this is, as `<kind>/<namespace>/<name>#<uid>` (empty namespace for a
    /// cluster issuer): a key for an adapter's own per-issuer map. A re-created issuer has another
    /// UID, so it gets another key. [`IssuerCache`](crate::IssuerCache) does this (and eviction on
    /// delete) for adapters that use it.
    pub fn object_key(&self) -> String {
        format!("{}/{}/{}#{}", self.kind(), self.namespace.as_deref().unwrap_or(""), self.name, self.uid)
    }

    /// [`Issuer::object_key`] plus `@<generation>`: which object *and which version of its spec*
    /// something was built for. Adapters that keep their own client cache hash it into the
    /// fingerprint of what a client was built from, so a spec change builds a new client.
    pub fn version_key(&self) -> String {
        format!("{}@{}", self.object_key(), self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
    struct Spec {
        url: String,
    }
    impl IssuerSpec for Spec {
        const GROUP: &'static str = "demo.certbridge.io";
        const NAME: &'static str = "Demo";
    }

    #[test]
    fn kind_names_follow_the_convention() {
        let c = KindNames::of::<Spec>(IssuerScope::Cluster);
        assert_eq!(c.kind, "DemoClusterIssuer");
        assert_eq!(c.type_identifier(), "democlusterissuers.demo.certbridge.io");
        assert_eq!(KindNames::of::<Spec>(IssuerScope::Namespaced).plural, "demoissuers");
        assert_eq!(c.api_version(), "demo.certbridge.io/v1alpha1");
    }

    #[test]
    fn keys_name_the_object_and_its_version() {
        let mut i = Issuer {
            name: "ca".into(),
            namespace: Some("team".into()),
            scope: IssuerScope::Namespaced,
            uid: "u1".into(),
            generation: 3,
            annotations: BTreeMap::new(),
            spec: Spec { url: "https://ca.example".into() },
        };
        assert_eq!(i.object_key(), "DemoIssuer/team/ca#u1");
        assert_eq!(i.version_key(), "DemoIssuer/team/ca#u1@3");
        (i.namespace, i.scope) = (None, IssuerScope::Cluster);
        assert_eq!(i.version_key(), "DemoClusterIssuer//ca#u1@3");
    }
}
