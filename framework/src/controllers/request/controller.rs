//! The request controller, written once for both request APIs (issuer-lib's generic
//! `RequestController`): the request watch, the issuer caches whose readiness changes wake the
//! requests waiting on them, the reconcile entry and the error policy. What differs between the
//! APIs comes through [`RequestApi`]; the pass itself is [`pass::reconcile`].

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use kube::api::DynamicObject;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::{PredicateConfig, WatchStreamExt};
use kube::runtime::watcher;
use tracing::Instrument;

use super::{backlog, span};
use crate::controllers::decision::request::{Gate, gate};
use crate::controllers::prune;
use crate::controllers::request::api::RequestApi;
use crate::controllers::request::pass::{self, RequestCtx};
use crate::controllers::request::revoke;
use crate::controllers::shared::{Error, Kinds, Shared, issuer_target};
use crate::controllers::watch;
use crate::controllers::watch::CacheReady;
use crate::controllers::watch_decode::WithoutManagedFields;
use crate::issuer::IssuerScope;
use crate::signer::Signer;

/// Runs the controller for `R` until `shutdown` resolves; `caches` receives the readiness of
/// every cache it fills (what the runtime waits for before reporting ready).
pub(crate) async fn run<S: Signer, R: RequestApi>(
    shared: Arc<Shared<S>>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    caches: &mut Vec<CacheReady>,
) -> impl Future<Output = ()> + Send + 'static {
    let client = shared.client.clone();
    let kinds = shared.kinds.clone();
    let (reader, writer) = reflector::store::<R>();
    // Pruned before the store: a cluster keeps thousands of finished requests (see `prune`);
    // managedFields are skipped while decoding (see `watch_decode`).
    let pruned = watcher(R::watch_api(&client, namespace.as_deref()), any_semantic())
        .map_ok(WithoutManagedFields::into_event)
        .modify(R::prune);
    let (reflected, ready) = watch::mark_ready(reflector::reflector(writer, pruned));
    let stream = reflected
        .default_backoff()
        .touched_objects()
        .predicate_filter(|r: &R| Some(revoke::fingerprint(r)), PredicateConfig::default());
    caches.push(ready);
    let namespaced = shared.settings.serves(IssuerScope::Namespaced);
    shared.metrics.sample_backlog(backlog::sampler(reader.clone(), kinds.clone(), namespaced));

    let (cl_cache, cl_trigger) =
        watch::issuer_cache(&client, &kinds.cluster, None, pass::issuer_readiness_fingerprint, |_| ());
    caches.push(cl_cache.ready.clone());
    let watch_namespaced = R::NAMES_NAMESPACED_ISSUERS && shared.settings.serves(IssuerScope::Namespaced);
    let (ns_cache, ns_trigger) = watch_namespaced
        .then(|| {
            watch::issuer_cache(
                &client,
                &kinds.namespaced,
                namespace.as_deref(),
                pass::issuer_readiness_fingerprint,
                |_| (),
            )
        })
        .unzip();
    if let Some(cache) = &ns_cache {
        caches.push(cache.ready.clone());
    }

    let ctx = Arc::new(RequestCtx {
        shared,
        namespaced_issuers: ns_cache,
        cluster_issuers: cl_cache,
        backoff: Default::default(),
    });
    let mut controller = Controller::for_stream(stream, reader.clone())
        .with_config(Config::default().concurrency(concurrency))
        .watches_stream_with(
            cl_trigger,
            waiting_on(reader.clone(), kinds.clone(), IssuerScope::Cluster),
            kinds.cluster.resource.clone(),
        );
    if let Some(trigger) = ns_trigger {
        controller = controller.watches_stream_with(
            trigger,
            waiting_on(reader, kinds.clone(), IssuerScope::Namespaced),
            kinds.namespaced.resource.clone(),
        );
    }
    controller.graceful_shutdown_on(shutdown).run(reconcile::<S, R>, error_policy::<S, R>, ctx).for_each(
        |result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, controller = R::CONTROLLER, "request controller");
            }
        },
    )
}

fn any_semantic() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// Maps an issuer of `scope` to the requests naming it that are not finished yet.
fn waiting_on<R: RequestApi>(
    requests: Store<R>,
    kinds: Kinds,
    scope: IssuerScope,
) -> impl Fn(DynamicObject) -> Vec<ObjectRef<R>> + Send + Sync + 'static {
    move |issuer| {
        let target = issuer_target(&issuer, scope);
        requests
            .state()
            .iter()
            .filter(|r| r.target(&kinds).ok().flatten().as_ref() == Some(&target))
            .filter(|r| !r.finished())
            .map(|r| ObjectRef::from_obj(r.as_ref()))
            .collect()
    }
}

async fn reconcile<S: Signer, R: RequestApi>(request: Arc<R>, ctx: Arc<RequestCtx<S>>) -> Result<Action, Error> {
    let span = span::reconcile(&*request, &ctx.shared.kinds);
    let _in_flight = ctx.shared.metrics.in_flight(R::CONTROLLER);
    async move {
        let target = match request.target(&ctx.shared.kinds) {
            Ok(Some(target)) => target,
            Ok(None) => {
                tracing::trace!("foreign issuer, ignoring");
                return Ok(Action::await_change());
            }
            Err(why) => {
                tracing::debug!(why, "ignoring request");
                return Ok(Action::await_change());
            }
        };
        if !ctx.shared.settings.serves(target.scope) {
            // Not addressed to this controller any more than a foreign issuer's request: no write.
            tracing::debug!("names the namespaced issuer kind, which is disabled; ignoring");
            return Ok(Action::await_change());
        }
        if let Some(action) = revoke::before_pass(&ctx, request.as_ref(), &target).await? {
            return Ok(action);
        }
        let api = request.object_api(&ctx.shared.client);
        let mut view = request.view();
        let stale = ctx.shared.saved_states.is_stale(
            &view.uid,
            request.meta().resource_version.as_deref(),
            &view.state(ctx.shared.settings.group),
        );
        if (prune::needs_full(&view) || stale) && gate(&view) == Gate::Continue {
            // The cached copy lost its CSR (cached before approval), or predates the state this
            // process saved (the watch lags; see `state_cache`): read the request afresh.
            let Some(full) = api.get_opt(&view.name).await? else { return Ok(Action::await_change()) };
            view = full.view();
        }
        pass::reconcile(&ctx, view, target, api).await
    }
    .instrument(span)
    .await
}

fn error_policy<S: Signer, R: RequestApi>(request: Arc<R>, error: &Error, ctx: Arc<RequestCtx<S>>) -> Action {
    // In the request's span, so the line carries the request and issuer fields like the pass's own.
    let _span = span::reconcile(&*request, &ctx.shared.kinds).entered();
    ctx.shared.metrics.reconcile_error(R::CONTROLLER);
    let view = request.view();
    // No sooner than the CA asked (`Retry-After`), whatever the backoff says.
    let delay = ctx.backoff.next(&pass::backoff_key(&view)).max(error.no_sooner_than().unwrap_or_default());
    tracing::info!(
        // The controller, request and issuer are the span's fields.
        error = %error,
        retry_in = ?delay,
        "request reconcile failed"
    );
    Action::requeue(delay)
}
