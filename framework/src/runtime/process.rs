//! The `run` command's process around the controllers: the API client, the probe and metrics
//! servers, leader election (a Lease per issuer group), and shutdown on signals, on a lost lease
//! or when a controller stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Options;
use super::serve::MetricsServing;
use crate::issuer::IssuerSpec;
use crate::signer::Signer;

/// What `run` was asked to do, parsed from the command line by the CLI.
pub(crate) struct Process {
    /// Kubeconfig file; `None`: $KUBECONFIG, ~/.kube/config, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Serve `/healthz` and `/readyz` here.
    pub health_addr: Option<SocketAddr>,
    pub metrics: MetricsServing,
    /// Run only while holding the Lease, in this namespace.
    pub leader_elect: bool,
    pub lease_namespace: String,
    /// The controllers' settings.
    pub options: Options,
}

pub(crate) async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Runs the controllers of `signer` as a process: probes and metrics servers, leader election,
/// and shutdown on SIGTERM/SIGINT, on a lost lease or when a controller stops (then with an error,
/// so the process exits non-zero and /healthz fails meanwhile).
pub(crate) async fn run<S: Signer>(signer: S, args: Process) -> anyhow::Result<()> {
    let client = client(args.kubeconfig.as_ref()).await?;
    let group = <S::Spec as IssuerSpec>::GROUP;
    let ready = Arc::new(AtomicBool::new(false));
    let alive = Arc::new(AtomicBool::new(true));
    let metrics: Arc<std::sync::OnceLock<Box<dyn Fn() -> String + Send + Sync>>> = Arc::default();
    // A follower serves `certbridge_leader 0` until it leads and the controllers' metrics exist.
    let controllers: Arc<std::sync::OnceLock<Box<dyn Fn() -> String + Send + Sync>>> = Arc::default();
    let rendered = controllers.clone();
    let _ = metrics.set(Box::new(move || rendered.get().map_or_else(crate::metrics::follower_text, |r| r())));
    if let Some(addr) = args.health_addr {
        super::serve::health(addr, ready.clone(), alive.clone()).await?;
    }
    args.metrics.serve(metrics.clone(), &client).await?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);

    let lease = if args.leader_elect {
        let namespace = args.lease_namespace.clone();
        let lease_name = format!("{group}-controller");
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &lease_name)
            .with_namespace(&namespace)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await?;
        let (mut is_leader, task) = manager.watch().await;
        tracing::info!(lease = %lease_name, namespace = %namespace, "waiting to become the leader");
        tokio::select! {
            r = is_leader.wait_for(|l| *l) => { r?; }
            _ = &mut shutdown => return Ok(()),
        }
        tracing::info!("became the leader");
        Some((is_leader, task))
    } else {
        None
    };

    let handle = super::start(signer, client, args.options).await?;
    let _ = controllers.set(Box::new(handle.metrics_renderer()));
    let mut synced = handle.ready();
    let ready_task = tokio::spawn(async move {
        if synced.wait_for(|r| *r).await.is_ok() {
            ready.store(true, Ordering::Release);
        }
    });

    let lost_leadership = async {
        match &lease {
            Some((is_leader, _)) => {
                let mut rx = is_leader.clone();
                let _ = rx.wait_for(|l| !*l).await;
            }
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        _ = &mut shutdown => { tracing::info!("shutting down"); Ok(()) }
        _ = lost_leadership => Err(anyhow::anyhow!("lost the leader lease; exiting so another replica takes over")),
        _ = handle.stopped() => {
            // /healthz fails from now until the process exits.
            alive.store(false, Ordering::Release);
            Err(anyhow::anyhow!(
                "{}; exiting",
                handle.failure().unwrap_or_else(|| "a controller stopped unexpectedly".into())
            ))
        }
    };
    ready_task.abort();
    handle.shutdown().await;
    if let Some((is_leader, task)) = lease {
        // Dropping the last receiver makes the lease manager release the Lease; a release that
        // cannot reach the API server must not keep the process from exiting (the Lease expires).
        drop(is_leader);
        if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
            tracing::warn!("could not release the leader lease in time; it will expire on its own");
        }
    }
    result
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
