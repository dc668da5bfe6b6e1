//! "Secrets never leak": run an adapter's controller binary with every log target at TRACE
//! against a [`KubeSim`], collect everything it wrote (stdout and stderr) and everything it
//! published (Events, the status and annotations of requests and issuers, its metrics), and
//! search all of it for every secret value the scenario used ([`Needles`]).
//!
//! The controller runs as a child process, exactly as deployed (`<binary> run --kubeconfig …`,
//! the framework's own log setup, `RUST_LOG=trace`), so kube, hyper, h2, rustls and reqwest
//! log at TRACE like every certbridge target: no test subscriber can miss a thread, a blocking
//! task or a `log`-crate record. [`Published::search`] fails (with the place, never the
//! secret) on any hit, and when the log holds no TRACE line of the HTTP stack (then the capture
//! itself is broken and the search would prove nothing).
//!
//! ```no_run
//! # async fn demo(sim: &certbridge_testkit::KubeSim, client: kube::Client) -> anyhow::Result<()> {
//! use certbridge_testkit::leaks::{Needles, TracedController};
//! let needles = Needles::new().value("PIN", "123456-pin").pem("CA key", "-----BEGIN PRIVATE KEY-----\n…");
//! let controller = TracedController::start(env!("CARGO_PKG_NAME"), sim, &[], &[]).await?;
//! // … create the issuer, its Secret and an approved CertificateRequest, wait until issued …
//! let published = controller.finish(&client, &["example.certbridge.io/v1alpha1/localcaissuers"]).await?;
//! published.search(&needles);
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

use crate::KubeSim;

/// The secret values a scenario used, each under a label that names it in a failure (the value
/// itself is never printed). Every value is searched for as is and base64-encoded (how a
/// Secret's data travels, should something print the object); a PEM also by each line of its
/// body, so a log that escapes newlines is caught too.
#[derive(Debug, Default, Clone)]
pub struct Needles(Vec<(String, String)>);

/// Shorter values would match by chance (and a test secret that short proves little).
const MIN_NEEDLE: usize = 8;

impl Needles {
    /// No needles yet.
    pub fn new() -> Needles {
        Needles::default()
    }

    /// A secret string (PIN, password, token, API key, secret ID).
    ///
    /// # Panics
    /// When `value` is shorter than 8 bytes: a scenario must use secrets long enough to be
    /// found unambiguously.
    pub fn value(mut self, label: &str, value: &str) -> Needles {
        assert!(value.len() >= MIN_NEEDLE, "{label}: use a secret of at least {MIN_NEEDLE} bytes in a leak test");
        self.0.push((label.to_owned(), value.to_owned()));
        self.0.push((format!("{label} (base64)"), base64::engine::general_purpose::STANDARD.encode(value)));
        self
    }

    /// A private key (or other secret) in PEM: the whole text, its base64, and every body line
    /// of at least 16 characters.
    pub fn pem(mut self, label: &str, pem: &str) -> Needles {
        self = self.value(label, pem.trim());
        let body: Vec<&str> = pem.lines().map(str::trim).filter(|l| !l.starts_with("-----") && l.len() >= 16).collect();
        assert!(!body.is_empty(), "{label}: no PEM body");
        for (i, line) in body.into_iter().enumerate() {
            self.0.push((format!("{label} (PEM body line {})", i + 1), line.to_owned()));
        }
        self
    }

    /// The labels, for a test's own report.
    pub fn labels(&self) -> Vec<&str> {
        self.0.iter().map(|(l, _)| l.as_str()).collect()
    }
}

/// An adapter's controller running as a child process at TRACE, its output going to a file.
pub struct TracedController {
    child: tokio::process::Child,
    log: PathBuf,
    metrics: std::net::SocketAddr,
    dir: PathBuf,
}

