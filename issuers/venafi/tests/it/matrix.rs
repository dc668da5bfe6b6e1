//! The CA fault matrix for Venafi TPP: the real controllers (in process, default options) on
//! kube-sim sign at the TPP simulator through the testkit's fault proxy (HTTPS on both sides: its
//! own throwaway CA, given to the issuer as the CA Secret, in front of the simulator's TLS).
//!
//! For each fault: switch it on for every request, create one approved request, watch the
//! request's and the issuer's Ready conditions for the fault window, count the controller's sign
//! attempts (its `certbridge_sign_duration_seconds_count`) and the TPP calls that reached the
//! proxy, switch the fault off and time how long until the request is Ready. Then assert what
//! must hold whatever the timing:
//! * the request ends Ready with exactly one certificate, for its own key, never changed once set;
//! * TPP saw exactly one certificate request and issued exactly one certificate for the CSR
//!   (the adapter's request marker makes a retry look before asking again);
//! * retries are bounded by the controller's backoff (500 ms doubling), not a storm.
//!
//! The "certificate for another key" row is different by design: the adapter reads a wrong-key
//! certificate from TPP as the object having been replaced by another request (TPP names objects
//! after the CN) and fails the request Permanent with that explanation; the row asserts the
//! request is Failed, never stored the wrong certificate, and TPP issued one certificate.
//!
//! Shared code with the Vault matrix (`issuers/vault/tests/it/matrix.rs`) is copied, not moved to
//! the testkit: the row runner depends on each CA's own counters (minimal copy, see the report).
//!
//! `venafi_fault_matrix_ci` runs a few rows with a short window (CI); `venafi_fault_matrix` runs
//! every fault and prints the table RELIABILITY.md records (`#[ignore]`, a measurement).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use certbridge::IssuerScope;
use certbridge::api::CertificateRequest;
use certbridge::runtime::{ControllerHandle, Options};
use certbridge::testing::matrix::{
    RowWatch, assert_within_backoff, chain, create_approved, leaf_has_key, sign_attempts,
};
use certbridge::testing::{create_issuer, install_crds, issuer_api, wait_ready};
use certbridge_testkit::KubeSim;
use certbridge_testkit::fault_proxy::{Fault, FaultProxy, ProxyOptions, UpstreamTls};
use certbridge_venafi::sim::VenafiSim;
use certbridge_venafi::{VenafiIssuerSpec, VenafiSigner};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::common::{Auth, NS, secret_in, secrets, sim, spec};

const RECOVERY_CAP: Duration = Duration::from_secs(90);

/// A row of the table.
struct Row {
    fault: String,
    window: Duration,
    request_states: Vec<String>,
    issuer_states: Vec<String>,
    attempts: u64,
    calls_to_tpp: usize,
    outcome: String,
    requested: u64,
    issued: u64,
}

impl Row {
    fn markdown(&self) -> String {
        format!(
            "| {} ({} s) | {} | {} | {} / {} | {} | {} / {} |\n",
            self.fault,
            self.window.as_secs(),
            self.request_states.join(" → "),
            self.issuer_states.join(" → "),
            self.attempts,
            self.calls_to_tpp,
            self.outcome,
            self.requested,
            self.issued,
        )
    }
}

const HEADER: &str = "| fault (window) | request Ready during the fault | issuer Ready during the fault | sign attempts by the controller / certificate calls reaching the proxy, during the fault | after the fault cleared | TPP certificate requests / certificates issued for the CSR |\n|---|---|---|---|---|---|\n";

struct Rig {
    kube: KubeSim,
    venafi: VenafiSim,
    proxy: FaultProxy,
    handle: ControllerHandle,
    client: kube::Client,
    /// The base64 `CertificateData` of a request signed before any fault (another key).
    other: Arc<Mutex<String>>,
}

