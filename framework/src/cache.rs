//! [`IssuerCache`]: what an adapter builds per issuer (a client, a session, a prepared CA), kept
//! while nothing it was built from changed.
//!
//! An entry belongs to one issuer object (kind, namespace, name and UID) and is valid for one *version* of it: the
//! spec's generation plus the `resourceVersion` of every Secret and ConfigMap read through the
//! [`Resources`] passed in (what [`Resources::observed`] reports). A new generation or a changed
//! Secret replaces the entry; a deleted issuer drops it (the issuer controller tells every cache
//! when it sees the delete). Adapters read their Secrets through `resources` first, then ask the
//! cache, so the key always covers what the value was built from.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::issuer::{Issuer, IssuerSpec};
use crate::resources::{Reference, Resources};

/// The version of an issuer an entry was built for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    uid: String,
    generation: i64,
    observed: BTreeMap<Reference, Option<String>>,
}

/// A per-issuer cache of `T`; see the [module docs](self). Cheap to share behind the signer.
pub struct IssuerCache<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    entries: Mutex<HashMap<String, (Version, Arc<T>)>>,
}

/// Lets the issuer controller evict a deleted issuer from every cache without knowing `T`.
trait Evict: Send + Sync {
    fn evict(&self, uid: &str);
}

impl<T: Send + Sync> Evict for Inner<T> {
    fn evict(&self, uid: &str) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, (v, _)| v.uid != uid);
    }
}

/// Every live cache, so a deleted issuer is dropped from all of them.
fn registry() -> &'static Mutex<Vec<Weak<dyn Evict>>> {
    static CACHES: OnceLock<Mutex<Vec<Weak<dyn Evict>>>> = OnceLock::new();
    CACHES.get_or_init(Mutex::default)
}

/// Drops what every cache holds for the issuer with `uid` (called when the issuer is deleted).
pub(crate) fn evict_issuer(uid: &str) {
    let mut caches = registry().lock().unwrap_or_else(|p| p.into_inner());
    caches.retain(|c| c.strong_count() > 0);
    for cache in caches.iter().filter_map(Weak::upgrade) {
        cache.evict(uid);
    }
}

/// The entry key: kind/namespace/name and UID (a re-created issuer is another object; issuers
/// loaded from a file have no UID).
fn identity<S: IssuerSpec>(issuer: &Issuer<S>) -> String {
    format!("{}/{}#{}", issuer.kind(), issuer.display_name(), issuer.uid)
}

impl<T: Send + Sync + 'static> Default for IssuerCache<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + Sync + 'static> IssuerCache<T> {
    /// An empty cache.
    pub fn new() -> Self {
        let inner = Arc::new(Inner { entries: Mutex::default() });
        let weak: Weak<dyn Evict> = Arc::downgrade(&inner) as Weak<dyn Evict>;
        registry().lock().unwrap_or_else(|p| p.into_inner()).push(weak);
        IssuerCache { inner }
    }

    fn version<S: IssuerSpec>(issuer: &Issuer<S>, resources: &Resources) -> Version {
        Version { uid: issuer.uid.clone(), generation: issuer.generation, observed: resources.observed() }
    }

    /// The value built for this issuer at this generation with these Secrets/ConfigMaps.
    pub fn get<S: IssuerSpec>(&self, issuer: &Issuer<S>, resources: &Resources) -> Option<Arc<T>> {
        let version = Self::version(issuer, resources);
        let entries = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(&identity(issuer)).filter(|(v, _)| *v == version).map(|(_, t)| t.clone())
    }

    /// The value built for this issuer object at its current generation, whatever Secrets it was
    /// built from: for an adapter that re-reads its Secrets only now and then (and compares what
    /// it read itself) rather than on every call.
    pub fn latest<S: IssuerSpec>(&self, issuer: &Issuer<S>) -> Option<Arc<T>> {
        let entries = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(&identity(issuer)).filter(|(v, _)| v.generation == issuer.generation).map(|(_, t)| t.clone())
    }

    /// Stores `value` for this issuer's current version, replacing what an older version built.
    pub fn insert<S: IssuerSpec>(&self, issuer: &Issuer<S>, resources: &Resources, value: T) -> Arc<T> {
        let value = Arc::new(value);
        let version = Self::version(issuer, resources);
        let mut entries = self.inner.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(identity(issuer), (version, value.clone()));
        value
    }

    /// Drops this issuer's entry (e.g. after the CA refused what it holds).
    pub fn remove<S: IssuerSpec>(&self, issuer: &Issuer<S>) {
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(&identity(issuer));
    }

    /// How many issuers have an entry.
    pub fn len(&self) -> usize {
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no issuer has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::IssuerScope;

    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Spec {}
    impl IssuerSpec for Spec {
        const GROUP: &'static str = "demo.certbridge.io";
        const NAME: &'static str = "Demo";
    }

    fn issuer(uid: &str, generation: i64) -> Issuer<Spec> {
        Issuer {
            name: "ca".into(),
            namespace: Some("team".into()),
            scope: IssuerScope::Namespaced,
            uid: uid.into(),
            generation,
            annotations: Default::default(),
            spec: Spec {},
        }
    }

    fn resources(version: &str) -> Resources {
        let mut s = crate::testing::secret("team", "creds", None, &[("token", b"t".as_slice())]);
        s.metadata.resource_version = Some(version.into());
        Resources::from_objects("team", vec![s], vec![])
    }

    #[tokio::test]
    async fn an_entry_lives_as_long_as_its_issuer_generation_and_secrets() {
        let cache: IssuerCache<String> = IssuerCache::new();
        let r1 = resources("1");
        r1.secret_string("creds", "token").await.unwrap();
        cache.insert(&issuer("u1", 1), &r1, "client-1".into());
        assert_eq!(cache.get(&issuer("u1", 1), &r1).as_deref().map(String::as_str), Some("client-1"));
        // A new generation, or a changed Secret, misses.
        assert!(cache.get(&issuer("u1", 2), &r1).is_none());
        let r2 = resources("2");
        r2.secret_string("creds", "token").await.unwrap();
        assert!(cache.get(&issuer("u1", 1), &r2).is_none());
        assert!(cache.latest(&issuer("u1", 1)).is_some() && cache.latest(&issuer("u1", 2)).is_none());
        // A new version replaces the old entry rather than adding one.
        cache.insert(&issuer("u1", 1), &r2, "client-2".into());
        assert_eq!(cache.len(), 1);
        // The issuer is deleted: every cache drops it.
        evict_issuer("u1");
        assert!(cache.is_empty());
    }
}
