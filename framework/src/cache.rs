//! [`IssuerCache`]: what an adapter builds per issuer (a client, a session, a prepared CA), kept
//! while nothing it was built from changed.
//!
//! An entry belongs to one issuer object (kind, namespace, name and UID) and is valid for one *version* of it: the
//! spec's generation plus the `resourceVersion` of every Secret and ConfigMap read through the
//! [`Resources`] passed in (what [`Resources::observed`] reports). A new generation or a changed
//! Secret replaces the entry; a re-created issuer (same name, new UID) replaces it too and never
//! sees the old value; a deleted issuer drops it (the issuer controllers of both kinds tell every
//! cache when their watch reports the delete). Adapters read their Secrets through `resources`
//! first, then ask the cache, so the key always covers what the value was built from.
//!
//! [`IssuerCache::get_or_try_insert_with`] builds at most once per issuer version however many
//! callers (the issuer check, every request's sign) ask at the same time: the first builds, the
//! others wait for its value. A build that fails is not kept: the next caller (one that was
//! waiting included) builds again.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::OnceCell;

use crate::issuer::{Issuer, IssuerSpec};
use crate::resources::{Reference, Resources};

/// The version of an issuer an entry was built for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    uid: String,
    generation: i64,
    observed: BTreeMap<Reference, Option<String>>,
}

/// One issuer's entry: the version it is for and the value, once built. The cell is shared by
/// every caller that asks for this version while it is being built (single flight).
struct Slot<T> {
    version: Version,
    cell: Arc<OnceCell<Arc<T>>>,
}

/// A per-issuer cache of `T`; see the [module docs](self). Cloning shares the cache.
pub struct IssuerCache<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for IssuerCache<T> {
    fn clone(&self) -> Self {
        IssuerCache { inner: self.inner.clone() }
    }
}

struct Inner<T> {
    /// Keyed by kind/namespace/name: at most one entry per issuer name, whatever its UID.
    entries: Mutex<HashMap<String, Slot<T>>>,
}

impl<T> Inner<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot<T>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Lets the issuer controller evict a deleted issuer from every cache without knowing `T`.
trait Evict: Send + Sync {
    fn evict(&self, uid: &str);
}

impl<T: Send + Sync> Evict for Inner<T> {
    fn evict(&self, uid: &str) {
        self.lock().retain(|_, s| s.version.uid != uid);
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

/// The entry key: kind/namespace/name. The UID is part of the [`Version`], so a re-created
/// issuer misses and *replaces* the old object's entry instead of adding one beside it.
fn identity<S: IssuerSpec>(issuer: &Issuer<S>) -> String {
    format!("{}/{}", issuer.kind(), issuer.display_name())
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
        let entries = self.inner.lock();
        entries.get(&identity(issuer)).filter(|s| s.version == version).and_then(|s| s.cell.get().cloned())
    }

    /// The value for this issuer's version, built by `build` if there is none. Concurrent callers
    /// for the same version share one build (the others wait for it); a failed build is returned
    /// to its caller and not kept, so the next caller builds again. A value for an older version
    /// (generation, UID or Secrets) is replaced.
    pub async fn get_or_try_insert_with<S, F, Fut, E>(
        &self,
        issuer: &Issuer<S>,
        resources: &Resources,
        build: F,
    ) -> Result<Arc<T>, E>
    where
        S: IssuerSpec,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let version = Self::version(issuer, resources);
        let cell = {
            let mut entries = self.inner.lock();
            match entries.get(&identity(issuer)) {
                Some(slot) if slot.version == version => slot.cell.clone(),
                _ => {
                    let cell = Arc::new(OnceCell::new());
                    entries.insert(identity(issuer), Slot { version, cell: cell.clone() });
                    cell
                }
            }
        };
        // Outside the map's lock: a build may take a while (a login), other issuers go on.
        cell.get_or_try_init(|| async { build().await.map(Arc::new) }).await.cloned()
    }

    /// The value built for this issuer object at its current generation, whatever Secrets it was
    /// built from: for an adapter that re-reads its Secrets only now and then (and compares what
    /// it read itself) rather than on every call.
    pub fn latest<S: IssuerSpec>(&self, issuer: &Issuer<S>) -> Option<Arc<T>> {
        let entries = self.inner.lock();
        entries
            .get(&identity(issuer))
            .filter(|s| s.version.uid == issuer.uid && s.version.generation == issuer.generation)
            .and_then(|s| s.cell.get().cloned())
    }

