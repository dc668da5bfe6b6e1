//! The CA fault matrix for AD CS: the real controllers (in process, default options) on kube-sim
//! sign at the certsrv simulator with NTLM and channel binding (EPA "required" at the simulator,
//! `channelBinding: auto`, the default, at the issuer), through the testkit's fault proxy in its
//! TCP layer. The proxy relays bytes untouched, so TLS stays end to end and NTLM's
//! connection-bound authentication and the `tls-server-end-point` binding keep working through it
//! (a TLS-terminating proxy would break both). Faults come from two places:
//! * the proxy (connection faults): refuse, blackhole, TLS alert, reset in the handshake, slow drip;
//! * the simulator (HTTP faults, where IIS or what stands in front of it would answer): HTTP.sys's
//!   503, a load balancer's 502/504/429 with `Retry-After`, certsrv's 500, and answers spoilt
//!   after certsrv did its work (lost, reset mid-body, truncated, garbage, dripped, a certificate
//!   for another key). See `sim/certsrv_sim.py`.
//!
//! For each fault: switch it on, create one approved request, watch the request's and the issuer's
//! Ready conditions for the window, count the controller's sign attempts (every labelled series of
//! `certbridge_sign_duration_seconds_count`) and the calls that reached the simulator, switch the
//! fault off and time how long until the request is Ready. Then assert what must hold whatever
//! the timing:
//! * the request ends Ready with exactly one certificate, for its own key, never changed once
//!   set, from the last request certsrv recorded for the CSR (the ID the adapter saved);
//! * the CA recorded exactly one submit for the CSR when the fault keeps the submit from certsrv
//!   or strikes after the request ID was saved. When certsrv accepted a submit and its answer was
//!   lost (the double-submit window; certsrv has no search and no idempotency key, see
//!   `benchmarks/adcs.md`), the adapter promises only that every resubmission is counted
//!   (`submit-attempts`, saved before each submit, and a warning): the CA's submits never exceed it;
//! * retries are bounded by the controller's backoff (500 ms doubling), and with `Retry-After` no
//!   submit follows a 429 sooner than it asked;
//! * the request never turns Failed on a fault that passes, no condition message carries the
//!   password, and a certificate for another key is never stored (the request fails instead).
//!
//! `adcs_fault_matrix_ci` runs a few rows with short windows (CI); `adcs_fault_matrix` runs every
//! fault and prints the table RELIABILITY.md records (`#[ignore]`, a measurement). The row runner
//! is a copy of the Venafi matrix's, adapted to certsrv's counters.

use std::time::Duration;

use certbridge::api::CertificateRequest;
use certbridge::runtime::{ControllerHandle, Options};
use certbridge::testing::matrix::{
    RowWatch, assert_within_backoff, chain, create_approved, leaf_has_key, sign_attempts,
};
use certbridge::testing::{create_issuer, install_crds, issuer_api, wait_issuer_ready, wait_ready};
use certbridge::{IssuerScope, Reaction, SignContext, Signer};
use certbridge_adcs::{AdcsIssuerSpec, AdcsSigner};
use certbridge_testkit::KubeSim;
use certbridge_testkit::fault_proxy::{Fault, FaultProxy, ProxyOptions};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};

use crate::common::*;

const RECOVERY_CAP: Duration = Duration::from_secs(90);
const REQ_ID: &str = "state.adcs.certbridge.io/req-id";
const SUBMIT_ATTEMPTS: &str = "state.adcs.certbridge.io/submit-attempts";

/// Where a fault is injected.
#[derive(Clone, Debug)]
enum Inject {
    /// The TCP proxy in front of the simulator.
    Proxy(Fault),
    /// The simulator: `kind` on `at` (a page or `any`), with `Retry-After` seconds.
    Sim { kind: &'static str, at: &'static str, retry_after: Option<u64> },
}

/// What the CA's submit count may be after the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The fault keeps submits from certsrv, or strikes after the request ID was saved: one submit.
    OneSubmit,
    /// certsrv may accept a submit whose answer is lost: the adapter resubmits, counting each.
    AnswerLost,
    /// certnew.cer hands over a certificate for another key: the request fails, nothing stored.
    OtherKey,
}

