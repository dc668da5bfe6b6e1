//! The cert-manager `CertificateRequest` controller.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::{PredicateConfig, WatchStreamExt};
use kube::runtime::watcher;
use tracing::Instrument;

use crate::api::CertificateRequest;
use crate::controllers::requests::{self, RequestCtx};
use crate::controllers::shared::{Error, Shared, issuer_target};
use crate::controllers::view::{RequestView, certificate_request_target};
use crate::controllers::watch;
use crate::issuer::IssuerScope;
use crate::signer::Signer;

const CONTROLLER: &str = "certificaterequests";

/// Runs the controller until `shutdown` resolves. `ready` receives the stores to wait on.
pub(crate) async fn run<S: Signer>(
    shared: Arc<Shared<S>>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    caches: &mut Vec<Box<dyn crate::runtime::CacheReady>>,
) -> impl Future<Output = ()> + Send + 'static {
    let client = shared.client.clone();
    let kinds = shared.kinds.clone();
    let (ns_store, ns_trigger) =
        watch::issuer_cache(&client, &kinds.namespaced, namespace.as_deref(), requests::issuer_readiness_fingerprint);
    let (cl_store, cl_trigger) =
        watch::issuer_cache(&client, &kinds.cluster, None, requests::issuer_readiness_fingerprint);
    let (reader, writer) = reflector::store::<CertificateRequest>();
    let api: Api<CertificateRequest> = watch::api(&client, namespace.as_deref());
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default().any_semantic()))
        .default_backoff()
        .touched_objects()
        .predicate_filter(
            |cr: &CertificateRequest| Some(requests::fingerprint(&RequestView::from_certificate_request(cr))),
            PredicateConfig::default(),
        );
    caches.push(Box::new(reader.clone()));
    caches.push(Box::new(ns_store.clone()));
    caches.push(Box::new(cl_store.clone()));

    let ctx = Arc::new(RequestCtx {
        shared,
        namespaced_issuers: Some(ns_store),
        cluster_issuers: cl_store,
        backoff: Default::default(),
    });
    let (for_ns, for_cl) = (reader.clone(), reader.clone());
    let (k1, k2) = (kinds.clone(), kinds.clone());
    Controller::for_stream(stream, reader)
        .with_config(Config::default().concurrency(concurrency))
        .watches_stream_with(
            ns_trigger,
            move |issuer| waiting_on(&for_ns, &k1, &issuer, IssuerScope::Namespaced),
            kinds.namespaced.resource.clone(),
        )
        .watches_stream_with(
            cl_trigger,
            move |issuer| waiting_on(&for_cl, &k2, &issuer, IssuerScope::Cluster),
            kinds.cluster.resource.clone(),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "certificaterequest controller");
            }
        })
}

/// The requests naming `issuer` that are not finished yet.
fn waiting_on(
    requests: &Store<CertificateRequest>,
    kinds: &crate::controllers::shared::Kinds,
    issuer: &DynamicObject,
    scope: IssuerScope,
) -> Vec<ObjectRef<CertificateRequest>> {
    let target = issuer_target(issuer, scope);
    requests
        .state()
        .iter()
        .filter(|cr| {
            certificate_request_target(cr, &kinds.namespaced.names, &kinds.cluster.names).as_ref() == Some(&target)
        })
        .filter(|cr| cr.condition("Ready").is_none_or(|c| c.status != "True" && c.reason.as_deref() != Some("Failed")))
        .map(|cr| ObjectRef::from_obj(cr.as_ref()))
        .collect()
}

async fn reconcile<S: Signer>(cr: Arc<CertificateRequest>, ctx: Arc<RequestCtx<S>>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        controller = CONTROLLER,
        name = cr.metadata.name.as_deref().unwrap_or_default(),
        namespace = cr.metadata.namespace.as_deref().unwrap_or_default(),
    );
    async move {
        let kinds = &ctx.shared.kinds;
        let Some(target) = certificate_request_target(&cr, &kinds.namespaced.names, &kinds.cluster.names) else {
            tracing::trace!("foreign issuer, ignoring");
            return Ok(Action::await_change());
        };
        let view = RequestView::from_certificate_request(&cr);
        let api: Api<CertificateRequest> =
            Api::namespaced(ctx.shared.client.clone(), cr.metadata.namespace.as_deref().unwrap_or_default());
        requests::reconcile(&ctx, view, target, api).await
    }
    .instrument(span)
    .await
}

fn error_policy<S: Signer>(cr: Arc<CertificateRequest>, error: &Error, ctx: Arc<RequestCtx<S>>) -> Action {
    ctx.shared.metrics.reconcile_error(CONTROLLER);
    let view = RequestView::from_certificate_request(&cr);
    let delay = ctx.backoff.next(&requests::backoff_key(&view));
    tracing::info!(name = %view.display_name(), error = %error, retry_in = ?delay, "certificaterequest reconcile failed");
    Action::requeue(delay)
}
