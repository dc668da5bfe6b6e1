//! Watch streams the controllers share the shape of: issuer caches (reflector stores) with a
//! filtered trigger stream, namespace selection, and cache readiness (what the runtime waits for
//! before reporting ready, and what a request pass waits for before reading an issuer cache).

use std::time::Duration;

use futures::future::BoxFuture;
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
) -> (Store<DynamicObject>, impl Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static) {
    let api: Api<DynamicObject> = match (kind.names.scope, namespace) {
        (IssuerScope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &kind.resource),
        _ => Api::all_with(client.clone(), &kind.resource),
    };
    let writer = Writer::new(kind.resource.clone());
    let reader = writer.as_reader();
    // managedFields are never read (see `prune`).
    let issuers = watcher(api, watcher::Config::default().any_semantic()).modify(Prune::prune);
    let stream = reflector::reflector(writer, issuers)
        .default_backoff()
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(obj)) = event {
                on_delete(obj);
            }
        })
        .touched_objects()
        .predicate_filter(predicate, PredicateConfig::default());
    (reader, stream)
}

/// A cache whose first list the controllers wait for before reporting ready.
pub(crate) trait CacheReady: Send + Sync {
    /// Resolves once the cache has its first full list.
    fn wait(&self) -> BoxFuture<'static, ()>;
}

impl<K> CacheReady for Store<K>
where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    fn wait(&self) -> BoxFuture<'static, ()> {
        let store = self.clone();
        Box::pin(async move { wait_until_ready(&store).await })
    }
}

/// Resolves once `store` has its first full list.
///
/// kube-runtime's `Store::wait_until_ready` can miss its wake-up when several tasks wait on the
/// same store at once (seen here: a Controller's runner and the readiness task; one of them stays
/// pending forever). A fresh `wait_until_ready` future does resolve at its first poll once the store
/// is ready, so this polls a fresh one on a short interval instead of parking on one.
pub(crate) async fn wait_until_ready<K>(store: &Store<K>)
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::FutureExt;
    while store.wait_until_ready().now_or_never().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