impl Drop for TracedController {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TracedController {
    /// Starts `binary run --kubeconfig <sim> --metrics-addr <free port> --metrics-insecure
    /// <args…>` with `RUST_LOG=trace`, text logs, and `env` added to a clean environment
    /// (PATH and HOME kept).
    pub async fn start(
        binary: &str,
        sim: &KubeSim,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<TracedController> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("certbridge-leaks-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = dir.join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig)?;
        let log = dir.join("controller.log");
        let out = std::fs::File::create(&log)?;
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut cmd = tokio::process::Command::new(binary);
        cmd.env_clear()
            .envs(["PATH", "HOME"].iter().filter_map(|k| std::env::var_os(k).map(|v| (*k, v))))
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .arg("run")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg(format!("--metrics-addr={metrics}"))
            // Plain HTTP so the search can read what a scraper reads.
            .arg("--metrics-insecure")
            .arg("--log-format=text")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {binary}"))?;
        Ok(TracedController { child, log, metrics, dir })
    }

    /// The controller's output so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The last `n` lines of its output, for a failing test's message.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Scrapes `/metrics`, stops the controller (SIGTERM, then SIGKILL after 20 s), and collects
    /// what it published: every Event (core/v1 and events.k8s.io/v1), the annotations and status
    /// of every CertificateRequest and CertificateSigningRequest, and of every object of
    /// `issuer_resources` (`group/version/plural`, e.g. `vault.certbridge.io/v1alpha1/vaultissuers`).
    pub async fn finish(mut self, client: &kube::Client, issuer_resources: &[&str]) -> anyhow::Result<Published> {
        if let Ok(Some(status)) = self.child.try_wait() {
            anyhow::bail!("the controller exited before the end of the scenario ({status}):\n{}", self.log_tail(40));
        }
        let metrics = scrape(self.metrics).await.context("scraping the controller's /metrics")?;
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
        let mut objects = Vec::new();
        let events = [("", "v1", "Event", "events"), ("events.k8s.io", "v1", "Event", "events")];
        for (group, version, kind, plural) in events {
            let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
            for e in Api::<DynamicObject>::all_with(client.clone(), &ar).list(&ListParams::default()).await? {
                objects.push((format!("Event {}", e.metadata.name.clone().unwrap_or_default()), e.data.to_string()));
            }
        }
        let mut kinds: Vec<(String, String, String)> = vec![
            ("cert-manager.io/v1".into(), "CertificateRequest".into(), "certificaterequests".into()),
            ("certificates.k8s.io/v1".into(), "CertificateSigningRequest".into(), "certificatesigningrequests".into()),
        ];
        for r in issuer_resources {
            let (gv, plural) = r.rsplit_once('/').with_context(|| format!("{r}: expected group/version/plural"))?;
            kinds.push((gv.into(), String::new(), plural.into()));
        }
        for (gv, kind, plural) in kinds {
            let (group, version) = gv.split_once('/').unwrap_or(("", gv.as_str()));
            let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, &kind), &plural);
            for o in Api::<DynamicObject>::all_with(client.clone(), &ar).list(&ListParams::default()).await? {
                let what = format!(
                    "{plural} {}/{}",
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.metadata.name.clone().unwrap_or_default()
                );
                let shown = serde_json::json!({"annotations": o.metadata.annotations, "status": o.data.get("status")});
                objects.push((what, shown.to_string()));
            }
        }
        Ok(Published { log: self.log(), metrics, objects })
    }
}

async fn scrape(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).into_owned();
    anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "/metrics answered {}", text.lines().next().unwrap_or(""));
    Ok(text)
}

/// What a controller wrote and published during a scenario.
#[derive(Debug)]
pub struct Published {
    /// Its stdout and stderr.
    pub log: String,
    /// Its `/metrics` text.
    pub metrics: String,
    /// (what, JSON) of every Event and the annotations and status of every request and issuer.
    pub objects: Vec<(String, String)>,
}

impl Published {
    /// Every place a needle was found, as "<label> in <where> (line N)"; empty when none.
    pub fn hits(&self, needles: &Needles) -> Vec<String> {
        let mut sources: Vec<(String, &str)> =
            vec![("the controller's log".into(), self.log.as_str()), ("/metrics".into(), self.metrics.as_str())];
        sources.extend(self.objects.iter().map(|(w, t)| (w.clone(), t.as_str())));
        let mut hits = Vec::new();
        for (label, needle) in &needles.0 {
            for (place, text) in &sources {
                for (n, line) in text.lines().enumerate() {
                    if line.contains(needle.as_str()) {
                        // The line with every needle masked, so the report never shows a secret.
                        let mut shown = line.to_owned();
                        for (_, other) in &needles.0 {
                            shown = shown.replace(other.as_str(), "<SECRET>");
                        }
                        let shown: String = shown.chars().take(240).collect();
                        hits.push(format!("{label} in {place} (line {}: {shown})", n + 1));
                    }
                }
            }
        }
        hits
    }

    /// Panics, naming each place (never the value), when any needle occurs anywhere; also when the
    /// log shows the capture did not work (no TRACE line from kube's or hyper's HTTP stack).
    pub fn search(&self, needles: &Needles) {
        let trace_lines = self.log.lines().filter(|l| l.contains("TRACE")).count();
        let http_stack = self.log.lines().any(|l| l.contains("TRACE") && (l.contains("hyper") || l.contains("kube")));
        assert!(
            trace_lines > 0 && http_stack,
            "the controller's log has {trace_lines} TRACE lines and none from kube/hyper: the capture is broken, so \
             the search would prove nothing. Log tail:\n{}",
            self.log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        assert!(!self.objects.is_empty(), "nothing published (no Event, request or issuer): the scenario did not run");
        let hits = self.hits(needles);
        assert!(
            hits.is_empty(),
            "{} secret occurrence(s) in what the controller logged or published ({} log lines searched for {}):\n  {}",
            hits.len(),
            self.log.lines().count(),
            needles.labels().join(", "),
            hits.join("\n  ")
        );
    }
}
