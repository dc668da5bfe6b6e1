//! The command line every certbridge controller binary shares: `run`, `check -f`, `sign -f`, `crds`.
//!
//! `check` and `sign` need no cluster: they load the issuer and the Secrets/ConfigMaps it
//! references from a manifest file, which is how an operator tests an issuer before deploying it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::issuer::{IssuerScope, IssuerSpec};
use crate::runtime::{self, Options};
use crate::signer::Signer;
use crate::telemetry::LogFormat;

mod offline;
mod serve;

#[derive(Parser)]
#[command(about = "A cert-manager external issuer built on certbridge", version)]
struct Cli<A: clap::Args> {
    #[command(subcommand)]
    command: Command<A>,
}

/// `A` is the adapter's own flags (see [`run_with`]), accepted by every command that builds a signer.
#[derive(Subcommand)]
enum Command<A: clap::Args> {
    /// Run the controller.
    Run {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        adapter: A,
    },
    /// Print the issuer CRDs as YAML.
    Crds,
    /// Check an issuer from a manifest file, without a cluster. Exit 0 when it is ready.
    Check {
        /// Multi-document YAML: the issuer plus the Secrets and ConfigMaps it references.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Where a cluster issuer's Secrets are looked up (objects in the file without a namespace go there).
        #[arg(long, default_value = "cert-manager")]
        cluster_resource_namespace: String,
        #[command(flatten)]
        adapter: A,
    },
    /// Sign a CSR with an issuer from a manifest file, without a cluster. Prints the chain, leaf first.
    Sign {
        /// Multi-document YAML: the issuer plus the Secrets and ConfigMaps it references.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The PEM certificate signing request.
        #[arg(long)]
        csr: PathBuf,
        /// Requested validity, e.g. 24h, 90d.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2160h")]
        duration: Duration,
        /// Request a CA certificate.
        #[arg(long)]
        is_ca: bool,
        /// A cert-manager usage ("digital signature", "server auth", ...); repeatable.
        #[arg(long = "usage")]
        usages: Vec<String>,
        /// Write the CA certificate here.
        #[arg(long)]
        ca_out: Option<PathBuf>,
        /// Where a cluster issuer's Secrets are looked up.
        #[arg(long, default_value = "cert-manager")]
        cluster_resource_namespace: String,
        #[command(flatten)]
        adapter: A,
    },
}

/// No adapter flags: what [`run`] uses.
#[derive(clap::Args)]
struct NoFlags {}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, then in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Where cluster issuers read their Secrets and ConfigMaps.
    #[arg(long, default_value = "cert-manager")]
    cluster_resource_namespace: String,
    /// Run only while holding a Lease (for more than one replica).
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the leader-election Lease (default: the cluster resource namespace).
    #[arg(long)]
    leader_election_namespace: Option<String>,
    #[command(flatten)]
    metrics: serve::MetricsArgs,
    /// Serve `/healthz` and `/readyz` on this address.
    #[arg(long)]
    health_addr: Option<std::net::SocketAddr>,
    /// Retry transient sign errors this long before failing the request.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3m")]
    max_retry_duration: Duration,
    /// Re-check Ready issuers this often.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    issuer_recheck_interval: Duration,
    /// Concurrent reconciles per controller.
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    #[command(flatten)]
    telemetry: crate::telemetry::TelemetryArgs,
    /// Do not serve cert-manager CertificateRequests.
    #[arg(long)]
    disable_certificate_requests: bool,
    /// Do not serve Kubernetes CertificateSigningRequests.
    #[arg(long)]
    disable_certificate_signing_requests: bool,
    /// Serve the cluster issuer kind only: namespaced issuers are not watched, requests naming one
    /// are left untouched, and Secrets/ConfigMaps are read only in the cluster resource namespace.
    #[arg(long, env = "CERTBRIDGE_DISABLE_NAMESPACED_ISSUERS")]
    disable_namespaced_issuers: bool,
    #[command(flatten)]
    csr_limits: crate::pki::CsrLimits,
}

