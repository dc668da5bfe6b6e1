//! The Kubernetes `CertificateSigningRequest` controller: signer names
//! `<plural>.<group>/<name>` of the cluster-scoped kind only.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::{PredicateConfig, WatchStreamExt};
use kube::runtime::watcher;
use tracing::Instrument;

use crate::controllers::requests::{self, RequestCtx};
use crate::controllers::shared::{Error, Kinds, Shared, issuer_target};
use crate::controllers::view::{IssuerTarget, RequestView, csr_target};
use crate::controllers::watch;
use crate::issuer::IssuerScope;
use crate::signer::Signer;

const CONTROLLER: &str = "certificatesigningrequests";

/// Runs the controller until `shutdown` resolves.
pub(crate) async fn run<S: Signer>(
    shared: Arc<Shared<S>>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    caches: &mut Vec<Box<dyn crate::runtime::CacheReady>>,
) -> impl Future<Output = ()> + Send + 'static {
    let client = shared.client.clone();
    let kinds = shared.kinds.clone();
    let (cl_store, cl_trigger) =
        watch::issuer_cache(&client, &kinds.cluster, None, requests::issuer_readiness_fingerprint);
    let (reader, writer) = reflector::store::<CertificateSigningRequest>();
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default().any_semantic()))
        .default_backoff()
        .touched_objects()
        .predicate_filter(
            |csr: &CertificateSigningRequest| Some(requests::fingerprint(&RequestView::from_csr(csr))),
            PredicateConfig::default(),
        );
    caches.push(Box::new(reader.clone()));
    caches.push(Box::new(cl_store.clone()));
    let ctx = Arc::new(RequestCtx {
        shared,
        // CSRs never name a namespaced issuer: no cache, no watch.
        namespaced_issuers: None,
        cluster_issuers: cl_store,
        backoff: Default::default(),
    });
    let for_cl = reader.clone();
    let k = kinds.clone();
    Controller::for_stream(stream, reader)
        .with_config(Config::default().concurrency(concurrency))
        .watches_stream_with(cl_trigger, move |issuer| waiting_on(&for_cl, &k, &issuer), kinds.cluster.resource.clone())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "certificatesigningrequest controller");
            }
        })
}

fn target(csr: &CertificateSigningRequest, kinds: &Kinds) -> Option<IssuerTarget> {
    match csr_target(&csr.spec.signer_name, &kinds.namespaced.names, &kinds.cluster.names) {
        Ok(t) => t,
        Err(why) => {
            tracing::debug!(signer = %csr.spec.signer_name, why, "ignoring CSR");
            None
        }
    }
}

fn waiting_on(
    requests: &Store<CertificateSigningRequest>,
    kinds: &Kinds,
    issuer: &DynamicObject,
) -> Vec<ObjectRef<CertificateSigningRequest>> {
    let t = issuer_target(issuer, IssuerScope::Cluster);
    requests
        .state()
        .iter()
        .filter(|csr| target(csr, kinds).as_ref() == Some(&t))
        .filter(|csr| csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_none_or(|c| c.0.is_empty()))
        .map(|csr| ObjectRef::from_obj(csr.as_ref()))
        .collect()
}

async fn reconcile<S: Signer>(csr: Arc<CertificateSigningRequest>, ctx: Arc<RequestCtx<S>>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        controller = CONTROLLER,
        name = csr.metadata.name.as_deref().unwrap_or_default(),
        namespace = "",
    );
    async move {
        let Some(target) = target(&csr, &ctx.shared.kinds) else {
            return Ok(Action::await_change());
        };
        let view = RequestView::from_csr(&csr);
        let api: Api<CertificateSigningRequest> = Api::all(ctx.shared.client.clone());
        requests::reconcile(&ctx, view, target, api).await
    }
    .instrument(span)
    .await
}

fn error_policy<S: Signer>(csr: Arc<CertificateSigningRequest>, error: &Error, ctx: Arc<RequestCtx<S>>) -> Action {
    ctx.shared.metrics.reconcile_error(CONTROLLER);
    let view = RequestView::from_csr(&csr);
    let delay = ctx.backoff.next(&requests::backoff_key(&view));
    tracing::info!(name = %view.name, error = %error, retry_in = ?delay, "certificatesigningrequest reconcile failed");
    Action::requeue(delay)
}