struct Case {
    inject: Inject,
    window: Duration,
    expect: Expect,
}

impl Case {
    fn new(inject: Inject, window: Duration, expect: Expect) -> Case {
        Case { inject, window, expect }
    }

    fn label(&self) -> String {
        match &self.inject {
            Inject::Proxy(Fault::Reset) => "tcp reset (in the TLS handshake)".into(),
            Inject::Proxy(Fault::SlowDrip { interval }) => format!("tcp slow drip ({} ms/byte)", interval.as_millis()),
            Inject::Proxy(f) => f.name(),
            Inject::Sim { kind, retry_after: Some(s), .. } => format!("{kind} Retry-After {s}"),
            Inject::Sim { kind: "503", .. } => "503 (HTTP.sys, app pool down)".into(),
            Inject::Sim { kind: "slow-drip", .. } => "slow drip of answers (100 ms/byte)".into(),
            Inject::Sim { kind, .. } => (*kind).into(),
        }
    }

    fn at(&self) -> String {
        match &self.inject {
            Inject::Proxy(_) => "proxy (TCP)".into(),
            Inject::Sim { kind: "503" | "502" | "504" | "429", at, .. } => format!("front of IIS, {at}"),
            Inject::Sim { at, .. } => format!("certsrv, {at}"),
        }
    }
}

/// A row of the table.
struct Row {
    fault: String,
    at: String,
    window: Duration,
    request_states: Vec<String>,
    issuer_states: Vec<String>,
    attempts: u64,
    calls: usize,
    outcome: String,
    submits: u64,
    counted: u64,
}

impl Row {
    fn markdown(&self) -> String {
        format!(
            "| {} ({} s) | {} | {} | {} | {} / {} | {} | {} / {} |\n",
            self.fault,
            self.window.as_secs(),
            self.at,
            self.request_states.join(" → "),
            self.issuer_states.join(" → "),
            self.attempts,
            self.calls,
            self.outcome,
            self.submits,
            self.counted,
        )
    }
}

const HEADER: &str = "| fault (window) | injected at | request Ready during the fault | issuer Ready during the fault | sign attempts by the controller / calls reaching the simulator, during the fault | after the fault cleared | submits certsrv recorded for the CSR / submits the adapter started (`submit-attempts`) |\n|---|---|---|---|---|---|---|\n";

struct Rig {
    kube: KubeSim,
    sim: Sim,
    proxy: FaultProxy,
    handle: ControllerHandle,
    client: kube::Client,
}

async fn rig() -> Rig {
    let mut opts = certbridge_testkit::SimOptions::default();
    opts.namespaces.push(NS.into());
    let kube = KubeSim::start_with(opts).await.unwrap();
    kube.install_cert_manager_crds().await.unwrap();
    let client = kube.client();
    install_crds::<AdcsIssuerSpec>(&client).await.unwrap();
    // EPA required: a binding that did not survive the proxy would fail every row.
    let sim = Sim::start(SimOpts { epa: "required", ..Default::default() });
    let proxy = FaultProxy::start(ProxyOptions::tcp(([127, 0, 0, 1], sim.port).into())).await.unwrap();
    let (secrets, cms) = objects(&sim, NS, PASSWORD);
    for s in secrets {
        Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &s).await.unwrap();
    }
    for c in cms {
        Api::<ConfigMap>::namespaced(client.clone(), NS).create(&PostParams::default(), &c).await.unwrap();
    }
    let mut issuer_spec = spec(&sim);
    // The simulator's certificate names localhost: TLS (and the binding) is end to end.
    issuer_spec.url = format!("https://localhost:{}/certsrv", proxy.addr().port());
    issuer_spec.request_timeout_seconds = Some(5);
    create_issuer(&client, IssuerScope::Namespaced, NS, "adcs", &issuer_spec).await.unwrap();
    let handle = certbridge::runtime::start(AdcsSigner::new(), client.clone(), Options::default()).await.unwrap();
    let rig = Rig { kube, sim, proxy, handle, client };

    // A baseline request: proves the path (and the binding through the proxy) works.
    let csr = rig.create("baseline").await;
    wait_ready(&rig.client, NS, "baseline", RECOVERY_CAP).await.expect("the baseline request becomes Ready");
    assert!(rig.right_key("baseline", &csr).await);
    assert_eq!(rig.sim.enrollments(&csr), 1);
    rig
}

