//! The chaos harness: proves "never lost, never issued twice, never wrong" for an issuer
//! controller under `kill -9`, watch expiry and an API-server outage.
//!
//! [`run`] starts the adapter's controller binary as a child process against a [`KubeSim`]
//! (through a TCP [`FaultProxy`], so the API server can be "stopped"), creates N approved
//! CertificateRequests for fresh P-256 keys, and meanwhile:
//! * kills the controller with SIGKILL after a seeded random uptime, and right after the CA
//!   counted an enrollment (the window between "CA issued" and "state persisted"), and
//!   restarts it;
//! * expires every watch: open watches are closed and the next re-watches get `410 Gone`, so
//!   the controller relists;
//! * stops the API server (connections refused, open ones closed) for a while;
//!
//! and, after the last disruption, waits until every request is Ready or the deadline passes.
//! The [`ChaosReport`] names the requests *lost* (not Ready at the end), *duplicated* (more
//! than one certificate issued by the CA for the request's key) and *wrong* (the certificate
//! on the request does not carry the CSR's key and DNS names), from the CA's own records
//! ([`ChaosCa::issued`]) and the requests' status.
//!
//! The adapter supplies the CA side ([`ChaosCa`]: what it issued, and a hook that advances its
//! pending flow — approvals, delayed issuance) and the command that runs its controller against
//! a kubeconfig. Everything is seeded: a failing run is replayed with the same
//! [`ChaosOptions::seed`] (timings still vary with the host's scheduling).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

use crate::fault_proxy::{Fault, FaultProxy, ProxyOptions};
use crate::{FaultRule, KubeSim, Verb};

/// The CA simulator as the harness sees it.
pub trait ChaosCa: Send + Sync {
    /// DER of every certificate the CA has issued so far (its database, not its answers).
    fn issued(&self) -> Vec<Vec<u8>>;
    /// A counter that moves when the CA issues or accepts an enrollment; the harness kills the
    /// controller right after it moves (with probability [`ChaosOptions::kill_on_enroll`]).
    fn enroll_events(&self) -> u64 {
        self.issued().len() as u64
    }
    /// Called every [`ChaosOptions::advance_every`]: moves the pending flow along (approve what
    /// waits, release delayed certificates).
    fn advance(&self) {}
}

/// The issuer the requests name.
#[derive(Debug, Clone)]
pub struct IssuerRef {
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// What to do and how hard.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub seed: u64,
    /// Requests to create (spread over the first [`ChaosOptions::create_over`]).
    pub requests: usize,
    pub namespace: String,
    pub issuer: IssuerRef,
    pub create_over: Duration,
    /// At least this many SIGKILLs.
    pub kills: usize,
    /// Controller uptime before a timed kill: uniform in this range.
    pub uptime: (Duration, Duration),
    /// Probability of a kill right after the CA's enrollment counter moved (while kills remain).
    pub kill_on_enroll: f64,
    /// How many times every watch is expired (closed, then `410 Gone` on re-watch).
    pub watch_expiries: usize,
    /// How many times the API server is stopped, and for how long.
    pub api_outages: usize,
    pub api_outage: Duration,
    /// How often [`ChaosCa::advance`] runs.
    pub advance_every: Duration,
    /// Give up waiting for Ready this long after the start.
    pub deadline: Duration,
    /// Append the controller's stdout and stderr here (`None`: discarded).
    pub log: Option<PathBuf>,
    /// Give each CSR its DNS name as subject CN (false: rcgen's default subject, the same for
    /// every request). A CA that names its objects after the CN, as Venafi TPP does, needs it.
    pub subject_cn: bool,
}

impl ChaosOptions {
    /// The CI size: 50 requests, 10 kills, 2 watch expiries, one 10 s outage.
    pub fn ci(namespace: &str, issuer: IssuerRef) -> ChaosOptions {
        ChaosOptions {
            seed: 1,
            requests: 50,
            namespace: namespace.into(),
            issuer,
            create_over: Duration::from_secs(5),
            kills: 10,
            uptime: (Duration::from_millis(300), Duration::from_millis(2000)),
            kill_on_enroll: 0.3,
            watch_expiries: 2,
            api_outages: 1,
            api_outage: Duration::from_secs(10),
            advance_every: Duration::from_millis(200),
            deadline: Duration::from_secs(100),
            log: None,
            subject_cn: false,
        }
    }

