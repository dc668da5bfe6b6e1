//! The chaos harness (`certbridge_testkit::chaos`) on the AD CS controller binary, against the
//! certsrv simulator (NTLM with EPA when supported) and its pending flow: the issuer's template
//! ("Manual") needs a certificate manager, so every submit answers "Taken Under Submission" with
//! a request ID, and the harness approves everything pending every 200 ms. Meanwhile SIGKILLs at
//! random points and right after certsrv recorded a submit or issued (so kills land both inside
//! the submit round trip and while requests wait), watch expiry (410 Gone) and a 10 s API-server
//! outage.
//!
//! certsrv has no search and no idempotency key: a kill after certfnsh.asp recorded a submit and
//! before the controller saved the request ID makes the restarted controller submit again, and
//! both requests are issued (README, benchmarks/adcs.md). So duplicates are expected, and the
//! test asserts what must hold anyway: nothing lost, nothing wrong, no certificate for a key the
//! harness did not make, no client protocol violation or refused login at certsrv, and every
//! duplicate explained: between two submits of the same CSR the controller was restarted (the
//! request ID handed out before the restart, the next one after it), or the controller logged
//! that it could not save the first one's ID (the API server was down); and the controller never
//! logged the first one's ID as saved (a restart after the save only polls, so a kill while the
//! request was pending must not resubmit). A resubmit otherwise is a bug, not the protocol's limit.
//!
//! CI size: `chaos_ci` (50 requests, ≥ 10 kills). The soak (1,000 requests, ≥ 50 kills) is the
//! ignored `chaos_soak`; its command and last figures are in benchmarks/adcs.md and
//! RELIABILITY.md. Both read `CHAOS_SEED`, `CHAOS_REQUESTS`, `CHAOS_KILLS`,
//! `CHAOS_DEADLINE_SECS` and `CHAOS_LOG` (a file the controllers' output is appended to).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certbridge::IssuerScope;
use certbridge::testing::{certificate_request, create_issuer, install_crds};
use certbridge_adcs::AdcsIssuerSpec;
use certbridge_testkit::KubeSim;
use certbridge_testkit::chaos::{ChaosCa, ChaosOptions, ChaosReport, IssuerRef, knob};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};

use crate::common::*;