async fn rig() -> Rig {
    let mut opts = certbridge_testkit::SimOptions::default();
    opts.namespaces.push(NS.into());
    let kube = KubeSim::start_with(opts).await.unwrap();
    kube.install_cert_manager_crds().await.unwrap();
    let client = kube.client();
    install_crds::<VenafiIssuerSpec>(&client).await.unwrap();
    let venafi = sim().await;
    let upstream = UpstreamTls { roots_pem: venafi.root_pem(), server_name: "127.0.0.1".into(), identity: None };
    let addr: std::net::SocketAddr =
        venafi.tpp_url().trim_start_matches("https://").trim_end_matches("/vedsdk").parse().unwrap();
    let proxy = FaultProxy::start(ProxyOptions::https(addr, upstream)).await.unwrap();
    let secrets_api = Api::<Secret>::namespaced(client.clone(), NS);
    for s in secrets(&venafi, Auth::Password, NS) {
        // The issuer trusts the proxy's CA, not the simulator's.
        let s = if s.metadata.name.as_deref() == Some("venafi-ca") {
            secret_in(NS, "venafi-ca", &[("ca.crt", proxy.ca_pem().unwrap())])
        } else {
            s
        };
        secrets_api.create(&PostParams::default(), &s).await.unwrap();
    }
    let mut issuer_spec = spec(&venafi, Auth::Password);
    issuer_spec.tpp.as_mut().unwrap().url = format!("https://{}/vedsdk", proxy.addr());
    create_issuer(&client, IssuerScope::Namespaced, NS, "venafi", &issuer_spec).await.unwrap();
    let handle = certbridge::runtime::start(VenafiSigner::new(), client.clone(), Options::default()).await.unwrap();
    let rig = Rig { kube, venafi, proxy, handle, client, other: Arc::default() };

    // A baseline request: proves the path works and gives the "certificate for another key".
    let csr = rig.create("baseline").await;
    wait_ready(&rig.client, NS, "baseline", RECOVERY_CAP).await.expect("the baseline request becomes Ready");
    assert!(rig.right_key("baseline", &csr).await);
    let chain = rig.chain("baseline").await.unwrap();
    *rig.other.lock().unwrap() = base64::engine::general_purpose::STANDARD.encode(chain.replace('\n', "\r\n"));
    rig
}

impl Rig {
    fn requests(&self) -> Api<CertificateRequest> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create(&self, name: &str) -> String {
        create_approved::<VenafiIssuerSpec>(&self.client, NS, name, "venafi", "team-a.example").await
    }

    async fn chain(&self, name: &str) -> Option<String> {
        chain(&self.client, NS, name).await
    }

    /// Whether the request's leaf carries its CSR's key.
    async fn right_key(&self, name: &str, csr: &str) -> bool {
        leaf_has_key(&self.chain(name).await.unwrap(), csr)
    }

    /// Runs one row: `fault` on for `window`, then off until the request is settled.
    /// `wrong_key`: the fault hands back another key's certificate (expected: Failed).
    async fn row(&self, index: usize, fault: Fault, window: Duration, wrong_key: bool) -> Row {
        let label = if wrong_key { "other-key-200".to_owned() } else { fault.name() };
        let name = format!("m{index:02}-{}", label.replace(['_', '.'], "-"));
        let issuers = issuer_api::<VenafiIssuerSpec>(&self.client, IssuerScope::Namespaced, NS);
        let watch = RowWatch::new(&self.client, NS, &name, issuers, "venafi");
        let seen_before = self.proxy.seen().len();
        let attempts_before = sign_attempts(&self.handle);
        self.proxy.set(fault.clone());
        let csr = self.create(&name).await;
        let mut watched = watch.during(window).await;
        let attempts = sign_attempts(&self.handle) - attempts_before;
        let calls_to_tpp =
            self.proxy.seen()[seen_before..].iter().filter(|s| s.path.contains("/vedsdk/certificates/")).count();
        self.proxy.clear();
        let settled = watch
            .until(&mut watched, RECOVERY_CAP, |r| r.status == "True" || (wrong_key && r.reason == "Failed"))
            .await
            .map(|(at, r)| (at, r.reason));
        let (requested, issued) = (self.venafi.requests_for(&csr), self.venafi.issued_for(&csr));
        let outcome = match &settled {
            Some((at, reason)) if reason == "Failed" => format!("Failed (another key) at {:.1} s", at.as_secs_f64()),
            Some((at, _)) => format!("Ready in {:.1} s", at.as_secs_f64()),
            None => format!("not settled within {} s", RECOVERY_CAP.as_secs()),
        };
        let row = Row {
            fault: label,
            window,
            request_states: watched.request_states,
            issuer_states: watched.issuer_states,
            attempts,
            calls_to_tpp,
            outcome,
            requested,
            issued,
        };
        eprint!("{}", row.markdown());

        // What must hold whatever the timing.
        assert!(settled.is_some(), "{name}: not settled within {RECOVERY_CAP:?} of the fault clearing");
        if wrong_key {
            assert!(
                watched.certificates.is_empty(),
                "{name}: stored a certificate for another key: {:?}",
                watched.certificates
            );
            let cr = self.requests().get(&name).await.unwrap();
            let msg = cr.condition("Ready").and_then(|c| c.message.clone()).unwrap_or_default();
            assert!(msg.contains("another key"), "{name}: Failed without saying why: {msg}");
        } else {
            assert!(self.right_key(&name, &csr).await, "{name}: the request's certificate is for another key");
            assert_eq!(
                watched.certificates.len(),
                1,
                "{name}: the request's certificate changed once set: {:?}",
                watched.certificates
            );
        }
        assert_within_backoff(&name, attempts, window);
        assert_eq!(requested, 1, "{name}: TPP got {requested} certificate requests for one CertificateRequest");
        assert_eq!(issued, 1, "{name}: TPP issued {issued} certificates for one CertificateRequest");
        assert!(self.venafi.violations().is_empty(), "{:?}", self.venafi.violations());
        row
    }