impl Rig {
    fn requests(&self) -> Api<CertificateRequest> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create(&self, name: &str) -> String {
        create_approved::<AdcsIssuerSpec>(&self.client, NS, name, "adcs", "team-a.example").await
    }

    async fn condition(&self, name: &str) -> (String, String, String) {
        let cr = self.requests().get(name).await.unwrap();
        cr.condition("Ready")
            .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
            .unwrap_or_default()
    }

    async fn chain(&self, name: &str) -> Option<String> {
        chain(&self.client, NS, name).await
    }

    async fn annotation(&self, name: &str, key: &str) -> Option<String> {
        self.requests().get(name).await.unwrap().metadata.annotations.and_then(|a| a.get(key).cloned())
    }

    /// Whether the request's leaf carries its CSR's key.
    async fn right_key(&self, name: &str, csr: &str) -> bool {
        leaf_has_key(&self.chain(name).await.unwrap(), csr)
    }

    fn inject(&self, i: &Inject) {
        match i {
            Inject::Proxy(f) => self.proxy.set(f.clone()),
            Inject::Sim { kind, at, retry_after: Some(s) } => self.sim.fault_retry_after(kind, at, 1_000_000, *s),
            Inject::Sim { kind, at, retry_after: None } => self.sim.fault(kind, at, 1_000_000),
        }
    }

    fn clear(&self) {
        self.proxy.clear();
        self.sim.clear_faults();
    }

