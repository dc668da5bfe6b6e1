//! Running the controllers in-process: the CertificateRequest, Kubernetes CSR and two issuer
//! controllers of one signer, sharing one client, recorder, metrics and issuer-error channel.
//! `certbridge::run`'s `run` subcommand wraps this with leader election, probes and signals;
//! tests call [`start`] directly against an embedded API server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{Lookup, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::CertificateRequest;
use crate::controllers::shared::{IssuerErrors, Kinds, References, Settings, Shared};
use crate::controllers::{issuer, request_controller};
use crate::issuer::{IssuerScope, IssuerSpec};
use crate::kube_source::ApiSource;
use crate::metrics::Metrics;
use crate::signer::Signer;

/// Controller settings (the `run` subcommand's flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch only this namespace (CertificateRequests and namespaced issuers); `None` = all.
    pub namespace: Option<String>,
    /// Where cluster issuers read their Secrets and ConfigMaps.
    pub cluster_resource_namespace: String,
    /// How long a transient sign error is retried before the request fails.
    pub max_retry_duration: Duration,
    /// How often a Ready issuer is checked again.
    pub issuer_recheck_interval: Duration,
    /// Concurrent reconciles per controller.
    pub concurrency: u16,
    /// Serve cert-manager CertificateRequests.
    pub certificate_requests: bool,
    /// Serve Kubernetes CertificateSigningRequests.
    pub certificate_signing_requests: bool,
    /// Serve the namespaced issuer kind. `false` (`--disable-namespaced-issuers`) is for
    /// deployments with the cluster kind only: namespaced issuers are neither watched nor
    /// reconciled, CertificateRequests naming one are left untouched (as requests for another
    /// issuer are), and Secrets/ConfigMaps are watched only in the cluster resource namespace,
    /// so a Role there is all the Secret access the controller needs.
    pub namespaced_issuers: bool,
    /// The event reporter's instance (pod name); defaults to the host name.
    pub instance: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespace: None,
            cluster_resource_namespace: "cert-manager".into(),
            max_retry_duration: Duration::from_secs(180),
            issuer_recheck_interval: Duration::from_secs(300),
            concurrency: 4,
            certificate_requests: true,
            certificate_signing_requests: true,
            namespaced_issuers: true,
            instance: None,
        }
    }
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

/// Running controllers. Dropping the handle does not stop them; call [`ControllerHandle::shutdown`].
pub struct ControllerHandle {
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Waits for the caches; aborted, not awaited, on shutdown (a cache that never syncs must not
    /// keep the process alive).
    readiness: JoinHandle<()>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl ControllerHandle {
    /// Whether every cache has synced (what `/readyz` reports).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// A shared flag that turns true once every cache has synced.
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// The Prometheus text exposition of the controllers' metrics.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    /// A function rendering the metrics, for a metrics server.
    pub fn metrics_renderer(&self) -> impl Fn() -> String + Clone + Send + Sync + 'static {
        let metrics = self.metrics.clone();
        move || metrics.encode()
    }

    /// Resolves when any controller stops on its own (it should not) or shutdown is requested.
    pub async fn stopped(&self) {
        self.token.cancelled().await
    }

    /// Stops every controller, letting in-flight reconciles finish.
    pub async fn shutdown(self) {
        self.token.cancel();
        self.readiness.abort();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts the controllers of `signer` with `client`.
pub async fn start<S: Signer>(signer: S, client: kube::Client, opts: Options) -> anyhow::Result<ControllerHandle> {
    if !opts.certificate_requests && !opts.certificate_signing_requests {
        anyhow::bail!("both the CertificateRequest and the CertificateSigningRequest controllers are disabled");
    }
    let group = <S::Spec as IssuerSpec>::GROUP;
    let instance =
        opts.instance.clone().or_else(|| std::env::var("POD_NAME").ok()).or_else(|| std::env::var("HOSTNAME").ok());
    let reporter = Reporter { controller: format!("{group}-controller"), instance };
    let recorder = Recorder::new(client.clone(), reporter.clone());
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(Shared {
        signer: Arc::new(signer),
        client: client.clone(),
        settings: Settings {
            owner: group.to_owned(),
            group,
            cluster_resource_namespace: opts.cluster_resource_namespace.clone(),
            max_retry_duration: opts.max_retry_duration,
            issuer_recheck_interval: opts.issuer_recheck_interval,
            namespaced_issuers: opts.namespaced_issuers,
        },
        kinds: Kinds::of::<S::Spec>(),
        source: Arc::new(ApiSource::new(client)),
        recorder,
        reporter,
        metrics: metrics.clone(),
        issuer_errors: IssuerErrors::default(),
        references: References::default(),
    });
    let token = CancellationToken::new();
    let concurrency = opts.concurrency.max(1);
    let mut caches: Vec<Box<dyn CacheReady>> = Vec::new();
    let mut futures: Vec<BoxFuture<'static, ()>> = Vec::new();
    for scope in [IssuerScope::Namespaced, IssuerScope::Cluster].into_iter().filter(|s| shared.settings.serves(*s)) {
        let f =
            issuer::run(shared.clone(), scope, opts.namespace.clone(), concurrency, stop(&token), &mut caches).await;
        futures.push(Box::pin(f));
    }
    if opts.certificate_requests {
        let f = request_controller::run::<S, CertificateRequest>(
            shared.clone(),
            opts.namespace.clone(),
            concurrency,
            stop(&token),
            &mut caches,
        )
        .await;
        futures.push(Box::pin(f));
    }
    if opts.certificate_signing_requests {
        let f = request_controller::run::<S, CertificateSigningRequest>(
            shared.clone(),
            opts.namespace.clone(),
            concurrency,
            stop(&token),
            &mut caches,
        )
        .await;
        futures.push(Box::pin(f));
    }
    let tasks: Vec<JoinHandle<()>> = futures
        .into_iter()
        .map(|f| {
            let token = token.clone();
            tokio::spawn(async move {
                f.await;
                // A controller that ends by itself leaves the others useless: stop them all.
                token.cancel();
            })
        })
        .collect();
    let ready = Arc::new(AtomicBool::new(false));
    let flag = ready.clone();
    let readiness = tokio::spawn(async move {
        futures::future::join_all(caches.iter().map(|c| c.wait())).await;
        flag.store(true, Ordering::Release);
        tracing::info!("caches synced; ready");
    });
    Ok(ControllerHandle { token, tasks, readiness, ready, metrics })
}

fn stop(token: &CancellationToken) -> impl Future<Output = ()> + Send + Sync + 'static {
    let token = token.clone();
    async move { token.cancelled().await }
}
