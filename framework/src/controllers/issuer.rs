//! The issuer controller, one per kind: keeps the Ready condition true to what the adapter's
//! `check` says, re-checks periodically and whenever a Secret or ConfigMap the issuer read
//! changes, flips the issuer to not-ready when signing reports an issuer problem, and holds a
//! permanent failure until the spec's generation changes.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::WatchStreamExt;
use kube::runtime::watcher;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::Instrument;

use crate::controllers::decision::IssuerCond;
use crate::controllers::decision::issuer::{self as decision, IssuerOutcome, IssuerStep};
use crate::controllers::shared::{Backoff, Error, Kind, Shared, action, issuer_ready, issuer_target, typed_issuer};
use crate::controllers::view::IssuerTarget;
use crate::controllers::watch;
use crate::error::SignError;
use crate::issuer::{IssuerScope, IssuerSpec};
use crate::metrics::IssuerLabels;
use crate::resources::{RefKind, Resources};
use crate::signer::{Ready, Signer};

/// Context of one issuer controller.
struct IssuerCtx<S: Signer> {
    shared: Arc<Shared<S>>,
    scope: IssuerScope,
    backoff: Backoff,
}

/// What should wake an issuer (issuer-lib's `IssuerPredicate`): a new generation, changed
/// annotations, or its Ready condition appearing or disappearing. Our own Ready writes do not.
fn fingerprint(obj: &DynamicObject) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.metadata.generation.hash(&mut h);
    obj.metadata.annotations.hash(&mut h);
    issuer_ready(obj).is_some().hash(&mut h);
    Some(h.finish())
}

/// Runs the controller of the `scope` kind until `shutdown` resolves.
pub(crate) async fn run<S: Signer>(
    shared: Arc<Shared<S>>,
    scope: IssuerScope,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    caches: &mut Vec<watch::CacheReady>,
) -> impl Future<Output = ()> + Send + 'static {
    let client = shared.client.clone();
    let kind = shared.kinds.get(scope).clone();
    // A deleted issuer: forget what it read and drop what adapters cached for it.
    let forget = shared.clone();
    let on_delete = move |obj: &DynamicObject| {
        forget.references.remove(&issuer_target(obj, scope));
        if let Some(uid) = &obj.metadata.uid {
            crate::cache::evict_issuer(uid);
        }
    };
    let (cache, trigger) = watch::issuer_cache(&client, &kind, namespace.as_deref(), fingerprint, on_delete);
    caches.push(cache.ready);
    // Issuer problems reported by the request controllers.
    let reported = UnboundedReceiverStream::new(shared.issuer_errors.subscribe(scope));
    // Secrets and ConfigMaps, metadata only: the controller needs to know *that* one changed,
    // never its data, so no secret value is ever held in a cache.
    let refs_namespace = match scope {
        IssuerScope::Cluster => Some(shared.settings.cluster_resource_namespace.clone()),
        IssuerScope::Namespaced => namespace.clone(),
    };
    let secrets: Api<PartialObjectMeta<Secret>> = watch::api(&client, refs_namespace.as_deref());
    let config_maps: Api<PartialObjectMeta<ConfigMap>> = watch::api(&client, refs_namespace.as_deref());
    let secret_changes =
        watcher(secrets, watcher::Config::default().any_semantic()).default_backoff().touched_objects();
    let config_map_changes =
        watcher(config_maps, watcher::Config::default().any_semantic()).default_backoff().touched_objects();
    let ctx = Arc::new(IssuerCtx { shared: shared.clone(), scope, backoff: Backoff::default() });
    let (s1, s2, k1, k2) = (shared.clone(), shared, kind.clone(), kind.clone());
    Controller::for_stream_with(trigger, cache.store, kind.resource.clone())
        .with_config(Config::default().concurrency(concurrency))
        .reconcile_on(reported)
        .watches_stream(secret_changes, move |m| readers(&s1, &k1, scope, RefKind::Secret, &m.metadata))
        .watches_stream(config_map_changes, move |m| readers(&s2, &k2, scope, RefKind::ConfigMap, &m.metadata))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "issuer controller");
            }
        })
}

