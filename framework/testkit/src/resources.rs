//! The resource registry: which group/version/resource triples are served and how.
//!
//! Built-in resources are declared in [`crate::builtin`]; CRDs add entries at runtime
//! ([`crate::crd`]). Discovery, routing and validation all read this one table so they
//! cannot disagree about what exists.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// Identity of a stored resource, independent of the version it is served at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ResKey {
    pub group: String,
    pub plural: String,
}

/// Which code path handles a resource's special behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Namespace,
    Secret,
    ConfigMap,
    ServiceAccount,
    CoreEvent,
    Event,
    Lease,
    Csr,
    Crd,
    /// Create-only reviews that are answered, never stored (TokenReview, SubjectAccessReview...).
    Review,
    /// RBAC roles and bindings (read by SubjectAccessReview, see `crate::rbac`).
    Rbac,
    Custom,
}

/// A CRD printer column (`additionalPrinterColumns`).
#[derive(Debug, Clone)]
pub(crate) struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// Per-version data of a resource.
#[derive(Debug, Clone, Default)]
pub(crate) struct VersionInfo {
    /// Structural schema used for pruning, defaulting, validation and SSA list semantics.
    pub schema: Option<Arc<Value>>,
    /// True when the schema comes from a CRD and must be enforced (built-in schemas only
    /// describe list/map semantics for merges).
    pub enforce_schema: bool,
    pub columns: Vec<PrinterColumn>,
    /// Extra field selector paths (CRD `selectableFields`, CSR `spec.signerName`, ...).
    pub selectable: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ResourceDef {
    pub group: String,
    /// Served versions, preferred first.
    pub versions: Vec<String>,
    pub version_info: BTreeMap<String, VersionInfo>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<&'static str>,
    /// Subresource name → verbs.
    pub subresources: Vec<(String, Vec<&'static str>)>,
    pub class: Kind,
    /// Whether `metadata.generation` is maintained.
    pub tracks_generation: bool,
}

impl ResourceDef {
    pub fn key(&self) -> ResKey {
        ResKey { group: self.group.clone(), plural: self.plural.clone() }
    }

    pub fn has_sub(&self, sub: &str) -> bool {
        self.subresources.iter().any(|(s, _)| s == sub)
    }

    pub fn has_status(&self) -> bool {
        self.has_sub("status")
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() { version.to_string() } else { format!("{}/{}", self.group, version) }
    }

    pub fn info(&self, version: &str) -> VersionInfo {
        self.version_info.get(version).cloned().unwrap_or_default()
    }

    /// Kind qualified with its group as used in Invalid messages (`CertificateRequest.cert-manager.io`).
    pub fn is_custom(&self) -> bool {
        self.class == Kind::Custom
    }
}

pub(crate) const ALL_VERBS: &[&str] =
    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// All served resources.
#[derive(Debug, Default, Clone)]
pub(crate) struct Registry {
    defs: BTreeMap<ResKey, Arc<ResourceDef>>,
}

impl Registry {
    pub fn insert(&mut self, def: ResourceDef) {
        self.defs.insert(def.key(), Arc::new(def));
    }

    pub fn remove(&mut self, key: &ResKey) -> Option<Arc<ResourceDef>> {
        self.defs.remove(key)
    }

    /// Looks up a resource served at `group/version`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        let def = self.defs.get(&ResKey { group: group.into(), plural: plural.into() })?;
        def.versions.iter().any(|v| v == version).then(|| def.clone())
    }

    /// Groups (non-core) with their versions, preferred version first.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in self.defs.values().filter(|d| !d.group.is_empty()) {
            let vs = out.entry(d.group.clone()).or_default();
            for v in &d.versions {
                if !vs.contains(v) {
                    vs.push(v.clone());
                }
            }
        }
        out
    }

    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ResourceDef>> {
        self.defs.values().filter(move |d| d.group == group && d.versions.iter().any(|v| v == version))
    }
}