    /// `requests` requests and `kills` kills within `deadline` (an adapter's CI or soak size),
    /// with watch expiries and API outages scaled to the kills, each overridable by the
    /// documented knobs `CHAOS_SEED`, `CHAOS_REQUESTS`, `CHAOS_KILLS`, `CHAOS_DEADLINE_SECS` and
    /// `CHAOS_LOG` (a file for the controller's output).
    pub fn sized(namespace: &str, issuer: IssuerRef, requests: usize, kills: usize, deadline: Duration) -> Self {
        let mut opts = ChaosOptions::ci(namespace, issuer);
        opts.seed = knob("CHAOS_SEED", 1);
        opts.requests = knob("CHAOS_REQUESTS", requests);
        opts.kills = knob("CHAOS_KILLS", kills);
        opts.deadline = Duration::from_secs(knob("CHAOS_DEADLINE_SECS", deadline.as_secs()));
        opts.create_over = Duration::from_millis(100 * opts.requests as u64).min(Duration::from_secs(60));
        opts.watch_expiries = (opts.kills / 5).max(2);
        opts.api_outages = (opts.kills / 25).max(1);
        opts.log = std::env::var("CHAOS_LOG").ok().map(Into::into);
        opts
    }
}

/// A knob from the environment (`CHAOS_KILLS`, ...), or `default` when unset or unreadable.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// How the harness starts an adapter's controller binary: `<binary> run --kubeconfig <file>
/// --namespace <namespace>` (the namespace its issuers live in).
pub fn controller_command(
    binary: &'static str,
    namespace: &str,
) -> impl Fn(&std::path::Path) -> tokio::process::Command + use<> {
    let namespace = namespace.to_owned();
    move |kubeconfig: &std::path::Path| {
        let mut cmd = tokio::process::Command::new(binary);
        cmd.arg("run").arg("--kubeconfig").arg(kubeconfig).arg("--namespace").arg(&namespace);
        cmd
    }
}

/// What a run found. Clean means `lost`, `duplicated` and `wrong` are all empty.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub seed: u64,
    pub requests: usize,
    pub ready: usize,
    /// Requests not Ready at the end, with their last Ready condition.
    pub lost: Vec<(String, String)>,
    /// Requests whose key the CA issued more than one certificate for, with the count.
    pub duplicated: Vec<(String, usize)>,
    /// Requests whose certificate does not match their CSR, with what is wrong.
    pub wrong: Vec<(String, String)>,
    /// Certificates the CA issued for keys no request has.
    pub stray: usize,
    /// Certificates the CA issued in all.
    pub issued: usize,
    pub kills: usize,
    /// Kills that came right after the CA's enrollment counter moved.
    pub kills_after_enroll: usize,
    /// Times the controller exited by itself (restarted like a kill).
    pub exits: usize,
    pub watch_expiries: usize,
    pub api_outages: usize,
    /// From the start until every request was Ready (or the deadline).
    pub elapsed: Duration,
    /// From the last disruption until every request was Ready.
    pub settle: Duration,
}

impl ChaosReport {
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.wrong.is_empty()
    }
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {}: {} requests, {} Ready; lost {} / duplicated {} / wrong {}; {} certificates issued ({} stray); \
             {} kills ({} right after an enrollment), {} exits, {} watch expiries, {} API outages; \
             all Ready after {:.1} s ({:.1} s after the last disruption)",
            self.seed,
            self.requests,
            self.ready,
            self.lost.len(),
            self.duplicated.len(),
            self.wrong.len(),
            self.issued,
            self.stray,
            self.kills,
            self.kills_after_enroll,
            self.exits,
            self.watch_expiries,
            self.api_outages,
            self.elapsed.as_secs_f64(),
            self.settle.as_secs_f64(),
        )?;
        for (n, why) in self.lost.iter().take(5) {
            write!(f, "\n  lost {n}: {why}")?;
        }
        for (n, c) in self.duplicated.iter().take(5) {
            write!(f, "\n  duplicated {n}: {c} certificates")?;
        }
        for (n, why) in self.wrong.iter().take(5) {
            write!(f, "\n  wrong {n}: {why}")?;
        }
        Ok(())
    }
}

