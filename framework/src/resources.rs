//! Reading what an issuer references — Secrets, ConfigMaps, service-account tokens — under the
//! namespace rules, and remembering what was read so the issuer is re-checked when it changes.
//!
//! A namespaced issuer reads only in its own namespace; a cluster issuer only in the controller's
//! cluster resource namespace. Adapters never pick a namespace, so they cannot break the rule.
//! Missing objects and keys are [`Reaction::IssuerNotReady`](crate::Reaction::IssuerNotReady) naming the object and key.
//!
//! One write exists, [`Resources::update_secret_key`]: an adapter may put a value back into one key
//! of a Secret it has read (Venafi's rotated refresh token). Same namespace rule, only a Secret
//! already read through the same `Resources`, never over a change it has not seen, and logged
//! (object and key, never the value). It needs `patch` on `secrets` in the controller's RBAC,
//! which the charts grant only with `rbac.secretUpdates: true`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use zeroize::Zeroizing;

use crate::error::SignError;
use crate::selector::{CaBundle, ConfigMapKeySelector, SecretKeySelector};

// The API-server source lives here too, so `resources` and its sources import nothing of each
// other's from outside (no import circle).
mod api_source;
pub(crate) use api_source::ApiSource;

/// Where objects come from: the API server in `run`, a manifest file in `check -f` / `sign -f`.
#[async_trait]
pub trait ResourceSource: Send + Sync {
    /// The Secret, or `None` when it does not exist.
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, SignError>;
    /// The ConfigMap, or `None` when it does not exist.
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, SignError>;
    /// A short-lived token for a service account (TokenRequest API).
    async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[String],
        expiration_seconds: i64,
    ) -> Result<Zeroizing<String>, SignError>;

    /// Sets `key` of a Secret to `value` with a JSON merge patch of that one key (nothing else
    /// of the Secret changes); with `resource_version`, only if the Secret still has it (a
    /// precondition: a Secret changed since it was read is not overwritten). Returns the
    /// Secret's new `resourceVersion`. Sources that cannot write (manifest files) refuse.
    async fn patch_secret_key(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: &[u8],
        resource_version: Option<&str>,
    ) -> Result<Option<String>, SignError> {
        let _ = (key, value, resource_version);
        Err(SignError::issuer_not_ready(format!(
            "cannot write Secret \"{namespace}/{name}\" without a cluster (offline check or sign): the value stays in memory"
        )))
    }
}

/// The kind of a referenced object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefKind {
    /// core/v1 Secret.
    Secret,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 ServiceAccount (token requests).
    ServiceAccount,
}

/// An object an issuer read: kind, namespace, name.
pub type Reference = (RefKind, String, String);