    /// Runs one row: the fault on for its window, then off until the request is settled.
    async fn row(&self, index: usize, case: Case) -> Row {
        let label = case.label();
        let name = format!(
            "m{index:02}-{}",
            label
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
                .collect::<String>()
        );
        let name = name.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
        let (window, expect) = (case.window, case.expect);
        let issuers = issuer_api::<AdcsIssuerSpec>(&self.client, IssuerScope::Namespaced, NS);
        let watch = RowWatch::new(&self.client, NS, &name, issuers, "adcs");
        // Every row starts from a Ready issuer (the previous row's outage may still be clearing).
        wait_issuer_ready::<AdcsIssuerSpec>(&self.client, IssuerScope::Namespaced, NS, "adcs", RECOVERY_CAP)
            .await
            .unwrap_or_else(|e| panic!("{name}: the issuer is not Ready before the row: {e}"));
        let log_before = self.sim.log(0).len();
        let seen_before = self.proxy.seen().len();
        let attempts_before = sign_attempts(&self.handle);
        self.inject(&case.inject);
        let csr = self.create(&name).await;
        let mut watched = watch.during(window).await;
        let attempts = sign_attempts(&self.handle) - attempts_before;
        let during = self.sim.log(log_before);
        let proxy_faults = self.proxy.seen()[seen_before..].iter().filter(|s| s.fault.is_some()).count();
        self.clear();
        let settled = watch
            .until(&mut watched, RECOVERY_CAP, |r| {
                r.status == "True" || (expect == Expect::OtherKey && r.reason == "Failed")
            })
            .await
            .map(|(at, r)| (at, r.reason));
        let total_attempts = sign_attempts(&self.handle) - attempts_before;
        let submits = self.sim.enrollments(&csr);
        let counted: u64 =
            self.annotation(&name, SUBMIT_ATTEMPTS).await.and_then(|a| a.parse().ok()).unwrap_or_default();
        let outcome = match &settled {
            Some((at, reason)) if reason == "Failed" => format!("Failed (another key) at {:.1} s", at.as_secs_f64()),
            Some((at, _)) => format!("Ready in {:.1} s", at.as_secs_f64()),
            None => format!("not settled within {} s", RECOVERY_CAP.as_secs()),
        };
        let row = Row {
            fault: label,
            at: case.at(),
            window,
            request_states: watched.request_states.clone(),
            issuer_states: watched.issuer_states.clone(),
            attempts,
            calls: during.len(),
            outcome,
            submits,
            counted,
        };
        eprint!("{}", row.markdown());
        for m in watched.messages.iter().filter(|m| !m.is_empty()) {
            eprintln!("    message: {m}");
        }

        // What must hold whatever the timing.
        assert!(settled.is_some(), "{name}: not settled within {RECOVERY_CAP:?} of the fault clearing");
        assert!(total_attempts >= 1, "{name}: the sign-attempt count did not move (is the metric read right?)");
        match &case.inject {
            // Refuse opens no connection for the proxy to record.
            Inject::Proxy(Fault::Refuse) => {}
            Inject::Proxy(_) => assert!(proxy_faults >= 1, "{name}: the proxy's fault never fired"),
            Inject::Sim { kind, .. } => assert!(
                during.iter().any(|e| e["fault"] == *kind),
                "{name}: the simulator's fault never fired: {during:?}"
            ),
        }
        for m in &watched.messages {
            assert!(!m.contains(PASSWORD), "{name}: a condition carries the password: {m}");
        }
        if expect == Expect::OtherKey {
            assert!(
                watched.certificates.is_empty(),
                "{name}: stored a certificate for another key: {:?}",
                watched.certificates
            );
            let (_, _, msg) = self.condition(&name).await;
            assert!(msg.contains("another key"), "{name}: Failed without saying why: {msg}");
            assert_eq!(submits, 1, "{name}: certsrv recorded {submits} submits for one CertificateRequest");
        } else {
            assert!(
                !watched.request_states.iter().any(|s| s.ends_with("Failed")),
                "{name}: a passing fault failed the request: {:?}",
                watched.request_states
            );
            assert!(self.right_key(&name, &csr).await, "{name}: the request's certificate is for another key");
            assert_eq!(
                watched.certificates.len(),
                1,
                "{name}: the request's certificate changed once set: {:?}",
                watched.certificates
            );
            // The certificate comes from the request ID the adapter saved: certsrv's last for the CSR.
            let ids = self.sim.request_ids(&csr);
            let saved = self.annotation(&name, REQ_ID).await.and_then(|a| a.parse::<u64>().ok());
            assert_eq!(saved, ids.last().copied(), "{name}: saved request ID vs certsrv's requests {ids:?}");
            match expect {
                Expect::OneSubmit => {
                    assert_eq!(submits, 1, "{name}: certsrv recorded {submits} submits for one CertificateRequest")
                }
                _ => assert!(
                    (1..=counted).contains(&submits),
                    "{name}: certsrv recorded {submits} submits, the adapter counted {counted}: a submit went uncounted"
                ),
            }
        }
        assert_within_backoff(&name, attempts, window);
        if let Inject::Sim { retry_after: Some(secs), .. } = case.inject {
            // No submit sooner than a 429 asked (the simulator's clock on both ends).
            let all = self.sim.log(log_before);
            let submits_at: Vec<_> = all.iter().filter(|e| e["page"] == "certfnsh.asp").collect();
            for pair in submits_at.windows(2) {
                if pair[0]["status"] == 429 {
                    let gap = pair[1]["t"].as_f64().unwrap() - pair[0]["t"].as_f64().unwrap();
                    assert!(gap >= secs as f64, "{name}: a submit {gap:.2} s after a 429 asking for {secs} s");
                }
            }
        }
        row
    }

    async fn shutdown(self) {
        self.handle.shutdown().await;
        self.kube.shutdown().await;
    }
}

fn sim(kind: &'static str, at: &'static str) -> Inject {
    Inject::Sim { kind, at, retry_after: None }
}