/// One request the harness made: its name, key (SPKI DER) and DNS name.
struct Made {
    name: String,
    spki: Vec<u8>,
    dns: String,
    csr_pem: String,
}

/// Builds the controller command for a kubeconfig path (e.g. `certbridge-ejbca run --kubeconfig P`).
pub type ControllerCommand = dyn Fn(&Path) -> tokio::process::Command + Send + Sync;

/// Runs the chaos described by `opts` and reports. The issuer (and what it references) must
/// exist in `kube` already; the controller must not be running.
pub async fn run(
    kube: &KubeSim,
    ca: Arc<dyn ChaosCa>,
    controller: &ControllerCommand,
    opts: &ChaosOptions,
) -> anyhow::Result<ChaosReport> {
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let proxy = FaultProxy::start(ProxyOptions::tcp(kube.addr())).await?;
    let dir = tempfile_dir()?;
    let kubeconfig = dir.join("kubeconfig");
    let url = format!("{}://{}", if kube.ca_pem().is_some() { "https" } else { "http" }, proxy.addr());
    let kc = match kube.ca_pem() {
        None => crate::kubeconfig_for(&url),
        Some(ca) => crate::kubeconfig_with_ca(&url, ca),
    };
    std::fs::write(&kubeconfig, kc).context("writing the chaos kubeconfig")?;

    let api: Api<DynamicObject> = Api::namespaced_with(kube.client(), &opts.namespace, &request_resource());
    let made = make_requests(opts, &mut rng)?;
    let creator = tokio::spawn(create_requests(
        api.clone(),
        opts.clone(),
        made.iter().map(|m| (m.name.clone(), m.csr_pem.clone())).collect(),
    ));

    let mut report = ChaosReport { seed: opts.seed, requests: opts.requests, ..ChaosReport::default() };
    let mut child = spawn(controller, &kubeconfig, opts)?;
    let mut next_kill = Instant::now() + uptime(&mut rng, opts);
    // Disruptions other than kills, at random points of the kill phase.
    let kill_phase = (opts.uptime.0 + opts.uptime.1) / 2 * (opts.kills as u32).max(1);
    let mut expiries: Vec<Instant> =
        (0..opts.watch_expiries).map(|_| start + kill_phase.mul_f64(rng.random_range(0.1..0.9))).collect();
    let mut outages: Vec<Instant> =
        (0..opts.api_outages).map(|_| start + kill_phase.mul_f64(rng.random_range(0.2..0.8))).collect();
    expiries.sort();
    outages.sort();
    let mut outage_until: Option<Instant> = None;
    let mut last_enroll = ca.enroll_events();
    let mut last_advance = Instant::now();
    let mut last_disruption = start;

    // The chaos phase: until every kill, expiry and outage happened.
    while report.kills < opts.kills || !expiries.is_empty() || !outages.is_empty() || outage_until.is_some() {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = Instant::now();
        if now.duration_since(last_advance) >= opts.advance_every {
            ca.advance();
            last_advance = now;
        }
        if let Some(until) = outage_until {
            if now >= until {
                proxy.clear();
                outage_until = None;
                last_disruption = now;
            }
            continue;
        }
        if outages.first().is_some_and(|t| now >= *t) {
            outages.remove(0);
            proxy.set(Fault::Refuse);
            outage_until = Some(now + opts.api_outage);
            report.api_outages += 1;
            continue;
        }
        if expiries.first().is_some_and(|t| now >= *t) {
            expiries.remove(0);
            // Every re-watch in the next moments gets 410 Gone; the controller must relist.
            kube.faults().inject(
                FaultRule::error(410, "Expired", "too old resource version (chaos)").verb(Verb::Watch).times(20),
            );
            kube.faults().drop_watches();
            report.watch_expiries += 1;
            last_disruption = now;
        }
        let enrolls = ca.enroll_events();
        let after_enroll = enrolls != last_enroll && rng.random_bool(opts.kill_on_enroll);
        last_enroll = enrolls;
        if report.kills < opts.kills && (after_enroll || now >= next_kill) {
            kill(&mut child).await;
            report.kills += 1;
            report.kills_after_enroll += usize::from(after_enroll);
            last_disruption = Instant::now();
            child = spawn(controller, &kubeconfig, opts)?;
            next_kill = Instant::now() + uptime(&mut rng, opts);
        } else if let Ok(Some(_)) = child.try_wait() {
            report.exits += 1;
            child = spawn(controller, &kubeconfig, opts)?;
        }
    }
    kube.faults().clear();
    creator.await.context("creating requests")??;

    // Settle: every request Ready, or the deadline.
    let mut states = BTreeMap::new();
    let mut all_ready_at = None;
    while start.elapsed() < opts.deadline {
        ca.advance();
        if let Ok(Some(_)) = child.try_wait() {
            report.exits += 1;
            child = spawn(controller, &kubeconfig, opts)?;
        }
        states = read_states(&api, &made).await;
        if states.values().all(|s: &RequestState| s.ready) {
            all_ready_at = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    kill(&mut child).await;
    let end = all_ready_at.unwrap_or_else(Instant::now);
    report.elapsed = end.duration_since(start);
    report.settle = end.saturating_duration_since(last_disruption);
    judge(&mut report, &made, &states, &ca.issued());
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("certbridge-chaos-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn uptime(rng: &mut StdRng, opts: &ChaosOptions) -> Duration {
    let (lo, hi) = opts.uptime;
    if hi <= lo { lo } else { Duration::from_secs_f64(rng.random_range(lo.as_secs_f64()..hi.as_secs_f64())) }
}

fn spawn(
    controller: &ControllerCommand,
    kubeconfig: &Path,
    opts: &ChaosOptions,
) -> anyhow::Result<tokio::process::Child> {
    let mut cmd = controller(kubeconfig);
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    match &opts.log {
        None => {
            cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        }
        Some(path) => {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            cmd.stdout(f.try_clone()?).stderr(f);
        }
    }
    cmd.spawn().context("starting the controller")
}

/// SIGKILL (tokio's `start_kill` on Unix), then reap.
async fn kill(child: &mut tokio::process::Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

fn request_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    )
}

fn make_requests(opts: &ChaosOptions, rng: &mut StdRng) -> anyhow::Result<Vec<Made>> {
    let tag: u32 = rng.random();
    (0..opts.requests)
        .map(|i| {
            let name = format!("chaos-{tag:08x}-{i:04}");
            let dns = format!("{name}.chaos.example");
            let key = rcgen::KeyPair::generate().context("request key")?;
            let mut params = rcgen::CertificateParams::new(vec![dns.clone()]).context("CSR params")?;
            if opts.subject_cn {
                params.distinguished_name = rcgen::DistinguishedName::new();
                params.distinguished_name.push(rcgen::DnType::CommonName, dns.clone());
            }
            let csr_pem = params.serialize_request(&key).context("CSR")?.pem().context("CSR PEM")?;
            Ok(Made { name, spki: rcgen::PublicKeyData::subject_public_key_info(&key), dns, csr_pem })
        })
        .collect()
}

/// Creates and approves every request (name, CSR PEM), spread over `create_over`.
async fn create_requests(
    api: Api<DynamicObject>,
    opts: ChaosOptions,
    made: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let gap = opts.create_over / (opts.requests.max(1) as u32);
    for (name, csr) in &made {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest",
            "metadata": {"name": name, "namespace": opts.namespace},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD.encode(csr.as_bytes()),
                "issuerRef": {"group": opts.issuer.group, "kind": opts.issuer.kind, "name": opts.issuer.name},
                "usages": ["digital signature", "key encipherment"],
            },
        }))?;
        api.create(&PostParams::default(), &obj).await.with_context(|| format!("creating {name}"))?;
        approve(&api, name).await?;
        tokio::time::sleep(gap).await;
    }
    Ok(())
}

