//! Scale benchmark (issue 16): the released example controller (`certbridge-example-ca`, CA in a
//! Secret) as a separate process against `kube-sim` (release), with N approved CertificateRequests.
//!
//! Run (from the repository root; one `cargo build` so the three share their dependency builds):
//! `cargo build --release -p certbridge-example-ca -p certbridge-testkit -p certbridge-scale && target/release/certbridge-scale`
//! Knobs (environment): `N` (requests at full speed, default 10000), `RATE` (requests/s of the
//! fixed-rate phase, default 100), `RATE_SECONDS` (default 30), `CONCURRENCY` (the controller's
//! `--concurrency`, default: its own default), `IN_FLIGHT` (creates in flight at full speed, default 16),
//! `PENDING` (unapproved requests for the per-pending-request figure, default N),
//! `BIN_DIR` (where `kube-sim` and `certbridge-example-ca` are; default: next to this binary),
//! `CONTROLLER_BIN` (another build of the controller to measure, e.g. a copy of main's),
//! `PHASES` (comma list of `bare,full,restart,pending,rate,backlog`, default all), `PERF_OUT` (a path: record
//! the controller and kube-sim with `perf record -e cpu-clock --call-graph dwarf` during the phase
//! `PERF_PHASE` names: `full`, the default, or `backlog`), `SIM_CPUS` (a `taskset` CPU list for
//! kube-sim; run this binary under `taskset -c` the other CPUs, and the controller inherits them).
//! Each phase prints the CPU time per
//! request of each process (controller, kube-sim, the benchmark's client).
//!
//! Every completion is seen through one watch per phase (never by listing in a loop: a list of
//! 10k objects per poll would load kube-sim more than the controller does). The *bare API-write
//! rate* is measured in the same run against the same kube-sim process, before the controller
//! starts and again after it stopped, so the controller's end-to-end rate is a ratio that holds on
//! a shared machine:
//! * `bare read+apply`: per request one GET and one server-side status apply with the same body a
//!   controller writes when it issues (Ready=True, certificate chain, CA) — the calls any
//!   controller must make;
//! * `bare as controller`: the calls this controller makes per request (apply Issued, create an
//!   Event: no Initializing write and no CA Secret read since issue 16), to tell API cost from our
//!   own overhead;
//! * `bare under load`: the full-speed phase's creates and approvals while a minimal watch-driven
//!   loop in this process does read+apply for each approved request: what a controller with no
//!   overhead of its own reaches while the creates compete for the same API server and CPUs.
//!
//! Memory comes from `/proc/<pid>/status` (`VmRSS`, sampled every 50 ms, and `VmHWM`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certbridge::api::CertificateRequest;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::watcher;
use serde_json::json;

const GROUP: &str = "example.certbridge.io";
const BENCH_NS: &str = "bench";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `<target>/release`, where this binary is.
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().expect("target/release/…").to_path_buf()
}

