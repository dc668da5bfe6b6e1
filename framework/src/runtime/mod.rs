//! Running the controllers in-process: the CertificateRequest, Kubernetes CSR and two issuer
//! controllers of one signer, sharing one client, recorder, metrics and issuer-error channel.
//! `certbridge::run`'s `run` subcommand wraps this with leader election, probes and signals
//! ([`process`]; the servers in [`serve`]; `check -f`/`sign -f` without a cluster in [`offline`]);
//! tests call [`start`] directly against an embedded API server.

use std::sync::Arc;

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::runtime::events::{Recorder, Reporter};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) mod offline;
pub(crate) mod process;
pub(crate) mod serve;

use crate::api::CertificateRequest;
use crate::controllers::event_sink::{EventSink, SinkTask};
use crate::controllers::issuer;
use crate::controllers::request::controller;
use crate::controllers::shared::{IssuerErrors, Kinds, References, Settings, Shared};
use crate::controllers::watch::CacheReady;
use crate::issuer::{IssuerScope, IssuerSpec};
use crate::metrics::Metrics;
use crate::resources::ApiSource;
use crate::signer::Signer;

/// Installs ring as the process's rustls crypto provider, once, unless one is installed already:
/// the TLS clients of the framework (kube) and of the adapters (reqwest built with
/// `rustls-no-provider`) all use the process default, so adapters never install one.
/// [`crate::run_with`] and [`start`] call it; test equipment that builds TLS clients or servers
/// outside them (a CA simulator, a test server) calls it too.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race with another installer still leaves a provider installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

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
    /// What a CSR may hold (`--csr-max-*`); a request over a limit fails naming it.
    pub csr_limits: crate::pki::CsrLimits,
    /// How long a request may stay Pending at the CA before it fails (`--max-pending`).
    pub max_pending: Duration,
    /// The namespace of the Secret holding the request-state key (`--state-key-namespace`, the
    /// controller's own namespace); `None`: `$POD_NAMESPACE`, else the cluster resource namespace.
    pub state_key_namespace: Option<String>,
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
            csr_limits: Default::default(),
            max_pending: crate::controllers::decision::pending_limit::DEFAULT_MAX_PENDING,
            state_key_namespace: None,
        }
    }
}

/// Running controllers. Dropping the handle does not stop them; call [`ControllerHandle::shutdown`].
///
/// A controller task that ends by itself — returns, or panics (kube-runtime re-raises a panic of
/// a reconcile) — stops all the others: [`ControllerHandle::stopped`] resolves,
/// [`ControllerHandle::failure`] says which one and why, and [`ControllerHandle::is_alive`] turns
/// false (what `/healthz` reports), so the process exits instead of serving nothing.
pub struct ControllerHandle {
    token: CancellationToken,
    failure: Arc<std::sync::Mutex<Option<String>>>,
    tasks: Vec<JoinHandle<()>>,
    /// Waits for the caches; aborted, not awaited, on shutdown (a cache that never syncs must not
    /// keep the process alive).
    readiness: JoinHandle<()>,
    ready: tokio::sync::watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    /// Creates the requests' final events in the background; closed (drained) on shutdown.
    events: EventSink,
    event_task: SinkTask,
}

impl ControllerHandle {
    /// Whether every cache has synced (what `/readyz` reports).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Turns `true` once every cache has synced: `wait_for(|r| *r)` on it instead of polling.
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
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

    /// Why a controller ended by itself, if one did (`None` while all run, and after a requested
    /// shutdown).
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `false` once a controller has ended by itself: the process is about to exit non-zero.
    pub fn is_alive(&self) -> bool {
        self.failure().is_none()
    }

    /// Waits until the event of every request whose final status (Issued, Failed, Denied) has
    /// been written so far is created. Those events are written in the background, after the
    /// status they report (as client-go's recorder does for issuer-lib), so a reader that has just
    /// seen a request finish calls this before listing its events.
    pub async fn flush_events(&self) {
        self.events.flush().await
    }

    /// Stops every controller, letting in-flight reconciles finish, then creates the events they
    /// queued (giving up after 10 s if the API server cannot take them).
    pub async fn shutdown(self) {
        self.metrics.leader.set(0);
        self.token.cancel();
        self.readiness.abort();
        for task in self.tasks {
            let _ = task.await;
        }
        self.event_task.close().await;
    }
}

/// The name of the Secret holding the request-state key of the adapter with API group `group`
/// (in the controller's namespace; see [`crate::state_auth`]).
pub fn state_key_secret_name(group: &str) -> String {
    format!("{group}-state-key")
}