/// Appends cert-manager's Approved condition (read, append, replace status; retried on conflict).
async fn approve(api: &Api<DynamicObject>, name: &str) -> anyhow::Result<()> {
    for _ in 0..20 {
        let mut obj = api.get_status(name).await?;
        let conditions = obj.data.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut conditions = conditions;
        conditions.push(json!({
            "type": "Approved", "status": "True", "reason": "ChaosHarness", "message": "approved by the chaos harness",
            "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }));
        if !obj.data["status"].is_object() {
            obj.data["status"] = json!({});
        }
        obj.data["status"]["conditions"] = Value::Array(conditions);
        match api.replace_status(name, &PostParams::default(), &obj).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e).with_context(|| format!("approving {name}")),
        }
    }
    anyhow::bail!("approving {name}: conflicts did not stop")
}

#[derive(Debug, Default)]
struct RequestState {
    ready: bool,
    condition: String,
    certificate: Option<Vec<u8>>,
}

async fn read_states(api: &Api<DynamicObject>, made: &[Made]) -> BTreeMap<String, RequestState> {
    let listed = api.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
    let by_name: HashMap<String, DynamicObject> =
        listed.into_iter().filter_map(|o| Some((o.metadata.name.clone()?, o))).collect();
    made.iter()
        .map(|m| {
            let state = match by_name.get(&m.name) {
                None => RequestState { condition: "not created".into(), ..Default::default() },
                Some(o) => {
                    let ready = o
                        .data
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned());
                    let certificate = o
                        .data
                        .pointer("/status/certificate")
                        .and_then(Value::as_str)
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .filter(|b| !b.is_empty());
                    let condition = ready
                        .as_ref()
                        .map(|c| format!("{}/{}: {}", c["status"], c["reason"], c["message"]))
                        .unwrap_or_else(|| "no Ready condition".into());
                    let is_ready = ready.is_some_and(|c| c["status"] == "True") && certificate.is_some();
                    RequestState { ready: is_ready, condition, certificate }
                }
            };
            (m.name.clone(), state)
        })
        .collect()
}