/// A child process killed on drop.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.name;
    }
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU seconds used so far by `pid` (`/proc/<pid>/stat` fields 14 and 15, clock
/// ticks of 1/100 s on Linux), read after the last `)` so a process name cannot shift the fields.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // After the `)`: field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU time per request of each process in a phase: where a request's cost goes (controller,
/// kube-sim, the benchmark's own client), independent of how busy the host is.
struct CpuMeter {
    start: Vec<(&'static str, u32, f64)>,
}

impl CpuMeter {
    fn start(procs: &[(&'static str, u32)]) -> CpuMeter {
        CpuMeter { start: procs.iter().map(|&(name, pid)| (name, pid, cpu_seconds(pid))).collect() }
    }

    /// "CPU per request: controller 210 µs, kube-sim 300 µs, …"
    fn per_request(&self, n: usize) -> String {
        let parts: Vec<String> = self
            .start
            .iter()
            .map(|&(name, pid, t0)| format!("{name} {:.0} µs", (cpu_seconds(pid) - t0) * 1e6 / n as f64))
            .collect();
        format!("CPU per request: {}", parts.join(", "))
    }
}

/// With `PERF_OUT` set and `PERF_PHASE` naming `phase` (default `full`): `perf record` of `pids`
/// (cpu-clock, DWARF call graphs: the release build has no frame pointers) until [`perf_stop`].
fn perf_start(phase: &str, pids: &[u32]) -> Option<Proc> {
    let out = std::env::var("PERF_OUT").ok()?;
    if std::env::var("PERF_PHASE").unwrap_or_else(|_| "full".into()) != phase {
        return None;
    }
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let child = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "499", "--call-graph", "dwarf,8192", "-o", &out, "-p"])
        .arg(pids.join(","))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perf");
    Some(Proc { child, name: "perf" })
}

fn perf_stop(perf: Option<Proc>) {
    if let Some(mut perf) = perf {
        // SIGINT makes perf write its data and exit.
        let _ = Command::new("kill").args(["-INT", &perf.pid().to_string()]).status();
        let _ = perf.child.wait();
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Samples the peak `VmRSS` of a process every 50 ms until dropped.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid).0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET /readyz` on the controller's health port: true on 200.
fn ready(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200")
}

struct Sim {
    _proc: Proc,
    kubeconfig: PathBuf,
    pid: u32,
}

fn start_sim(dir: &Path, bin: &Path) -> Sim {
    let crds = dir.join("crds.yaml");
    let out = Command::new(bin.join("certbridge-example-ca")).arg("crds").output().expect("crds");
    assert!(out.status.success());
    std::fs::write(&crds, out.stdout).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    // SIM_CPUS (a taskset CPU list) gives kube-sim CPUs of its own, as an API server has on a real
    // cluster; run the benchmark itself under `taskset -c <the others>` and the controller it
    // spawns inherits them. taskset execs kube-sim, so the pid is still kube-sim's.
    let mut command = match std::env::var("SIM_CPUS") {
        Ok(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpus]).arg(bin.join("kube-sim"));
            c
        }
        Err(_) => Command::new(bin.join("kube-sim")),
    };
    let mut child = command
        .args(["--cert-manager-crds", "--crds"])
        .arg(&crds)
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kube-sim");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("kube-sim listening"), "kube-sim said: {line}");
    let pid = child.id();
    println!("CPUs: kube-sim {}, benchmark and controller {}", cpus_allowed(pid), cpus_allowed(std::process::id()));
    Sim { _proc: Proc { child, name: "kube-sim" }, kubeconfig, pid }
}

/// The CPUs a process may run on (`Cpus_allowed_list` in /proc/<pid>/status).
fn cpus_allowed(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_owned())))
        .unwrap_or_else(|| "?".into())
}

struct Controller {
    proc: Proc,
    health: u16,
}

/// Starts the controller and waits for `/readyz`.
fn start_controller(bin: &Path, kubeconfig: &Path, log: &Path) -> Controller {
    let c = spawn_controller(bin, kubeconfig, log);
    c.wait_ready(log);
    c
}

/// Starts the controller process without waiting for it to be ready.
fn spawn_controller(bin: &Path, kubeconfig: &Path, log: &Path) -> Controller {
    let health = free_port();
    let exe =
        std::env::var_os("CONTROLLER_BIN").map(PathBuf::from).unwrap_or_else(|| bin.join("certbridge-example-ca"));
    let mut cmd = Command::new(exe);
    cmd.arg("run").arg("--kubeconfig").arg(kubeconfig).arg("--health-addr").arg(format!("127.0.0.1:{health}"));
    if let Ok(c) = std::env::var("CONCURRENCY") {
        cmd.args(["--concurrency", &c]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .expect("controller");
    Controller { proc: Proc { child, name: "controller" }, health }
}

impl Controller {
    /// Waits (polling `/readyz` every 5 ms) until the controller is ready.
    fn wait_ready(&self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready(self.health) {
            assert!(Instant::now() < deadline, "the controller did not become ready; see {}", log.display());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A self-signed P-256 CA: (certificate PEM, key PEM) and the rcgen issuer for leaves.
fn make_ca() -> (String, String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "bench CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let key_pem = key.serialize_pem();
    let issuer = rcgen::Issuer::new(params, key);
    (cert.pem(), key_pem, issuer)
}

/// `n` P-256 CSRs for `r<i>.example.com`.
fn make_csrs(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let key = rcgen::KeyPair::generate().unwrap();
            let name = format!("r{i}.example.com");
            let mut params = rcgen::CertificateParams::new(vec![name.clone()]).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.serialize_request(&key).unwrap().pem().unwrap()
        })
        .collect()
}

fn request(namespace: &str, name: &str, csr: &str, group: &str) -> CertificateRequest {
    serde_json::from_value(json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "issuerRef": {"name": "ca", "kind": "LocalCAIssuer", "group": group},
            "request": base64(csr.as_bytes()),
            "usages": ["digital signature", "key encipherment"],
        }
    }))
    .unwrap()
}

fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn approval() -> Patch<serde_json::Value> {
    // What cert-manager's approver adds; a merge patch, since a new request has no conditions yet.
    Patch::Merge(json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "cert-manager.io",
        "message": "Certificate request has been approved by cert-manager.io",
        "lastTransitionTime": jiff::Timestamp::now().to_string(),
    }]}}))
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    let _ = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await;
}

async fn setup(client: &kube::Client, ca_pem: &str, ca_key: &str) {
    for ns in [BENCH_NS, "cert-manager", "bare", "pending", "rate", "backlog"] {
        create_namespace(client, ns).await;
    }
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "ca-key-pair", "namespace": BENCH_NS}, "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": ca_pem, "tls.key": ca_key}
    }))
    .unwrap();
    for ns in [BENCH_NS, "pending", "rate", "bare", "backlog"] {
        let mut s = secret.clone();
        s.metadata.namespace = Some(ns.into());
        Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &s).await.unwrap();
    }
    let ar = ApiResource {
        group: GROUP.into(),
        version: "v1alpha1".into(),
        api_version: format!("{GROUP}/v1alpha1"),
        kind: "LocalCAIssuer".into(),
        plural: "localcaissuers".into(),
    };
    for ns in [BENCH_NS, "pending", "rate", "backlog"] {
        let mut issuer = DynamicObject::new("ca", &ar).within(ns);
        issuer.data = json!({"spec": {"secretName": "ca-key-pair"}});
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            .create(&PostParams::default(), &issuer)
            .await
            .unwrap();
    }
}

async fn wait_issuers_ready(client: &kube::Client) {
    let ar = ApiResource {
        group: GROUP.into(),
        version: "v1alpha1".into(),
        api_version: format!("{GROUP}/v1alpha1"),
        kind: "LocalCAIssuer".into(),
        plural: "localcaissuers".into(),
    };
    for ns in [BENCH_NS, "pending", "rate"] {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let obj = api.get("ca").await.unwrap();
            let ready = obj.data["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "issuer {ns}/ca not ready: {}", obj.data["status"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Watches one namespace's CertificateRequests and records when each first shows Ready=True.
struct Completion {
    issued: Arc<Mutex<HashMap<String, Instant>>>,
    count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Completion {
    async fn start(client: &kube::Client, namespace: &str) -> Completion {
        let api: Api<CertificateRequest> = Api::namespaced(client.clone(), namespace);
        let issued = Arc::new(Mutex::new(HashMap::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let (i, c) = (issued.clone(), count.clone());
        let task = tokio::spawn(async move {
            let mut synced = Some(synced_tx);
            let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(ev) = events.next().await {
                let cr = match ev {
                    Ok(watcher::Event::Apply(cr) | watcher::Event::InitApply(cr)) => cr,
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = synced.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let now = Instant::now();
                if cr.condition("Ready").is_some_and(|c| c.status == "True") {
                    let name = cr.metadata.name.unwrap_or_default();
                    if i.lock().unwrap().insert(name, now).is_none() {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        let _ = synced_rx.await;
        Completion { issued, count, task }
    }

    async fn wait(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "only {}/{n} issued after {timeout:?}",
                self.count.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// p50 and p99 of create→Issued, in ms.
fn latencies(created: &HashMap<String, Instant>, issued: &HashMap<String, Instant>) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = created
        .iter()
        .filter_map(|(name, t0)| issued.get(name).map(|t1| t1.saturating_duration_since(*t0).as_secs_f64() * 1e3))
        .collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms.get(((ms.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    (at(0.5), at(0.99), ms.last().copied().unwrap_or(f64::NAN))
}

/// Creates and approves `csrs` in `namespace` with `in_flight` requests at once; returns each
/// request's create time.
async fn create_all(
    client: &kube::Client,
    namespace: &str,
    csrs: &[String],
    group: &str,
    approve: bool,
    in_flight: usize,
) -> HashMap<String, Instant> {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), namespace);
    stream::iter(csrs.iter().enumerate())
        .map(|(i, csr)| {
            let api = api.clone();
            async move {
                let name = format!("r{i}");
                let t0 = Instant::now();
                api.create(&PostParams::default(), &request(namespace, &name, csr, group)).await?;
                if approve {
                    api.patch_status(&name, &PatchParams::default(), &approval()).await?;
                }
                Ok::<_, kube::Error>((name, t0))
            }
        })
        .buffer_unordered(in_flight)
        .try_collect()
        .await
        .unwrap()
}

/// The status apply a controller makes when it issues request `name` in the bare namespace
/// (Ready=True, chain, CA).
fn issued_status(name: &str, chain: &str, ca: &str) -> Patch<serde_json::Value> {
    Patch::Apply(json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": "bare"},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "Issued",
                            "message": "Succeeded signing the certificate",
                            "lastTransitionTime": jiff::Timestamp::now().to_string()}],
            "certificate": base64(chain.as_bytes()), "ca": base64(ca.as_bytes()),
        },
    }))
}

/// The bare rate under the full-speed phase's load: while the client creates and approves `n`
/// requests (`in_flight` at once, as in that phase), a minimal controller in this process — one
/// watch on the namespace, then per approved request one GET and one status apply (the read+apply
/// calls), `workers` at once; no signing, no event, no cache — finishes them. Requests/s from the
/// first create to the last apply: what a controller with no overhead of its own would reach while
/// the creates compete for the same API server and CPUs.
async fn bare_loaded(
    client: &kube::Client,
    csrs: &[String],
    chain: &str,
    ca: &str,
    workers: usize,
    in_flight: usize,
) -> f64 {
    let n = csrs.len();
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), "bare");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    let watch_api = api.clone();
    let watch = tokio::spawn(async move {
        let mut synced = Some(synced_tx);
        let mut queued = std::collections::HashSet::new();
        let mut events = std::pin::pin!(watcher(watch_api, watcher::Config::default()));
        while let Some(ev) = events.next().await {
            match ev {
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = synced.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(watcher::Event::Apply(cr)) => {
                    let approved = cr.condition("Approved").is_some_and(|c| c.status == "True");
                    let name = cr.metadata.name.unwrap_or_default();
                    if approved && queued.insert(name.clone()) {
                        let _ = tx.send(name);
                    }
                }
                _ => {}
            }
        }
    });
    let _ = synced_rx.await;
    let started = Instant::now();
    let queue = stream::poll_fn(|cx| rx.poll_recv(cx)).take(n);
    let issue = queue.for_each_concurrent(workers, |name| {
        let api = api.clone();
        async move {
            let pp = PatchParams::apply("bench.certbridge.io/bare").force();
            api.get(&name).await.unwrap();
            api.patch_status(&name, &pp, &issued_status(&name, chain, ca)).await.unwrap();
        }
    });
    futures::join!(create_all(client, "bare", csrs, "bare.invalid", true, in_flight), issue);
    watch.abort();
    n as f64 / started.elapsed().as_secs_f64()
}

/// The bare API-write rate: per request what a controller must do (GET, then apply the issued
/// status), or with `as_controller` what this controller does (apply Issued, create an Event);
/// `workers` requests at once. Returns requests/s.
async fn bare(client: &kube::Client, n: usize, chain: &str, ca: &str, as_controller: bool, workers: usize) -> f64 {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), "bare");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "bare");
    let pp = PatchParams::apply("bench.certbridge.io/bare").force();
    let started = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(workers, |i| {
            let (api, events, pp) = (api.clone(), events.clone(), pp.clone());
            async move {
                let name = format!("r{i}");
                let issued = issued_status(&name, chain, ca);
                if as_controller {
                    api.patch_status(&name, &pp, &issued).await.unwrap();
                    let ev: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
                        "metadata": {"generateName": format!("{name}."), "namespace": "bare"},
                        "eventTime": jiff::Timestamp::now().to_string(),
                        "reportingController": "bench", "reportingInstance": "bench",
                        "action": "Sign", "reason": "Issued", "type": "Normal",
                        "note": "Succeeded signing the certificate",
                        "regarding": {"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
                                      "name": name, "namespace": "bare"},
                    }))
                    .unwrap();
                    events.create(&PostParams::default(), &ev).await.unwrap();
                } else {
                    api.get(&name).await.unwrap();
                    api.patch_status(&name, &pp, &issued).await.unwrap();
                }
            }
        })
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// Removes the bare phase's requests so the controller never caches them.
async fn clear_bare(client: &kube::Client) {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), "bare");
    api.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
}

#[tokio::main]
async fn main() {
    let n = env_usize("N", 10_000);
    let rate = env_usize("RATE", 100);
    let rate_seconds = env_usize("RATE_SECONDS", 30);
    let in_flight = env_usize("IN_FLIGHT", 16);
    let pending = env_usize("PENDING", n);
    let workers = std::env::var("CONCURRENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let phases = std::env::var("PHASES").unwrap_or_else(|_| "bare,full,restart,pending,rate,backlog".into());
    let phase = |p: &str| phases.split(',').any(|x| x.trim() == p);

    let bin = std::env::var_os("BIN_DIR").map(PathBuf::from).unwrap_or_else(release_dir);
    let dir = std::env::temp_dir().join(format!("certbridge-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("controller.log");
    println!("scale: N={n} in flight={in_flight} controller --concurrency={workers} rate={rate}/s for {rate_seconds}s");
    println!("load average at start: {}", load_average());

    let (ca_pem, ca_key, ca_issuer) = make_ca();
    let csrs = make_csrs(n.max(pending).max(rate * rate_seconds));
    // A chain of the size the controller writes: one leaf signed by the CA, then the CA.
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["r0.example.com".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca_issuer)
        .unwrap();
    let chain = format!("{}\n{}", leaf.pem(), ca_pem);

    let sim = start_sim(&dir, &bin);
    let kube = client(&sim.kubeconfig).await;
    setup(&kube, &ca_pem, &ca_key).await;

    let (me, sim_pid) = (std::process::id(), sim.pid);
    let mut bare_rates = Vec::new();
    let mut bare_ctl = Vec::new();
    let mut bare_loaded_rates = Vec::new();
    let run_bare = |label: &'static str| {
        let kube = kube.clone();
        let (csrs, chain, ca_pem) = (&csrs, &chain, &ca_pem);
        async move {
            let created = Instant::now();
            create_all(&kube, "bare", &csrs[..n], "bare.invalid", true, in_flight).await;
            let create_rate = n as f64 / created.elapsed().as_secs_f64();
            let cpu = CpuMeter::start(&[("kube-sim", sim_pid), ("client", me)]);
            let r = bare(&kube, n, chain, ca_pem, false, workers).await;
            let r_cpu = cpu.per_request(n);
            let cpu = CpuMeter::start(&[("kube-sim", sim_pid), ("client", me)]);
            let c = bare(&kube, n, chain, ca_pem, true, workers).await;
            let c_cpu = cpu.per_request(n);
            clear_bare(&kube).await;
            let cpu = CpuMeter::start(&[("kube-sim", sim_pid), ("client", me)]);
            let loaded = bare_loaded(&kube, &csrs[..n], chain, ca_pem, workers, in_flight).await;
            let loaded_cpu = cpu.per_request(n);
            clear_bare(&kube).await;
            println!(
                "bare ({label}): create+approve {create_rate:.0}/s ({in_flight} in flight); read+apply {r:.0} requests/s; as controller {c:.0} requests/s ({workers} at once); load {}",
                load_average()
            );
            println!("bare ({label}): read+apply {r_cpu}; as controller {c_cpu}");
            println!(
                "bare ({label}): under load: creates as at full speed while a watch-driven read+apply loop issues them: {loaded:.0} requests/s; {loaded_cpu}"
            );
            (r, c, loaded)
        }
    };
    if phase("bare") {
        let (r, c, l) = run_bare("before").await;
        bare_rates.push(r);
        bare_ctl.push(c);
        bare_loaded_rates.push(l);
    }

    let ctl = start_controller(&bin, &sim.kubeconfig, &log);
    wait_issuers_ready(&kube).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle, _) = rss_kib(ctl.proc.pid());
    println!("controller idle: VmRSS {:.1} MiB (kube-sim {:.1} MiB)", mib(idle), mib(rss_kib(sim.pid).0));

    let mut full_rate = None;
    if phase("full") {
        let sampler = RssSampler::start(ctl.proc.pid());
        let done = Completion::start(&kube, BENCH_NS).await;
        let perf = perf_start("full", &[ctl.proc.pid(), sim.pid]);
        let cpu = CpuMeter::start(&[("controller", ctl.proc.pid()), ("kube-sim", sim.pid), ("benchmark", me)]);
        let started = Instant::now();
        let created = create_all(&kube, BENCH_NS, &csrs[..n], GROUP, true, in_flight).await;
        let create_s = started.elapsed().as_secs_f64();
        done.wait(n, Duration::from_secs(600)).await;
        let elapsed = started.elapsed().as_secs_f64();
        let (p50, p99, max) = latencies(&created, &done.issued.lock().unwrap());
        let (rss, hwm) = rss_kib(ctl.proc.pid());
        perf_stop(perf);
        let rate = n as f64 / elapsed;
        full_rate = Some(rate);
        println!(
            "full speed: {n} requests created+approved in {create_s:.1} s, all Issued after {elapsed:.1} s = {rate:.0} requests/s; create→Issued p50 {p50:.0} ms p99 {p99:.0} ms max {max:.0} ms; load {}",
            load_average()
        );
        println!("full speed: {} (the benchmark creates, approves and watches)", cpu.per_request(n));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (settled, _) = rss_kib(ctl.proc.pid());
        println!(
            "controller RSS: peak (sampled) {:.1} MiB, VmHWM {:.1} MiB, at the end {:.1} MiB, 3 s later {:.1} MiB = {:.2} KiB/request over idle",
            mib(sampler.peak().max(rss)),
            mib(hwm),
            mib(rss),
            mib(settled),
            settled.saturating_sub(idle) as f64 / n as f64
        );
        println!("kube-sim RSS: {:.1} MiB", mib(rss_kib(sim.pid).0));
    }
    drop(ctl);

    // A fresh controller that lists N finished requests: the cost of a cached finished request
    // without the garbage of the issuing burst.
    let mut ctl = start_controller(&bin, &sim.kubeconfig, &log);
    if phase("restart") && phase("full") {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (rss, hwm) = rss_kib(ctl.proc.pid());
        println!(
            "restarted with {n} finished requests: VmRSS {:.1} MiB (VmHWM {:.1}) = {:.2} KiB per cached finished request over idle",
            mib(rss),
            mib(hwm),
            rss.saturating_sub(idle) as f64 / n as f64
        );
    }
    if phase("pending") && pending > 0 {
        let (before, _) = rss_kib(ctl.proc.pid());
        // Not approved: the controller caches them and waits (the CSR PEM is in each one).
        create_all(&kube, "pending", &csrs[..pending], GROUP, false, in_flight).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (after, _) = rss_kib(ctl.proc.pid());
        println!(
            "{pending} pending (unapproved) requests: VmRSS {:.1} → {:.1} MiB = {:.2} KiB per pending request",
            mib(before),
            mib(after),
            after.saturating_sub(before) as f64 / pending as f64
        );
        // Out of the way of the rate phase.
        let api: Api<CertificateRequest> = Api::namespaced(kube.clone(), "pending");
        api.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
    }

    if phase("rate") {
        let total = rate * rate_seconds;
        let done = Completion::start(&kube, "rate").await;
        let api: Api<CertificateRequest> = Api::namespaced(kube.clone(), "rate");
        let created = Arc::new(Mutex::new(HashMap::new()));
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::new();
        for (i, csr) in csrs[..total].iter().enumerate() {
            tick.tick().await;
            let (api, created, csr) = (api.clone(), created.clone(), csr.clone());
            tasks.push(tokio::spawn(async move {
                let name = format!("r{i}");
                let t0 = Instant::now();
                api.create(&PostParams::default(), &request("rate", &name, &csr, GROUP)).await.unwrap();
                api.patch_status(&name, &PatchParams::default(), &approval()).await.unwrap();
                created.lock().unwrap().insert(name, t0);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        done.wait(total, Duration::from_secs(120)).await;
        let (p50, p99, max) = latencies(&created.lock().unwrap(), &done.issued.lock().unwrap());
        println!(
            "{rate}/s for {rate_seconds} s: create→Issued p50 {p50:.0} ms p99 {p99:.0} ms max {max:.0} ms; load {}",
            load_average()
        );
    }
    ctl.proc.child.kill().ok();
    drop(ctl);

    // The controller's own rate, without the client's creates competing for the API server: N
    // approved requests are created while no controller runs, then one starts and issues them all
    // (timed from its spawn, so its start and cache list are included). Comparable with the bare
    // read+apply rate, which does not include creating the requests either.
    let mut backlog_rate = None;
    if phase("backlog") {
        create_all(&kube, "backlog", &csrs[..n], GROUP, true, in_flight).await;
        let done = Completion::start(&kube, "backlog").await;
        let cpu = CpuMeter::start(&[("kube-sim", sim.pid), ("benchmark", me)]);
        let started = Instant::now();
        let ctl = spawn_controller(&bin, &sim.kubeconfig, &log);
        let perf = perf_start("backlog", &[ctl.proc.pid(), sim.pid]);
        ctl.wait_ready(&log);
        // Its start and the list of N requests, for the reader: the rate stays from the spawn.
        let ready_s = started.elapsed().as_secs_f64();
        let issued_at_ready = done.count.load(Ordering::Relaxed);
        done.wait(n, Duration::from_secs(600)).await;
        let elapsed = started.elapsed().as_secs_f64();
        perf_stop(perf);
        // The controller's CPU from its spawn (its start and initial list included).
        let controller_us = cpu_seconds(ctl.proc.pid()) * 1e6 / n as f64;
        let rate = n as f64 / elapsed;
        backlog_rate = Some(rate);
        println!(
            "backlog: {n} approved requests issued by a controller started after them in {elapsed:.1} s = {rate:.0} requests/s (from its spawn; /readyz after {ready_s:.2} s with {issued_at_ready} issued, {:.0} requests/s after that); load {}",
            (n - issued_at_ready) as f64 / (elapsed - ready_s),
            load_average()
        );
        println!("backlog: controller {controller_us:.0} µs from its spawn; {}", cpu.per_request(n));
        drop(ctl);
    }

    if phase("bare") {
        let (r, c, l) = run_bare("after").await;
        bare_rates.push(r);
        bare_ctl.push(c);
        bare_loaded_rates.push(l);
    }
    if let (Some(full), false) = (full_rate, bare_rates.is_empty()) {
        let r = bare_rates.iter().sum::<f64>() / bare_rates.len() as f64;
        let c = bare_ctl.iter().sum::<f64>() / bare_ctl.len() as f64;
        let l = bare_loaded_rates.iter().sum::<f64>() / bare_loaded_rates.len() as f64;
        println!(
            "ratio: end-to-end {full:.0}/s = {:.2} × bare read+apply ({r:.0}/s), {:.2} × bare as controller ({c:.0}/s), {:.2} × bare read+apply under the same creates ({l:.0}/s)",
            full / r,
            full / c,
            full / l
        );
    }
    if let (Some(backlog), false) = (backlog_rate, bare_rates.is_empty()) {
        let r = bare_rates.iter().sum::<f64>() / bare_rates.len() as f64;
        let c = bare_ctl.iter().sum::<f64>() / bare_ctl.len() as f64;
        println!(
            "ratio: backlog {backlog:.0}/s = {:.2} × bare read+apply ({r:.0}/s), {:.2} × bare as controller ({c:.0}/s)",
            backlog / r,
            backlog / c
        );
    }
    println!("load average at the end: {}; controller log: {}", load_average(), log.display());
}