impl RunArgs {
    /// The controllers' settings these flags ask for.
    fn options(&self) -> Options {
        Options {
            namespace: self.namespace.clone(),
            cluster_resource_namespace: self.cluster_resource_namespace.clone(),
            max_retry_duration: self.max_retry_duration,
            issuer_recheck_interval: self.issuer_recheck_interval,
            concurrency: self.concurrency,
            certificate_requests: !self.disable_certificate_requests,
            certificate_signing_requests: !self.disable_certificate_signing_requests,
            namespaced_issuers: !self.disable_namespaced_issuers,
            instance: None,
            csr_limits: self.csr_limits,
        }
    }
}

/// Runs the adapter's controller binary: parses the command line and dispatches. `make` builds
/// the signer only for the commands that use one (`run`, `check`, `sign`): `crds` and `--help`
/// work even where the signer could not be built.
///
/// ```ignore
/// certbridge::run(MySigner::new).await
/// ```
pub async fn run<S: Signer>(make: impl FnOnce() -> S) -> ExitCode {
    run_with(|_: NoFlags, _| Ok(make())).await
}

/// [`run`] for an adapter with flags of its own: `A`'s flags are added to `run`, `check` and
/// `sign`, and `make` builds the signer from them and from the number of requests the controller
/// signs at once (`--concurrency` for `run`, 1 otherwise), e.g. to size a connection pool. An
/// error from `make` is reported like a bad flag (exit code 2).
///
/// ```no_run
/// # use certbridge::{Issued, Issuer, IssuerSpec, Resources, SignContext, SignError, SignRequest, Signer};
/// # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)] struct Spec {}
/// # impl IssuerSpec for Spec { const GROUP: &'static str = "demo.certbridge.io"; const NAME: &'static str = "Demo"; }
/// # struct Demo { pool: usize }
/// # #[certbridge::async_trait] impl Signer for Demo { type Spec = Spec;
/// #   async fn sign(&self, _: &SignRequest, _: &Issuer<Spec>, _: &mut SignContext) -> Result<Issued, SignError> { todo!() }
/// #   async fn check(&self, _: &Issuer<Spec>, _: &Resources) -> Result<certbridge::Ready, SignError> { Ok(certbridge::Ready::default()) } }
/// #[derive(clap::Args)]
/// struct Flags {
///     /// Connections per CA endpoint (default: the controller's concurrency).
///     #[arg(long)]
///     connections: Option<usize>,
/// }
///
/// # async fn main_() -> std::process::ExitCode {
/// certbridge::cli::run_with(|flags: Flags, concurrency| Ok(Demo { pool: flags.connections.unwrap_or(concurrency) })).await
/// # }
/// ```
pub async fn run_with<A, S, F>(make: F) -> ExitCode
where
    A: clap::Args,
    S: Signer,
    F: FnOnce(A, usize) -> anyhow::Result<S>,
{
    let cli = Cli::<A>::parse();
    runtime::install_crypto_provider();
    let build = |adapter: A, concurrency: usize| {
        make(adapter, concurrency).map_err(|e| {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        })
    };
    match cli.command {
        Command::Crds => {
            print!("{}", crate::crd::crds_yaml::<S::Spec>());
            ExitCode::SUCCESS
        }
        Command::Check { file, cluster_resource_namespace, adapter } => {
            init_logging(LogFormat::Text, "warn");
            let signer = match build(adapter, 1) {
                Ok(s) => s,
                Err(code) => return code,
            };
            offline::check(&signer, &file, &cluster_resource_namespace).await
        }
        Command::Sign { file, csr, duration, is_ca, usages, ca_out, cluster_resource_namespace, adapter } => {
            init_logging(LogFormat::Text, "warn");
            let signer = match build(adapter, 1) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let args = offline::SignArgs { csr, duration, is_ca, usages, ca_out };
            offline::sign(&signer, &file, &cluster_resource_namespace, args).await
        }
        Command::Run { run: args, adapter } => {
            let telemetry = &args.telemetry;
            let service = format!("{}-controller", <S::Spec as IssuerSpec>::GROUP);
            // Held until the controller stops: dropping it flushes the last spans.
            let _traces = match crate::telemetry::init(
                telemetry.log_format,
                "info",
                telemetry.otlp_endpoint.as_deref(),
                &service,
            ) {
                Ok(guard) => guard,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let signer = match build(adapter, usize::from(args.concurrency)) {
                Ok(s) => s,
                Err(code) => return code,
            };
            match run_controller(signer, args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "controller stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: LogFormat, default: &str) {
    // No exporter without an endpoint, so nothing to flush.
    let _ = crate::telemetry::init(format, default, None, "");
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
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

async fn run_controller<S: Signer>(signer: S, args: RunArgs) -> anyhow::Result<()> {
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
        serve::health(addr, ready.clone(), alive.clone()).await?;
    }
    args.metrics.serve(metrics.clone(), &client).await?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);

    let lease = if args.leader_elect {
        let namespace =
            args.leader_election_namespace.clone().unwrap_or_else(|| args.cluster_resource_namespace.clone());
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

    let handle = runtime::start(signer, client, args.options()).await?;
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

/// The scope of a manifest's issuer kind, if it is one of `S`'s.
fn scope_of<S: IssuerSpec>(kind: &str) -> Option<IssuerScope> {
    [IssuerScope::Namespaced, IssuerScope::Cluster]
        .into_iter()
        .find(|s| crate::issuer::KindNames::of::<S>(*s).kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_options(args: &[&str]) -> Options {
        let cli = Cli::<NoFlags>::try_parse_from(["certbridge", "run"].iter().chain(args)).unwrap();
        let Command::Run { run, .. } = cli.command else { panic!("not run") };
        run.options()
    }

    #[derive(clap::Args)]
    struct Flags {
        #[arg(long = "thing")]
        things: Vec<String>,
    }

    #[test]
    fn adapter_flags_are_accepted_by_run_check_and_sign() {
        let parse =
            |args: &[&str]| Cli::<Flags>::try_parse_from(std::iter::once("certbridge").chain(args.iter().copied()));
        let Command::Run { run, adapter } =
            parse(&["run", "--thing=a", "--concurrency=7", "--thing", "b"]).unwrap().command
        else {
            panic!("not run")
        };
        assert_eq!((adapter.things, run.concurrency), (vec!["a".to_owned(), "b".to_owned()], 7));
        let Command::Check { adapter, .. } = parse(&["check", "-f", "x.yaml", "--thing=c"]).unwrap().command else {
            panic!("not check")
        };
        assert_eq!(adapter.things, ["c"]);
        let Command::Sign { adapter, .. } =
            parse(&["sign", "-f", "x.yaml", "--csr", "r.pem", "--thing=d"]).unwrap().command
        else {
            panic!("not sign")
        };
        assert_eq!(adapter.things, ["d"]);
        // `crds` builds no signer, so it takes no adapter flags; `run` without them is fine.
        assert!(parse(&["crds", "--thing=e"]).is_err());
        assert!(parse(&["run"]).is_ok());
        // A controller without adapter flags refuses them.
        assert!(Cli::<NoFlags>::try_parse_from(["certbridge", "run", "--thing=a"]).is_err());
    }

    #[test]
    fn run_flags_map_to_options() {
        let default = run_options(&[]);
        assert!(default.namespaced_issuers && default.certificate_requests && default.certificate_signing_requests);
        assert_eq!(default.cluster_resource_namespace, "cert-manager");
        let opts = run_options(&[
            "--disable-namespaced-issuers",
            "--disable-certificate-signing-requests",
            "--cluster-resource-namespace=creds",
            "--namespace=team-a",
        ]);
        assert!(!opts.namespaced_issuers);
        assert!(!opts.certificate_signing_requests);
        assert!(opts.certificate_requests);
        assert_eq!((opts.cluster_resource_namespace.as_str(), opts.namespace.as_deref()), ("creds", Some("team-a")));
        assert_eq!(default.csr_limits, crate::CsrLimits::default());
        let limits =
            run_options(&["--csr-max-pem-bytes=4096", "--csr-max-sans=5", "--csr-max-name-bytes=64"]).csr_limits;
        assert_eq!(limits, crate::CsrLimits { max_pem_bytes: 4096, max_sans: 5, max_name_bytes: 64 });
        assert!(
            Cli::<NoFlags>::try_parse_from(["certbridge", "run", "--csr-max-sans=0"]).is_err(),
            "a limit is at least 1"
        );
    }
}