/// The SPKI DER and DNS names of a certificate.
fn key_and_names(der: &[u8]) -> Option<(Vec<u8>, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some((cert.public_key().raw.to_vec(), names))
}

fn judge(report: &mut ChaosReport, made: &[Made], states: &BTreeMap<String, RequestState>, issued: &[Vec<u8>]) {
    let mut per_key: HashMap<Vec<u8>, usize> = HashMap::new();
    for der in issued {
        if let Some((spki, _)) = key_and_names(der) {
            *per_key.entry(spki).or_default() += 1;
        }
    }
    report.issued = issued.len();
    let known: std::collections::HashSet<&[u8]> = made.iter().map(|m| m.spki.as_slice()).collect();
    report.stray = per_key.iter().filter(|(k, _)| !known.contains(k.as_slice())).map(|(_, n)| n).sum();
    for m in made {
        let state = states.get(&m.name);
        let n = per_key.get(&m.spki).copied().unwrap_or(0);
        if n > 1 {
            report.duplicated.push((m.name.clone(), n));
        }
        let Some(state) = state.filter(|s| s.ready) else {
            let why = state.map(|s| s.condition.clone()).unwrap_or_else(|| "never read".into());
            report.lost.push((m.name.clone(), why));
            continue;
        };
        report.ready += 1;
        let leaf =
            state.certificate.as_deref().and_then(|pem| pem::parse_many(pem).ok()).and_then(|b| b.into_iter().next());
        match leaf.as_ref().and_then(|b| key_and_names(b.contents())) {
            None => report.wrong.push((m.name.clone(), "status.certificate has no parseable leaf".into())),
            Some((spki, _)) if spki != m.spki => {
                report.wrong.push((m.name.clone(), "the leaf carries another key than the CSR".into()))
            }
            Some((_, names)) if names != vec![m.dns.clone()] => {
                report.wrong.push((m.name.clone(), format!("the leaf names {names:?}, the CSR {:?}", m.dns)))
            }
            Some(_) => {}
        }
    }
}
