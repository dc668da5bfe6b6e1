//! The command line every certbridge controller binary shares: `run`, `check -f`, `sign -f`, `crds`.
//!
//! `check` and `sign` need no cluster: they load the issuer and the Secrets/ConfigMaps it
//! references from a manifest file, which is how an operator tests an issuer before deploying it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::issuer::IssuerSpec;
use crate::runtime::{self, Options};
use crate::signer::Signer;
use crate::telemetry::LogFormat;

mod metrics_flags;

use crate::runtime::offline;
use crate::runtime::process::{self, Process};

#[derive(Parser)]
#[command(about = "A cert-manager external issuer built on certbridge", version)]
struct Cli<A: clap::Args> {
    #[command(subcommand)]
    command: Command<A>,
}

/// `A` is the adapter's own flags (see [`run_with`]), accepted by every command that builds a signer.
#[derive(Subcommand)]
// Parsed once at start and matched at once: the size of `Run` costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
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
    metrics: metrics_flags::MetricsArgs,
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
    /// Fail a request the CA keeps answering "pending" for longer than this (since it first
    /// turned Pending), saying what to check at the CA.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "7d")]
    max_pending: Duration,
    /// Namespace of the Secret `<group>-state-key` that authenticates request state (the
    /// controller's own namespace); default: the cluster resource namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    state_key_namespace: Option<String>,
}

impl RunArgs {
    /// The process these flags ask for.
    fn process(&self) -> Process {
        Process {
            kubeconfig: self.kubeconfig.clone(),
            health_addr: self.health_addr,
            metrics: self.metrics.serving(),
            leader_elect: self.leader_elect,
            lease_namespace: self
                .leader_election_namespace
                .clone()
                .unwrap_or_else(|| self.cluster_resource_namespace.clone()),
            options: self.options(),
        }
    }

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
            max_pending: self.max_pending,
            state_key_namespace: self.state_key_namespace.clone(),
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
            match process::run(signer, args.process()).await {
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