    /// The value held for this issuer object (same UID), whatever generation and Secrets it was
    /// built for: to carry state (a rotated token) from an outdated value into the one that
    /// replaces it. Ask before [`IssuerCache::get_or_try_insert_with`], which replaces it.
    pub fn previous<S: IssuerSpec>(&self, issuer: &Issuer<S>) -> Option<Arc<T>> {
        let entries = self.inner.lock();
        entries.get(&identity(issuer)).filter(|s| s.version.uid == issuer.uid).and_then(|s| s.cell.get().cloned())
    }

    /// Stores `value` for this issuer's current version, replacing what an older version built.
    pub fn insert<S: IssuerSpec>(&self, issuer: &Issuer<S>, resources: &Resources, value: T) -> Arc<T> {
        let value = Arc::new(value);
        let version = Self::version(issuer, resources);
        let cell = Arc::new(OnceCell::new_with(Some(value.clone())));
        self.inner.lock().insert(identity(issuer), Slot { version, cell });
        value
    }

    /// Declares `value` — this issuer's entry — valid for the version `resources` reports now.
    /// For a value that wrote a Secret it was built from ([`Resources::update_secret_key`]): its
    /// own write changed the Secret's `resourceVersion`, and without this the next caller would
    /// build the value again. Returns false (and changes nothing) when the entry is no longer
    /// `value` (replaced, evicted) or belongs to another object or generation.
    pub fn rekey<S: IssuerSpec>(&self, issuer: &Issuer<S>, resources: &Resources, value: &Arc<T>) -> bool {
        let mut entries = self.inner.lock();
        match entries.get_mut(&identity(issuer)) {
            Some(slot)
                if slot.version.uid == issuer.uid
                    && slot.version.generation == issuer.generation
                    && slot.cell.get().is_some_and(|v| Arc::ptr_eq(v, value)) =>
            {
                slot.version = Self::version(issuer, resources);
                true
            }
            _ => false,
        }
    }

    /// Drops this issuer's entry (e.g. after the CA refused what it holds).
    pub fn remove<S: IssuerSpec>(&self, issuer: &Issuer<S>) {
        let mut entries = self.inner.lock();
        if entries.get(&identity(issuer)).is_some_and(|s| s.version.uid == issuer.uid) {
            entries.remove(&identity(issuer));
        }
    }

    /// Every value held now, one per issuer (for totals and metrics; a build still running is
    /// not included).
    pub fn values(&self) -> Vec<Arc<T>> {
        self.inner.lock().values().filter_map(|s| s.cell.get().cloned()).collect()
    }

    /// How many issuers have a value.
    pub fn len(&self) -> usize {
        self.inner.lock().values().filter(|s| s.cell.initialized()).count()
    }

    /// Whether no issuer has a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::issuer::IssuerScope;

    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Spec {}
    impl IssuerSpec for Spec {
        const GROUP: &'static str = "demo.certbridge.io";
        const NAME: &'static str = "Demo";
    }

    fn issuer(uid: &str, generation: i64) -> Issuer<Spec> {
        named("ca", uid, generation)
    }