/// The simulator as the harness sees it. A thread polls `/events` every 5 ms into `events`, so
/// [`ChaosCa::enroll_events`] (called every millisecond by the harness) costs an atomic read.
struct Ca {
    sim: Arc<Sim>,
    events: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Ca {
    fn new(sim: Arc<Sim>) -> Ca {
        let events = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (port, e, s) = (sim.admin_port, events.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(v) = admin_at(port, "/events") {
                    let n = v["submits"].as_u64().unwrap_or(0) + v["issued"].as_u64().unwrap_or(0);
                    e.store(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Ca { sim, events, stop }
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl ChaosCa for Ca {
    fn issued(&self) -> Vec<Vec<u8>> {
        self.sim.issued_der()
    }
    /// Moves when certsrv records a submit (the double-submit window opens) and when it issues
    /// (an approval: the request was pending).
    fn enroll_events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
    fn advance(&self) {
        self.sim.approve_pending();
    }
}

/// How the duplicates came about, from certsrv's records.
#[derive(Debug, Default)]
struct Explained {
    /// CSRs certsrv issued more than one certificate for.
    duplicated: usize,
    /// Submits whose request ID was lost because the controller was restarted before saving it.
    submits_cut: usize,
    /// Distinct restarts that cut at least one submit (kills that landed in a submit window).
    restarts_cutting: usize,
    /// Of `submits_cut`, those whose ID the controller had also failed to save (API server
    /// down): kept in memory, lost with the restart.
    unsaved: usize,
    /// Resubmits with neither, or after the first ID was saved: bugs.
    unexplained: Vec<String>,
}

/// Every consecutive pair of submits (request IDs `a < b`) of one CSR needs an explanation: a
/// restart between them (`a ≤ B < b` for a restart boundary `B`, the newest ID handed out when
/// the controller was restarted); a logged failure to save `a` does not explain it, since the
/// controller keeps an unsaved ID in memory; and `a` must not have been logged as saved.
fn explain(requests_by_id: &serde_json::Value, boundaries: &[u64], log: &Logged) -> Explained {
    let mut by_csr: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
    for (id, r) in requests_by_id.as_object().expect("requests_by_id") {
        let id: u64 = id.parse().expect("numeric request ID");
        by_csr
            .entry(r["csr_sha"].as_str().unwrap_or_default())
            .or_default()
            .push((id, r["status"].as_str().unwrap_or("")));
    }
    let mut out = Explained::default();
    let mut cutting = BTreeSet::new();
    for (csr, ids) in &mut by_csr {
        ids.sort_unstable();
        if ids.iter().filter(|(_, s)| *s == "issued").count() > 1 {
            out.duplicated += 1;
        }
        for pair in ids.windows(2) {
            let (a, b) = (pair[0].0, pair[1].0);
            if log.saved.contains(&a) {
                out.unexplained.push(format!(
                    "CSR {}: request {a}'s ID was saved, yet it was submitted again as {b}",
                    &csr[..12.min(csr.len())]
                ));
            } else if let Some(restart) = boundaries.iter().position(|&bound| a <= bound && bound < b) {
                out.submits_cut += 1;
                out.unsaved += usize::from(log.unsaved.contains(&a));
                cutting.insert(restart);
            } else {
                // A failed save is no excuse: the controller keeps an unsaved ID in memory, so
                // only a restart loses it.
                out.unexplained.push(format!(
                    "CSR {}: submitted as request {a} and again as {b} with no restart between{}",
                    &csr[..12.min(csr.len())],
                    if log.unsaved.contains(&a) {
                        " (its ID could not be saved, but it was kept in memory)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    out.restarts_cutting = cutting.len();
    out
}

/// What the controllers logged about request IDs.
#[derive(Debug, Default)]
struct Logged {
    /// "AD CS request ID saved" (written after the save returned; a kill in between leaves a
    /// saved ID unlogged, which only makes the check above more lenient).
    saved: HashSet<u64>,
    /// "AD CS recorded the request but its ID could not be saved".
    unsaved: HashSet<u64>,
}

/// The request IDs in the controllers' JSON log lines after byte `from` (a line cut by a kill
/// does not parse and is skipped).
fn logged_ids(log: &Path, from: u64) -> Logged {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let _ = f.seek(std::io::SeekFrom::Start(from));
        let _ = f.read_to_string(&mut text);
    }
    let mut out = Logged::default();
    for v in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        let (Some(message), Some(id)) = (v["message"].as_str(), v["req_id"].as_u64()) else { continue };
        if message == "AD CS request ID saved" {
            out.saved.insert(id);
        } else if message.contains("ID could not be saved") {
            out.unsaved.insert(id);
        }
    }
    out
}

struct Outcome {
    report: ChaosReport,
    explained: Explained,
    violations: Vec<String>,
    auth_failures: u64,
    restarts: usize,
}

async fn chaos(requests: usize, kills: usize, deadline: Duration) -> Outcome {
    let mut kopts = certbridge_testkit::SimOptions::default();
    kopts.namespaces.push(NS.into());
    let kube = KubeSim::start_with(kopts).await.expect("kube-sim starts");
    kube.install_cert_manager_crds().await.expect("cert-manager CRDs");
    let client = kube.client();
    install_crds::<AdcsIssuerSpec>(&client).await.expect("AD CS CRDs");
    let sim = Arc::new(Sim::start(SimOpts::default()));
    let (secrets, cms) = objects(&sim, NS, PASSWORD);
    for s in secrets {
        Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &s).await.expect("Secret");
    }
    for c in cms {
        Api::<ConfigMap>::namespaced(client.clone(), NS).create(&PostParams::default(), &c).await.expect("ConfigMap");
    }
    let mut issuer_spec = spec(&sim);
    // The simulator's --pending-templates default: every request waits for a certificate manager.
    issuer_spec.template = "Manual".into();
    create_issuer(&client, IssuerScope::Namespaced, NS, "adcs", &issuer_spec).await.expect("issuer");

    let named = certificate_request::<AdcsIssuerSpec>(NS, "x", "", IssuerScope::Namespaced, "adcs").spec.issuer_ref;
    let issuer =
        IssuerRef { group: named.group.unwrap_or_default(), kind: named.kind.unwrap_or_default(), name: named.name };
    let mut opts = ChaosOptions::sized(NS, issuer, requests, kills, deadline);
    // The controllers' JSON log is read afterwards for failed request-ID saves: ours unless
    // CHAOS_LOG names one (then only what this run appended is read).
    let own_log = std::env::temp_dir().join(format!("adcs-chaos-{}.log", std::process::id()));
    let log: PathBuf = opts.log.clone().unwrap_or_else(|| own_log.clone());
    let log_from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    opts.log = Some(log.clone());

    // Every (re)start of the controller is a boundary in certsrv's request-ID sequence: the
    // newest ID handed out by then. Before reading it after a kill, wait 200 ms so that a submit
    // the killed process had fully sent is recorded on the old side of the boundary.
    let boundaries: Arc<Mutex<Vec<u64>>> = Arc::default();
    let base = certbridge_testkit::chaos::controller_command(env!("CARGO_BIN_EXE_certbridge-adcs"), NS);
    let (port, seen) = (sim.admin_port, boundaries.clone());
    let controller = move |kubeconfig: &Path| {
        let mut seen = seen.lock().expect("boundaries");
        if !seen.is_empty() {
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(200)));
        }
        let last = admin_at(port, "/events").expect("simulator events")["last_id"].as_u64().expect("last_id");
        seen.push(last);
        let mut cmd = base(kubeconfig);
        cmd.arg("--log-format").arg("json");
        cmd
    };

    let ca = Arc::new(Ca::new(sim.clone()));
    let report = certbridge_testkit::chaos::run(&kube, ca.clone(), &controller, &opts).await.expect("chaos run");
    let counters = sim.counters();
    let boundaries = boundaries.lock().expect("boundaries").clone();
    let logged = logged_ids(&log, log_from);
    assert!(
        !logged.saved.is_empty(),
        "no \"AD CS request ID saved\" line in the controllers' JSON log {}",
        log.display()
    );
    let explained = explain(&counters["requests_by_id"], &boundaries[1..], &logged);
    let outcome = Outcome {
        explained,
        violations: sim.violations(),
        auth_failures: counters["auth_failures"].as_u64().unwrap_or(0),
        restarts: boundaries.len() - 1,
        report,
    };
    eprintln!(
        "chaos (AD CS): {} submits at certsrv for {} requests, {} NTLM handshakes, {} connections",
        counters["submits"], outcome.report.requests, counters["handshakes"], counters["connections"]
    );
    if log == own_log {
        let _ = std::fs::remove_file(&own_log);
    }
    kube.shutdown().await;
    outcome
}

fn check(o: &Outcome, kills: usize) {
    let (r, e) = (&o.report, &o.explained);
    eprintln!("chaos (AD CS): {r}");
    eprintln!(
        "chaos (AD CS): {} duplicated; {} submits cut by {} of {} restarts (kills inside a submit window; {} of them after a failed save); unexplained {}",
        e.duplicated,
        e.submits_cut,
        e.restarts_cutting,
        o.restarts,
        e.unsaved,
        e.unexplained.len()
    );
    assert!(r.lost.is_empty(), "{r}");
    assert!(r.wrong.is_empty(), "{r}");
    assert_eq!(r.stray, 0, "certificates for keys the harness did not make: {r}");
    assert!(r.kills >= kills, "{r}");
    assert!(o.violations.is_empty(), "{:?}", o.violations);
    assert_eq!(o.auth_failures, 0, "refused logins at certsrv");
    assert!(e.unexplained.is_empty(), "{:#?}", e.unexplained);
    // The harness's count (certificates per key) and certsrv's records (issued requests per CSR)
    // agree, so every duplicate the harness saw is one of the explained resubmits.
    assert_eq!(r.duplicated.len(), e.duplicated, "{r}");
    assert!(e.duplicated <= e.submits_cut, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_ci() {
    // A liveness bound, not a speed target (pending requests are polled every second).
    let outcome = chaos(50, 10, Duration::from_secs(240)).await;
    check(&outcome, knob("CHAOS_KILLS", 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 1,000 requests, 50 kills; see benchmarks/adcs.md"]
async fn chaos_soak() {
    let outcome = chaos(1000, 50, Duration::from_secs(1800)).await;
    check(&outcome, knob("CHAOS_KILLS", 50));
}