/// The issuers of `scope` whose last check read the object `meta` names.
fn readers<S: Signer>(
    shared: &Shared<S>,
    kind: &Kind,
    scope: IssuerScope,
    ref_kind: RefKind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<ObjectRef<DynamicObject>> {
    let reference = (ref_kind, meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default());
    // A deleted object reads as absent, as it did to a check that found it missing.
    let version = if meta.deletion_timestamp.is_some() { None } else { meta.resource_version.as_deref() };
    shared.references.touched(scope, &reference, version).iter().map(|t| kind.object_ref(t)).collect()
}

async fn reconcile<S: Signer>(obj: Arc<DynamicObject>, ctx: Arc<IssuerCtx<S>>) -> Result<Action, Error> {
    let span = issuer_span(&obj, &ctx);
    let _in_flight = ctx.shared.metrics.in_flight(&ctx.shared.kinds.get(ctx.scope).names.kind);
    async move {
        let result = reconcile_issuer(&obj, &ctx).await;
        if result.is_ok() {
            ctx.backoff.reset(&key(&issuer_target(&obj, ctx.scope)));
        }
        result
    }
    .instrument(span)
    .await
}

/// The span of one issuer reconcile; field names as the request span's (README "Logs").
fn issuer_span<S: Signer>(obj: &DynamicObject, ctx: &IssuerCtx<S>) -> tracing::Span {
    let kind = ctx.shared.kinds.get(ctx.scope).names.kind.as_str();
    tracing::info_span!(
        "reconcile",
        controller = kind,
        issuer.kind = kind,
        issuer.namespace = obj.metadata.namespace.as_deref(),
        issuer.name = obj.metadata.name.as_deref().unwrap_or_default(),
        issuer.uid = obj.metadata.uid.as_deref().unwrap_or_default(),
    )
}

async fn reconcile_issuer<S: Signer>(obj: &DynamicObject, ctx: &IssuerCtx<S>) -> Result<Action, Error> {
    let shared = &ctx.shared;
    let target = issuer_target(obj, ctx.scope);
    let generation = obj.metadata.generation.unwrap_or(0);
    let current = issuer_ready(obj);
    let reported = shared.issuer_errors.take(&target);
    let references = shared.references.take(&target);
    let owner = &shared.settings.owner;
    let outcome = match decision::issuer_gate(current.as_ref(), generation, references, reported.as_deref(), owner) {
        IssuerStep::Ignore => {
            tracing::debug!(
                "permanently failed at this generation; waiting for a change of the spec or of what it references"
            );
            set_ready_gauge(shared, &target, false);
            return Ok(Action::await_change());
        }
        IssuerStep::Write(outcome) => outcome,
        IssuerStep::Check => {
            let result = check(obj, &target, ctx).await;
            if let Err(e) = &result {
                tracing::info!(error = %e, "issuer check did not pass");
            }
            decision::issuer_checked(result, shared.settings.issuer_recheck_interval)
        }
    };
    write(shared, ctx.scope, obj, &target, current.as_ref(), &outcome).await?;
    action(&outcome.next)
}

/// Runs the adapter's check on the typed issuer, recording what it read.
async fn check<S: Signer>(obj: &DynamicObject, target: &IssuerTarget, ctx: &IssuerCtx<S>) -> Result<Ready, SignError> {
    let shared = &ctx.shared;
    let issuer = typed_issuer::<S::Spec>(obj, ctx.scope).map_err(SignError::permanent)?;
    issuer.spec.validate().map_err(|e| SignError::permanent(format!("invalid issuer spec: {e}")))?;
    let resources = Resources::new(shared.source.clone(), shared.resource_namespace(target));
    // A child span per call into the adapter, so a slow CA or HSM shows in a trace.
    let result = shared.signer.check(&issuer, &resources).instrument(tracing::info_span!("check")).await;
    shared.references.set(target, resources.observed());
    result
}

async fn write<S: Signer>(
    shared: &Shared<S>,
    scope: IssuerScope,
    obj: &DynamicObject,
    target: &IssuerTarget,
    current: Option<&IssuerCond>,
    outcome: &IssuerOutcome,
) -> Result<(), Error> {
    let kind = shared.kinds.get(scope);
    let field_manager = shared.settings.field_manager(&kind.names.plural);
    crate::controllers::ssa::apply_issuer_ready(
        &shared.client,
        &field_manager,
        &kind.resource,
        target.namespace.as_deref(),
        &target.name,
        obj.metadata.generation.unwrap_or(0),
        current,
        &outcome.ready,
        Timestamp::now(),
    )
    .await?;
    // Periodic re-checks that change nothing would repeat the same event every interval.
    let changed = current.is_none_or(|c| c.status != outcome.ready.status || c.reason != outcome.ready.reason);
    if let Some(ev) = outcome.event.as_ref().filter(|_| changed) {
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(kind.resource.api_version.clone()),
            kind: Some(kind.resource.kind.clone()),
            name: Some(target.name.clone()),
            namespace: target.namespace.clone(),
            uid: obj.metadata.uid.clone(),
            ..Default::default()
        };
        shared.publish(ev, &reference).await;
    }
    set_ready_gauge(shared, target, outcome.is_ready());
    Ok(())
}

fn set_ready_gauge<S: Signer>(shared: &Shared<S>, target: &IssuerTarget, ready: bool) {
    shared
        .metrics
        .issuer_ready
        .get_or_create(&IssuerLabels {
            kind: shared.kinds.get(target.scope).names.kind.clone(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name: target.name.clone(),
        })
        .set(i64::from(ready));
}

fn key(target: &IssuerTarget) -> String {
    format!("{:?}/{}/{}", target.scope, target.namespace.as_deref().unwrap_or(""), target.name)
}

fn error_policy<S: Signer>(obj: Arc<DynamicObject>, error: &Error, ctx: Arc<IssuerCtx<S>>) -> Action {
    let kind = &ctx.shared.kinds.get(ctx.scope).names.kind;
    ctx.shared.metrics.reconcile_error(kind);
    let target = issuer_target(&obj, ctx.scope);
    let delay = ctx.backoff.next(&key(&target));
    let _span = issuer_span(&obj, &ctx).entered();
    tracing::info!(error = %error, retry_in = ?delay, "issuer reconcile failed");
    Action::requeue(delay)
}
