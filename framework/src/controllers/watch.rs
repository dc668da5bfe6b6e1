//! Watch streams the controllers share the shape of: issuer caches (reflector stores) with a
//! filtered trigger stream, and namespace selection.

use futures::Stream;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, Store, store::Writer};
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
/// namespaced kind to one namespace (`--namespace`); cluster kinds ignore it.
pub(crate) fn issuer_cache(
    client: &kube::Client,
    kind: &Kind,
    namespace: Option<&str>,
    predicate: impl Predicate<DynamicObject> + Send + 'static,
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
        .touched_objects()
        .predicate_filter(predicate, PredicateConfig::default());
    (reader, stream)
}