/// An issuer's view of the objects it may read. Cheap to clone.
#[derive(Clone)]
pub struct Resources {
    source: Arc<dyn ResourceSource>,
    namespace: String,
    read: Arc<Mutex<BTreeMap<Reference, Option<String>>>>,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl Resources {
    /// Resources confined to `namespace` (the issuer's, or the cluster resource namespace).
    pub fn new(source: Arc<dyn ResourceSource>, namespace: impl Into<String>) -> Self {
        Resources { source, namespace: namespace.into(), read: Arc::default() }
    }

    /// Resources served from in-memory objects (tests, `check -f`, `sign -f`).
    pub fn from_objects(namespace: impl Into<String>, secrets: Vec<Secret>, config_maps: Vec<ConfigMap>) -> Self {
        let ns = namespace.into();
        Resources::new(Arc::new(StaticSource::new(&ns, secrets, config_maps)), ns)
    }

    /// Resources read from the API server with `client` (what the controllers use; handy for
    /// adapter tests that need real TokenRequests).
    pub fn from_client(client: kube::Client, namespace: impl Into<String>) -> Self {
        Resources::new(Arc::new(ApiSource::new(client)), namespace)
    }

    /// The namespace reads happen in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Every object read so far (the issuer controller watches these).
    pub fn references(&self) -> BTreeSet<Reference> {
        self.read.lock().expect("lock poisoned").keys().cloned().collect()
    }

    /// Every object read so far with the `resourceVersion` it had (`None`: absent, or not
    /// versioned such as a service account token). A change of any of these makes the issuer
    /// outdated: the framework re-checks it, even when it failed permanently, and
    /// [`IssuerCache`](crate::IssuerCache) drops what was built from the old content.
    pub fn observed(&self) -> BTreeMap<Reference, Option<String>> {
        self.read.lock().expect("lock poisoned").clone()
    }

    fn note(&self, kind: RefKind, name: &str, version: Option<String>) {
        self.read.lock().expect("lock poisoned").insert((kind, self.namespace.clone(), name.to_owned()), version);
    }

    /// All data of a Secret (`data` and `stringData` merged).
    pub async fn secret(&self, name: &str) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, SignError> {
        self.note(RefKind::Secret, name, None);
        let secret = self.source.secret(&self.namespace, name).await?;
        self.note(RefKind::Secret, name, secret.as_ref().and_then(|s| s.metadata.resource_version.clone()));
        let secret = secret.ok_or_else(|| {
            SignError::issuer_not_ready(format!(
                "Secret \"{}/{}\" not found: create it or fix the reference",
                self.namespace, name
            ))
        })?;
        let mut out: BTreeMap<String, Zeroizing<Vec<u8>>> = BTreeMap::new();
        for (k, v) in secret.data.unwrap_or_default() {
            out.insert(k, Zeroizing::new(v.0));
        }
        for (k, v) in secret.string_data.unwrap_or_default() {
            out.insert(k, Zeroizing::new(v.into_bytes()));
        }
        Ok(out)
    }

    /// One key of a Secret. Missing Secret or key → issuer not ready, naming both.
    pub async fn secret_key(&self, name: &str, key: &str) -> Result<Zeroizing<Vec<u8>>, SignError> {
        let mut data = self.secret(name).await?;
        data.remove(key).ok_or_else(|| {
            SignError::issuer_not_ready(format!(
                "Secret \"{}/{}\" has no key \"{}\": add it or fix the reference",
                self.namespace, name, key
            ))
        })
    }

    /// One key of a Secret as UTF-8 text with surrounding whitespace removed (tokens, PINs).
    pub async fn secret_string(&self, name: &str, key: &str) -> Result<Zeroizing<String>, SignError> {
        let bytes = self.secret_key(name, key).await?;
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            SignError::issuer_not_ready(format!(
                "Secret \"{}/{}\" key \"{}\" is not UTF-8 text",
                self.namespace, name, key
            ))
        })?;
        Ok(Zeroizing::new(text.trim().to_owned()))
    }

    /// One key of a ConfigMap (`data`, or UTF-8 `binaryData`).
    pub async fn config_map_key(&self, name: &str, key: &str) -> Result<String, SignError> {
        self.note(RefKind::ConfigMap, name, None);
        let cm = self.source.config_map(&self.namespace, name).await?;
        self.note(RefKind::ConfigMap, name, cm.as_ref().and_then(|c| c.metadata.resource_version.clone()));
        let cm = cm.ok_or_else(|| {
            SignError::issuer_not_ready(format!(
                "ConfigMap \"{}/{}\" not found: create it or fix the reference",
                self.namespace, name
            ))
        })?;
        if let Some(v) = cm.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(v.clone());
        }
        if let Some(v) = cm.binary_data.as_ref().and_then(|d| d.get(key)) {
            return String::from_utf8(v.0.clone()).map_err(|_| {
                SignError::issuer_not_ready(format!(
                    "ConfigMap \"{}/{}\" key \"{}\" is not UTF-8 text",
                    self.namespace, name, key
                ))
            });
        }
        Err(SignError::issuer_not_ready(format!(
            "ConfigMap \"{}/{}\" has no key \"{}\": add it or fix the reference",
            self.namespace, name, key
        )))
    }

    /// The text in a Secret key, surrounding whitespace removed (tokens, PINs, passwords).
    /// Missing Secret or key, or not UTF-8 → issuer not ready, naming both.
    pub async fn string(&self, selector: &SecretKeySelector) -> Result<Zeroizing<String>, SignError> {
        self.secret_string(&selector.name, &selector.key).await
    }

    /// PEM text in a Secret key (a certificate chain, a private key): missing Secret or key, or
    /// text that is not PEM → issuer not ready, naming the Secret, the key and the fix. The
    /// content is never quoted.
    pub async fn pem(&self, selector: &SecretKeySelector) -> Result<Zeroizing<String>, SignError> {
        let text = self.secret_string(&selector.name, &selector.key).await?;
        match pem::parse_many(text.as_bytes()) {
            Ok(blocks) if !blocks.is_empty() => Ok(text),
            _ => Err(SignError::issuer_not_ready(format!(
                "Secret \"{}/{}\" key \"{}\" is not PEM: put the PEM text (-----BEGIN …-----) in it",
                self.namespace, selector.name, selector.key
            ))),
        }
    }

    /// PEM text in a ConfigMap key, classified like [`Resources::pem`].
    pub async fn config_map_pem(&self, selector: &ConfigMapKeySelector) -> Result<String, SignError> {
        let text = self.config_map_key(&selector.name, &selector.key).await?;
        match pem::parse_many(text.as_bytes()) {
            Ok(blocks) if !blocks.is_empty() => Ok(text),
            _ => Err(SignError::issuer_not_ready(format!(
                "ConfigMap \"{}/{}\" key \"{}\" is not PEM: put the PEM text (-----BEGIN …-----) in it",
                self.namespace, selector.name, selector.key
            ))),
        }
    }

    /// The CA certificates of a [`CaBundle`], as DER: inline, or from its Secret or ConfigMap.
    /// Missing object or key, or anything but PEM certificates → issuer not ready naming the
    /// object and the key (inline PEM is checked by [`CaBundle::validate`] already).
    pub async fn ca_bundle(&self, bundle: &CaBundle) -> Result<Vec<Vec<u8>>, SignError> {
        let (text, place) = if let Some(pem) = &bundle.pem {
            (Zeroizing::new(pem.clone()), "the inline CA bundle".to_owned())
        } else if let Some(s) = &bundle.secret_ref {
            (self.pem(s).await?, format!("Secret \"{}/{}\" key \"{}\"", self.namespace, s.name, s.key))
        } else if let Some(c) = &bundle.config_map_ref {
            (
                Zeroizing::new(self.config_map_pem(c).await?),
                format!("ConfigMap \"{}/{}\" key \"{}\"", self.namespace, c.name, c.key),
            )
        } else {
            return Err(SignError::permanent("the CA bundle names no source: set pem, secretRef or configMapRef"));
        };
        crate::pki::certificates_from_pem(&text)
            .map_err(|e| SignError::issuer_not_ready(format!("{place} {e}: put the PEM CA certificates in it")))
    }

    /// Writes `value` into the key `selector` names, in a Secret this `Resources` has read
    /// already (an adapter writes back only to what the issuer references, e.g. a refresh token
    /// the CA rotated). A JSON merge patch of that one key, in the issuer's namespace, made only
    /// if the Secret still has the `resourceVersion` that was read: a Secret changed meanwhile
    /// (someone fixed the credentials) is never overwritten. The write is logged with the Secret
    /// and the key, never the value, and the Secret's new `resourceVersion` is recorded as read
    /// (see [`Resources::observed`]; an [`IssuerCache`](crate::IssuerCache) entry built from the
    /// old content can follow with [`IssuerCache::rekey`](crate::IssuerCache::rekey)).
    ///
    /// Errors: a Secret not read through this `Resources` → permanent (a bug in the adapter, not
    /// something to retry); changed since it was read (409) → transient;
    /// RBAC refuses → issuer not ready, saying to grant `patch` on `secrets` (the charts'
    /// `rbac.secretUpdates: true`); gone → issuer not ready; anything else → transient.
    pub async fn update_secret_key(&self, selector: &SecretKeySelector, value: &[u8]) -> Result<(), SignError> {
        let reference = (RefKind::Secret, self.namespace.clone(), selector.name.clone());
        let read = self.read.lock().expect("lock poisoned").get(&reference).cloned();
        let Some(version) = read else {
            return Err(SignError::permanent(format!(
                "Secret \"{}/{}\" was not read by this issuer: an issuer writes only to a Secret it references and has read",
                self.namespace, selector.name
            )));
        };
        let version = version.filter(|v| !v.is_empty());
        let new_version = self
            .source
            .patch_secret_key(&self.namespace, &selector.name, &selector.key, value, version.as_deref())
            .await?;
        tracing::info!(
            secret = %format!("{}/{}", self.namespace, selector.name),
            key = %selector.key,
            "wrote one key of a Secret the issuer references"
        );
        self.note(RefKind::Secret, &selector.name, new_version);
        Ok(())
    }

    /// A short-lived token for the service account `name` in the issuer's namespace, with the
    /// given audiences (TokenRequest API).
    pub async fn service_account_token(
        &self,
        name: &str,
        audiences: &[String],
        expiration_seconds: i64,
    ) -> Result<Zeroizing<String>, SignError> {
        self.note(RefKind::ServiceAccount, name, None);
        self.source.service_account_token(&self.namespace, name, audiences, expiration_seconds).await
    }
}

