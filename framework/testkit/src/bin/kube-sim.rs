//! `kube-sim`: runs the embedded Kubernetes API server as a process.
//!
//! Writes a kubeconfig, prints `kube-sim listening on http://ADDR` (`https://ADDR` with
//! `--tls`) once ready, and serves until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use certbridge_testkit::{KubeSim, SimOptions};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "kube-sim", about = "Embedded Kubernetes API server for tests")]
struct Args {
    /// Listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Where to write the kubeconfig.
    #[arg(long)]
    kubeconfig_out: PathBuf,
    /// CRD YAML files or directories of them to install at start (repeatable).
    #[arg(long)]
    crds: Vec<PathBuf>,
    /// Install the embedded cert-manager CRDs.
    #[arg(long)]
    cert_manager_crds: bool,
    /// Serve HTTPS only, with a throwaway CA generated at start; the kubeconfig carries it as
    /// certificate-authority-data.
    #[arg(long)]
    tls: bool,
    /// Also write the CA certificate (PEM) here; needs --tls.
    #[arg(long, requires = "tls")]
    ca_out: Option<PathBuf>,
}

fn crd_files(p: &PathBuf) -> anyhow::Result<Vec<PathBuf>> {
    if p.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| matches!(f.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")))
            .collect();
        v.sort();
        Ok(v)
    } else {
        Ok(vec![p.clone()])
    }
}

// glibc's allocator fragments after a benchmark creates and deletes tens of thousands of objects
// (every later write got slower: malloc_consolidate in the profile); mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let sim = KubeSim::start_with(SimOptions { addr: args.addr, tls: args.tls, ..SimOptions::default() }).await?;
    if args.cert_manager_crds {
        sim.install_cert_manager_crds().await?;
    }
    for p in &args.crds {
        for f in crd_files(p)? {
            let y = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            sim.install_crds_yaml(&y).await.with_context(|| format!("installing {}", f.display()))?;
        }
    }
    sim.write_kubeconfig(&args.kubeconfig_out)?;
    if let (Some(path), Some(ca)) = (&args.ca_out, sim.ca_pem()) {
        std::fs::write(path, ca).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("kube-sim listening on {}", sim.url());
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}