/// Starts the controllers of `signer` with `client`. Reads (or, on first start, creates) the
/// request-state key Secret first: without it no request state can be trusted, so this fails.
pub async fn start<S: Signer>(signer: S, client: kube::Client, opts: Options) -> anyhow::Result<ControllerHandle> {
    install_crypto_provider();
    if !opts.certificate_requests && !opts.certificate_signing_requests {
        anyhow::bail!("both the CertificateRequest and the CertificateSigningRequest controllers are disabled");
    }
    let group = <S::Spec as IssuerSpec>::GROUP;
    let key_namespace = opts
        .state_key_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| opts.cluster_resource_namespace.clone());
    let key_name = state_key_secret_name(group);
    let state_key = crate::state_auth::StateKey::load_or_create(client.clone(), &key_namespace, &key_name)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot load the request-state key: {e} (the controller needs get and create on Secret {key_namespace}/{key_name})"
            )
        })?;
    let instance =
        opts.instance.clone().or_else(|| std::env::var("POD_NAME").ok()).or_else(|| std::env::var("HOSTNAME").ok());
    let reporter = Reporter { controller: format!("{group}-controller"), instance };
    let recorder = Recorder::new(client.clone(), reporter.clone());
    // As many event creates in flight as reconciles, so the sink keeps up with the workers.
    let (events, event_task) = EventSink::start(client.clone(), reporter, usize::from(opts.concurrency.max(1)));
    let metrics = Arc::new(Metrics::default());
    // Running the controllers is what leading means (the `run` command starts them only once it
    // holds the lease).
    metrics.leader.set(1);
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
            csr_limits: opts.csr_limits,
            max_pending: opts.max_pending,
        },
        kinds: Kinds::of::<S::Spec>(),
        source: Arc::new(ApiSource::new(client)),
        recorder,
        events: events.clone(),
        metrics: metrics.clone(),
        issuer_errors: IssuerErrors::default(),
        references: References::default(),
        state_key: Arc::new(state_key),
        saved_states: Arc::default(),
        outages: Default::default(),
    });
    let token = CancellationToken::new();
    let concurrency = opts.concurrency.max(1);
    let mut caches: Vec<CacheReady> = Vec::new();
    let mut futures: Vec<(String, BoxFuture<'static, ()>)> = Vec::new();
    for scope in [IssuerScope::Namespaced, IssuerScope::Cluster].into_iter().filter(|s| shared.settings.serves(*s)) {
        let f =
            issuer::run(shared.clone(), scope, opts.namespace.clone(), concurrency, stop(&token), &mut caches).await;
        futures.push((format!("the {} controller", shared.kinds.get(scope).names.kind), Box::pin(f)));
    }
    if opts.certificate_requests {
        let f = controller::run::<S, CertificateRequest>(
            shared.clone(),
            opts.namespace.clone(),
            concurrency,
            stop(&token),
            &mut caches,
        )
        .await;
        futures.push(("the CertificateRequest controller".into(), Box::pin(f)));
    }
    if opts.certificate_signing_requests {
        let f = controller::run::<S, CertificateSigningRequest>(
            shared.clone(),
            opts.namespace.clone(),
            concurrency,
            stop(&token),
            &mut caches,
        )
        .await;
        futures.push(("the CertificateSigningRequest controller".into(), Box::pin(f)));
    }
    let failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let tasks: Vec<JoinHandle<()>> =
        futures.into_iter().map(|(name, f)| tokio::spawn(supervise(name, f, token.clone(), failure.clone()))).collect();
    let (flag, ready) = tokio::sync::watch::channel(false);
    let readiness = tokio::spawn(async move {
        futures::future::join_all(caches.iter().map(|c| c.wait())).await;
        flag.send_replace(true);
        tracing::info!("caches synced; ready");
    });
    Ok(ControllerHandle { token, failure, tasks, readiness, ready, metrics, events, event_task })
}

/// Runs one controller; if it ends by itself (returns or panics) before shutdown was requested,
/// records why and stops all the others: a process with a dead controller must not look healthy.
async fn supervise(
    name: String,
    controller: BoxFuture<'static, ()>,
    token: CancellationToken,
    failure: Arc<std::sync::Mutex<Option<String>>>,
) {
    use futures::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(controller).catch_unwind().await;
    let why = match outcome {
        Ok(()) if token.is_cancelled() => return,
        Ok(()) => format!("{name} stopped by itself"),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            format!("{name} panicked: {message}")
        }
    };
    tracing::error!(reason = %why, "a controller ended; stopping the others");
    failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(why);
    token.cancel();
}

fn stop(token: &CancellationToken) -> impl Future<Output = ()> + Send + Sync + 'static {
    let token = token.clone();
    async move { token.cancelled().await }
}