/// Every row of the full matrix.
fn all_faults() -> Vec<Case> {
    use Expect::*;
    let w = Duration::from_secs(15);
    let drip = Duration::from_millis(100);
    vec![
        Case::new(Inject::Proxy(Fault::Refuse), w, OneSubmit),
        Case::new(Inject::Proxy(Fault::Blackhole), w, OneSubmit),
        Case::new(Inject::Proxy(Fault::TlsAlert), w, OneSubmit),
        Case::new(Inject::Proxy(Fault::Reset), w, OneSubmit),
        Case::new(Inject::Proxy(Fault::SlowDrip { interval: drip }), w, OneSubmit),
        Case::new(sim("500", "any"), w, OneSubmit),
        Case::new(sim("502", "any"), w, OneSubmit),
        Case::new(sim("503", "any"), w, OneSubmit),
        Case::new(sim("504", "any"), w, OneSubmit),
        // Long enough to see the retry rate per minute.
        Case::new(sim("503", "any"), Duration::from_secs(60), OneSubmit),
        Case::new(Inject::Sim { kind: "429", at: "any", retry_after: Some(10) }, w, OneSubmit),
        // On the submit only: the issuer stays Ready, so the request's own retries show Retry-After.
        Case::new(Inject::Sim { kind: "429", at: "certfnsh.asp", retry_after: Some(5) }, w, OneSubmit),
        Case::new(sim("drop-answer", "certfnsh.asp"), w, AnswerLost),
        Case::new(sim("reset-mid-body", "any"), w, AnswerLost),
        Case::new(sim("truncate", "any"), w, AnswerLost),
        Case::new(sim("garbage", "any"), w, AnswerLost),
        Case::new(sim("slow-drip", "any"), w, AnswerLost),
        // After the request ID was saved: the adapter only polls.
        Case::new(sim("truncate", "certnew.cer"), w, OneSubmit),
        Case::new(sim("other-key", "certnew.cer"), w, OtherKey),
    ]
}

/// CI: a connection fault, HTTP.sys's 503, a 429 with Retry-After on the submit, a submit
/// answer lost after certsrv recorded it, and another key's certificate; short windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adcs_fault_matrix_ci() {
    let rig = rig().await;
    let w = Duration::from_secs(3);
    let rows = [
        Case::new(Inject::Proxy(Fault::TlsAlert), w, Expect::OneSubmit),
        Case::new(sim("503", "any"), w, Expect::OneSubmit),
        Case::new(Inject::Sim { kind: "429", at: "certfnsh.asp", retry_after: Some(2) }, w, Expect::OneSubmit),
        Case::new(sim("truncate", "certfnsh.asp"), w, Expect::AnswerLost),
        Case::new(sim("other-key", "certnew.cer"), w, Expect::OtherKey),
    ];
    for (i, case) in rows.into_iter().enumerate() {
        rig.row(i, case).await;
    }
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement (~6 min): the AD CS fault matrix; see RELIABILITY.md"]
async fn adcs_fault_matrix() {
    let rig = rig().await;
    let mut table = String::from(HEADER);
    for (i, case) in all_faults().into_iter().enumerate() {
        table.push_str(&rig.row(i, case).await.markdown());
    }
    println!("\n{table}");
    if let Ok(path) = std::env::var("MATRIX_OUT") {
        std::fs::write(path, &table).unwrap();
    }
    rig.shutdown().await;
}

/// A load balancer's 429 with `Retry-After` reaches the controller as the earliest retry (it
/// was dropped before: the controller retried on its own backoff, 500 ms first).
#[tokio::test]
async fn a_retry_after_on_the_submit_reaches_the_controller() {
    let sim = Sim::start(SimOpts::default());
    let signer = AdcsSigner::new();
    let res = resources(&sim);
    let iss = issuer(spec(&sim));
    sim.fault_retry_after("429", "certfnsh.asp", 1, 7);
    let store = Store::default();
    let mut c: SignContext = ctx(&res, Default::default(), &store);
    let e = signer.sign(&request("busy.example.com", &[]), &iss, &mut c).await.unwrap_err();
    assert_eq!(e.reaction, Reaction::Transient, "{e}");
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)), "{e}");
    assert!(e.to_string().contains("HTTP 429"), "{e}");
    // HTTP.sys's 503 carries no Retry-After: the backoff alone decides.
    sim.fault("503", "certfnsh.asp", 1);
    let mut c: SignContext = ctx(&res, Default::default(), &store);
    let e = signer.sign(&request("down.example.com", &[]), &iss, &mut c).await.unwrap_err();
    assert_eq!((e.reaction, e.retry_after), (Reaction::Transient, None), "{e}");
    assert!(e.to_string().contains("HTTP 503") && e.to_string().contains("Service Unavailable"), "{e}");
    assert!(sim.log(0).iter().any(|l| l["fault"] == "429"), "the fault fired");
}