/// Objects held in memory.
pub struct StaticSource {
    secrets: BTreeMap<(String, String), Secret>,
    config_maps: BTreeMap<(String, String), ConfigMap>,
}

impl StaticSource {
    /// Objects without a namespace are placed in `default_namespace`.
    pub fn new(default_namespace: &str, secrets: Vec<Secret>, config_maps: Vec<ConfigMap>) -> Self {
        let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (m.namespace.clone().unwrap_or_else(|| default_namespace.to_owned()), m.name.clone().unwrap_or_default())
        };
        StaticSource {
            secrets: secrets.into_iter().map(|s| (key(&s.metadata), s)).collect(),
            config_maps: config_maps.into_iter().map(|c| (key(&c.metadata), c)).collect(),
        }
    }
}

#[async_trait]
impl ResourceSource for StaticSource {
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, SignError> {
        Ok(self.secrets.get(&(namespace.to_owned(), name.to_owned())).cloned())
    }

    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, SignError> {
        Ok(self.config_maps.get(&(namespace.to_owned(), name.to_owned())).cloned())
    }

    async fn service_account_token(
        &self,
        _: &str,
        name: &str,
        _: &[String],
        _: i64,
    ) -> Result<Zeroizing<String>, SignError> {
        Err(SignError::issuer_not_ready(format!(
            "cannot request a token for service account \"{name}\" without a cluster: use a static token Secret for offline checks"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(ns: &str, name: &str, k: &str, v: &str) -> Secret {
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some([(k.to_owned(), ByteString(v.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn reads_only_in_its_namespace_and_names_what_is_missing() {
        let res = Resources::from_objects(
            "team-a",
            vec![secret("team-a", "creds", "token", " s3cr3t\n"), secret("team-b", "other", "token", "x")],
            vec![],
        );
        assert_eq!(&*res.secret_string("creds", "token").await.unwrap(), "s3cr3t");
        let e = res.secret_key("other", "token").await.unwrap_err();
        assert_eq!(e, SignError::issuer_not_ready("Secret \"team-a/other\" not found: create it or fix the reference"));
        let e = res.secret_key("creds", "password").await.unwrap_err();
        assert!(e.to_string().contains("has no key \"password\""), "{e}");
        assert!(!e.to_string().contains("s3cr3t"));
        let refs = res.references();
        assert!(refs.contains(&(RefKind::Secret, "team-a".into(), "other".into())));
        assert_eq!(refs.len(), 2);
    }

    #[tokio::test]
    async fn pem_problems_name_the_secret_and_key_and_are_not_permanent() {
        let ca = crate::testing::TestCa::new(&crate::KeyKind::EcP256).unwrap();
        let res = Resources::from_objects(
            "team",
            vec![secret("team", "ca", "ca.crt", ca.cert_pem()), secret("team", "junk", "junk", "hello")],
            vec![],
        );
        let good = SecretKeySelector { name: "ca".into(), key: "ca.crt".into() };
        assert!(res.pem(&good).await.unwrap().starts_with("-----BEGIN"));
        let bundle = CaBundle { secret_ref: Some(good), ..Default::default() };
        assert_eq!(res.ca_bundle(&bundle).await.unwrap().len(), 1);
        let junk = SecretKeySelector { name: "junk".into(), key: "junk".into() };
        let e = res.pem(&junk).await.unwrap_err();
        assert_eq!(e.reaction, crate::Reaction::IssuerNotReady);
        assert!(e.message.contains("Secret \"team/junk\" key \"junk\" is not PEM") && !e.message.contains("hello"));
        let missing = SecretKeySelector { name: "nope".into(), key: "k".into() };
        assert_eq!(res.string(&missing).await.unwrap_err().reaction, crate::Reaction::IssuerNotReady);
        let e = res.ca_bundle(&CaBundle { pem: Some(ca.key_pem().into()), ..Default::default() }).await.unwrap_err();
        assert!(e.message.contains("not a CERTIFICATE"), "{e}");
    }

    #[tokio::test]
    async fn update_secret_key_writes_one_key_of_a_read_secret_in_the_issuers_namespace() {
        use k8s_openapi::api::core::v1::Secret as S;
        use kube::api::{Api, PostParams};
        let sim = certbridge_testkit::KubeSim::start().await.unwrap();
        let client = sim.client();
        for ns in ["default", "cert-manager"] {
            let s = crate::testing::secret(ns, "creds", None, &[("refresh-token", b"old"), ("client-id", b"cm")]);
            Api::<S>::namespaced(client.clone(), ns).create(&PostParams::default(), &s).await.unwrap();
        }
        let res = Resources::from_client(client.clone(), "default");
        let key = SecretKeySelector { name: "creds".into(), key: "refresh-token".into() };
        // Only a Secret this issuer has read.
        let e = res.update_secret_key(&key, b"new").await.unwrap_err();
        assert_eq!(e.reaction, crate::Reaction::Permanent);
        assert!(e.message.contains("was not read by this issuer"), "{e}");
        assert_eq!(&*res.string(&key).await.unwrap(), "old");
        let before = res.observed()[&(RefKind::Secret, "default".into(), "creds".into())].clone().unwrap();
        res.update_secret_key(&key, b"new").await.unwrap();
        // One key changed, the others kept, in the issuer's namespace only.
        let get = |ns: &str| {
            let api = Api::<S>::namespaced(client.clone(), ns);
            async move { api.get("creds").await.unwrap() }
        };
        let written = get("default").await;
        let data = written.data.clone().unwrap();
        assert_eq!((data["refresh-token"].0.as_slice(), data["client-id"].0.as_slice()), (&b"new"[..], &b"cm"[..]));
        assert_eq!(get("cert-manager").await.data.unwrap()["refresh-token"].0, b"old");
        // The new resourceVersion is recorded as read (the issuer is not re-checked for its own write).
        let after = res.observed()[&(RefKind::Secret, "default".into(), "creds".into())].clone().unwrap();
        assert_ne!(after, before);
        assert_eq!(Some(after), written.metadata.resource_version);
        // Someone changes the Secret: a Resources that read the old version does not write over it.
        let stale = Resources::from_client(client.clone(), "default");
        stale.string(&key).await.unwrap();
        let mut fixed = get("default").await;
        fixed.data.as_mut().unwrap().insert("refresh-token".into(), k8s_openapi::ByteString(b"fixed".to_vec()));
        Api::<S>::namespaced(client.clone(), "default").replace("creds", &PostParams::default(), &fixed).await.unwrap();
        let e = stale.update_secret_key(&key, b"stale").await.unwrap_err();
        assert_eq!(e.reaction, crate::Reaction::Transient);
        assert!(e.message.contains("changed since it was read") && !e.message.contains("stale\""), "{e}");
        assert_eq!(get("default").await.data.unwrap()["refresh-token"].0, b"fixed");
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn an_offline_source_refuses_writes() {
        let res = Resources::from_objects("team", vec![secret("team", "creds", "refresh-token", "old")], vec![]);
        let key = SecretKeySelector { name: "creds".into(), key: "refresh-token".into() };
        res.string(&key).await.unwrap();
        let e = res.update_secret_key(&key, b"new").await.unwrap_err();
        assert_eq!(e.reaction, crate::Reaction::IssuerNotReady);
        assert!(e.message.contains("without a cluster"), "{e}");
    }
}
