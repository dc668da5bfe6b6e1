//! Watch streams the controllers share the shape of: issuer caches (reflector stores) with a
//! filtered trigger stream, namespace selection, and cache readiness ([`CacheReady`], a
//! notification the runtime waits on before reporting ready and a request pass waits on before
//! reading an issuer cache).

use futures::{Stream, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, Lookup, Store, store::Writer};
use kube::runtime::utils::{Predicate, PredicateConfig, WatchStreamExt};
use kube::runtime::watcher;

use crate::controllers::prune::Prune;
use crate::controllers::shared::Kind;
use crate::issuer::IssuerScope;

/// The API for `K` in `namespace`, or across all namespaces.
pub(crate) fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A cache of one issuer kind and a trigger stream filtered by `predicate`. `namespace` limits a
/// namespaced kind to one namespace (`--namespace`); cluster kinds ignore it. `on_delete` sees
/// every issuer the watch reports deleted.
pub(crate) fn issuer_cache(
    client: &kube::Client,
    kind: &Kind,
    namespace: Option<&str>,
    predicate: impl Predicate<DynamicObject> + Send + 'static,
    on_delete: impl Fn(&DynamicObject) + Send + 'static,
) -> (Cache<DynamicObject>, impl Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static) {
    let api: Api<DynamicObject> = match (kind.names.scope, namespace) {
        (IssuerScope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &kind.resource),
        _ => Api::all_with(client.clone(), &kind.resource),
    };
    let writer = Writer::new(kind.resource.clone());
    let reader = writer.as_reader();
    // managedFields are never read (see `prune`).
    let issuers = watcher(api, watcher::Config::default().any_semantic()).modify(Prune::prune);
    let (reflected, ready) = mark_ready(reflector::reflector(writer, issuers));
    let stream = reflected
        .default_backoff()
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(obj)) = event {
                on_delete(obj);
            }
        })
        .touched_objects()
        .predicate_filter(predicate, PredicateConfig::default());
    (Cache { store: reader, ready }, stream)
}

/// A reflector store and whether it has its first full list yet.
pub(crate) struct Cache<K: Lookup + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub store: Store<K>,
    pub ready: CacheReady,
}

/// Whether a cache has its first full list: what the runtime waits for before reporting ready,
/// and what a request pass waits for before reading an issuer cache.
///
/// Not kube-runtime's `Store::wait_until_ready`: it can miss its wake-up when several tasks wait
/// on the same store at once (seen here: a Controller's runner and the readiness task; one of them
/// stayed pending forever, about one start in three). It parks every waiter on one oneshot
/// receiver, which keeps only the last waker. A `tokio::sync::watch` channel wakes every waiter,
/// so nothing polls: the stream that fills the store sets the flag ([`mark_ready`]) and each
/// waiter is woken once.
#[derive(Clone)]
pub(crate) struct CacheReady(tokio::sync::watch::Receiver<bool>);

impl CacheReady {
    /// Resolves once the cache has its first full list, or once the stream filling it is gone
    /// (its controller stopped; no list will come), as `Store::wait_until_ready` does.
    pub(crate) async fn wait(&self) {
        let mut ready = self.0.clone();
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

/// Passes a reflector's output through and marks the cache ready at its first `InitDone`: the
/// reflector yields an event only after applying it, so the store then holds the full list.
pub(crate) fn mark_ready<K, S>(reflected: S) -> (impl Stream<Item = S::Item> + Send + 'static, CacheReady)
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let (flag, ready) = tokio::sync::watch::channel(false);
    let stream = reflected.inspect(move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            flag.send_replace(true);
        }
    });
    (stream, CacheReady(ready))
}