    fn named(name: &str, uid: &str, generation: i64) -> Issuer<Spec> {
        Issuer {
            name: name.into(),
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

    async fn read(version: &str) -> Resources {
        let r = resources(version);
        r.secret_string("creds", "token").await.unwrap();
        r
    }

    #[tokio::test]
    async fn an_entry_lives_as_long_as_its_issuer_generation_and_secrets() {
        let cache: IssuerCache<String> = IssuerCache::new();
        let r1 = read("1").await;
        cache.insert(&issuer("u1", 1), &r1, "client-1".into());
        assert_eq!(cache.get(&issuer("u1", 1), &r1).as_deref().map(String::as_str), Some("client-1"));
        // A new generation, or a changed Secret, misses.
        assert!(cache.get(&issuer("u1", 2), &r1).is_none());
        let r2 = read("2").await;
        assert!(cache.get(&issuer("u1", 1), &r2).is_none());
        assert!(cache.latest(&issuer("u1", 1)).is_some() && cache.latest(&issuer("u1", 2)).is_none());
        // A new version replaces the old entry rather than adding one.
        cache.insert(&issuer("u1", 1), &r2, "client-2".into());
        assert_eq!(cache.len(), 1);
        // The issuer is deleted: every cache drops it.
        evict_issuer("u1");
        assert!(cache.is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_callers_share_one_build() {
        const N: usize = 16;
        let cache: IssuerCache<String> = IssuerCache::new();
        let builds = Arc::new(AtomicUsize::new(0));
        let arrived = Arc::new(AtomicUsize::new(0));
        // Holds the build until every caller is inside `get_or_try_insert_with`.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let r = read("1").await;
        let mut tasks = vec![];
        for _ in 0..N {
            let (cache, builds, arrived, gate, r) =
                (cache.clone(), builds.clone(), arrived.clone(), gate.clone(), r.clone());
            tasks.push(tokio::spawn(async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                cache
                    .get_or_try_insert_with(&issuer("single-flight", 1), &r, || async {
                        builds.fetch_add(1, Ordering::SeqCst);
                        let _permit = gate.acquire().await.expect("gate open");
                        Ok::<_, String>("client".to_owned())
                    })
                    .await
            }));
        }
        // One thread: each task runs until it waits (in the build, or for the build).
        while arrived.load(Ordering::SeqCst) < N {
            tokio::task::yield_now().await;
        }
        for _ in 0..N {
            tokio::task::yield_now().await;
        }
        gate.add_permits(N);
        let mut values = vec![];
        for t in tasks {
            values.push(t.await.unwrap().unwrap());
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1, "N callers, one build");
        assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])), "every caller got the same value");
        assert_eq!(cache.get(&issuer("single-flight", 1), &r).as_deref().map(String::as_str), Some("client"));
    }

    #[tokio::test]
    async fn a_failed_build_is_not_kept() {
        let cache: IssuerCache<String> = IssuerCache::new();
        let r = read("1").await;
        let builds = AtomicUsize::new(0);
        let build = |ok: bool| {
            builds.fetch_add(1, Ordering::SeqCst);
            async move { if ok { Ok("client".to_owned()) } else { Err("login refused".to_owned()) } }
        };
        let e = cache.get_or_try_insert_with(&issuer("fails", 1), &r, || build(false)).await.unwrap_err();
        assert_eq!(e, "login refused");
        assert!(cache.get(&issuer("fails", 1), &r).is_none() && cache.is_empty());
        let v = cache.get_or_try_insert_with(&issuer("fails", 1), &r, || build(true)).await.unwrap();
        assert_eq!(*v, "client");
        // Kept now: a third call does not build.
        let again = cache.get_or_try_insert_with(&issuer("fails", 1), &r, || build(true)).await.unwrap();
        assert!(Arc::ptr_eq(&v, &again));
        assert_eq!(builds.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_recreated_issuer_never_gets_the_old_objects_value() {
        let cache: IssuerCache<String> = IssuerCache::new();
        let r = read("1").await;
        let old = named("recreated", "uid-old", 1);
        cache.get_or_try_insert_with(&old, &r, || async { Ok::<_, ()>("old".to_owned()) }).await.unwrap();
        // Same kind, namespace, name and generation, new UID: a miss, and the old entry goes.
        let new = named("recreated", "uid-new", 1);
        assert!(cache.get(&new, &r).is_none() && cache.latest(&new).is_none());
        let v = cache.get_or_try_insert_with(&new, &r, || async { Ok::<_, ()>("new".to_owned()) }).await.unwrap();
        assert_eq!(*v, "new");
        assert_eq!(cache.len(), 1, "replaced, not added beside");
        assert!(cache.previous(&old).is_none(), "nothing carries over to or from another object");
        assert_eq!(cache.previous(&named("recreated", "uid-new", 2)).as_deref().map(String::as_str), Some("new"));
        // Deleting the old object (a late watch event) leaves the new one alone.
        evict_issuer("uid-old");
        cache.remove(&old);
        assert_eq!(cache.get(&new, &r).as_deref().map(String::as_str), Some("new"));
    }

    #[tokio::test]
    async fn values_lists_live_entries_and_rekey_survives_an_own_write() {
        let cache: IssuerCache<String> = IssuerCache::new();
        let r1 = read("1").await;
        for (name, uid) in [("a", "values-a"), ("b", "values-b")] {
            cache.insert(&named(name, uid, 1), &r1, format!("client-{name}"));
        }
        let mut values: Vec<String> = cache.values().iter().map(|v| v.to_string()).collect();
        values.sort();
        assert_eq!(values, ["client-a", "client-b"]);
        evict_issuer("values-a");
        assert_eq!(cache.values().len(), 1);

        // The value wrote its Secret (resourceVersion 1 → 2): rekeyed, the next reader hits.
        let b = named("b", "values-b", 1);
        let value = cache.get(&b, &r1).unwrap();
        let r2 = read("2").await;
        assert!(cache.get(&b, &r2).is_none());
        assert!(cache.rekey(&b, &r2, &value));
        assert!(Arc::ptr_eq(&cache.get(&b, &r2).unwrap(), &value));
        // Not for a value that is not the entry any more.
        let stale = Arc::new("stale".to_owned());
        assert!(!cache.rekey(&b, &r1, &stale));
        assert!(cache.get(&b, &r2).is_some());
    }
}