    async fn shutdown(self) {
        self.handle.shutdown().await;
        self.kube.shutdown().await;
    }
}

/// A body rewrite that swaps the retrieved certificate for `other` (a certificate for another key).
fn other_key(other: Arc<Mutex<String>>) -> Fault {
    Fault::replace_json(&["/certificates/retrieve"], &["CertificateData"], other)
}

/// `(fault, window, wrong_key)` for every row.
fn all_faults(other: Arc<Mutex<String>>) -> Vec<(Fault, Duration, bool)> {
    let w = Duration::from_secs(15);
    vec![
        (Fault::Refuse, w, false),
        (Fault::Blackhole, w, false),
        (Fault::TlsAlert, w, false),
        (Fault::Reset, w, false),
        (Fault::Status { code: 500, retry_after: None }, w, false),
        (Fault::Status { code: 502, retry_after: None }, w, false),
        (Fault::Status { code: 503, retry_after: None }, w, false),
        (Fault::Status { code: 504, retry_after: None }, w, false),
        // Long enough to see the retry rate per minute.
        (Fault::Status { code: 503, retry_after: None }, Duration::from_secs(60), false),
        (Fault::Status { code: 429, retry_after: Some(Duration::from_secs(10)) }, w, false),
        (Fault::SlowDrip { interval: Duration::from_secs(1) }, w, false),
        (Fault::Truncate, w, false),
        (Fault::Garbage, w, false),
        (other_key(other), w, true),
    ]
}

/// CI: a fault before TPP, one after TPP took the request, and the wrong certificate; short windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venafi_fault_matrix_ci() {
    let rig = rig().await;
    let w = Duration::from_secs(4);
    let rows = [
        (Fault::Status { code: 503, retry_after: None }, w, false),
        (Fault::TlsAlert, w, false),
        (Fault::Reset, w, false),
        (other_key(rig.other.clone()), w, true),
    ];
    for (i, (fault, window, wrong)) in rows.into_iter().enumerate() {
        rig.row(i, fault, window, wrong).await;
    }
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement (~6 min): the Venafi TPP fault matrix; see RELIABILITY.md"]
async fn venafi_fault_matrix() {
    let rig = rig().await;
    let mut table = String::from(HEADER);
    for (i, (fault, window, wrong)) in all_faults(rig.other.clone()).into_iter().enumerate() {
        table.push_str(&rig.row(i, fault, window, wrong).await.markdown());
    }
    println!("\n{table}");
    if let Ok(path) = std::env::var("MATRIX_OUT") {
        std::fs::write(path, &table).unwrap();
    }
    rig.shutdown().await;
}
