//! The CA fault matrix for Vault: the real controllers (in process, default options, the strict
//! https-only policy) on kube-sim sign at a real OpenBao through the testkit's fault proxy, which
//! serves HTTPS (its own throwaway CA, given to the issuer as `caBundle`) in front of OpenBao's
//! plain listener, so TLS faults reach the issuer's client.
//!
//! For each fault: switch it on for every request, create one approved request, watch the
//! request's and the issuer's Ready conditions for the fault window, count the controller's sign
//! attempts (its `certbridge_sign_duration_seconds_count`) and the sign calls that reached the
//! proxy, switch the fault off and time how long until the request is Ready. Then assert what
//! must hold whatever the timing:
//! * the request ends Ready with exactly one certificate, for its own key, and its certificate
//!   never changed once set;
//! * OpenBao issued nothing the controller did not ask for (certificates issued ≤ sign calls that
//!   reached it), and exactly one certificate when the fault stops requests before OpenBao;
//! * retries are bounded by the controller's backoff (500 ms doubling), not a storm.
//!
//! `vault_fault_matrix_ci` runs a few rows with a short window (CI); `vault_fault_matrix` runs
//! every fault and prints the table RELIABILITY.md records (`#[ignore]`, a measurement).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use certbridge::IssuerScope;
use certbridge::runtime::{ControllerHandle, Options};
use certbridge::testing::matrix::{
    RowWatch, assert_within_backoff, chain, create_approved, leaf_has_key, sign_attempts,
};
use certbridge::testing::{create_issuer, install_crds, issuer_api, wait_ready};
use certbridge_testkit::KubeSim;
use certbridge_testkit::fault_proxy::{Fault, FaultProxy, ProxyOptions};
use kube::api::{Api, PostParams};
use reqwest::Method;

use crate::*;

/// The role the matrix signs with: like [`ROLE`], but OpenBao stores what it issues, so the
/// test can count certificates from OpenBao's own records.
const MATRIX_ROLE: &str = "matrix";
const RECOVERY_CAP: Duration = Duration::from_secs(180);

/// A row of the table.
struct Row {
    fault: String,
    window: Duration,
    request_states: Vec<String>,
    issuer_states: Vec<String>,
    attempts: u64,
    calls_to_vault: usize,
    recovered: Option<Duration>,
    issued_by_vault: usize,
}

impl Row {
    fn markdown(&self) -> String {
        format!(
            "| {} ({} s) | {} | {} | {} / {} | {} | {} |\n",
            self.fault,
            self.window.as_secs(),
            self.request_states.join(" → "),
            self.issuer_states.join(" → "),
            self.attempts,
            self.calls_to_vault,
            self.recovered.map_or("not recovered".into(), |d| format!("{:.1} s", d.as_secs_f64())),
            self.issued_by_vault,
        )
    }
}

const HEADER: &str = "| fault (window) | request Ready during the fault | issuer Ready during the fault | sign attempts by the controller / sign calls reaching OpenBao, during the fault | Ready after the fault cleared | certificates OpenBao issued for the request |\n|---|---|---|---|---|---|\n";

/// Faults that stop the request before OpenBao sees it: OpenBao must issue exactly one
/// certificate, after the fault.
fn stops_before_vault(fault: &Fault) -> bool {
    matches!(fault, Fault::Refuse | Fault::Blackhole | Fault::TlsAlert | Fault::Status { .. })
}

struct Rig {
    kube: KubeSim,
    bao: OpenBao,
    proxy: FaultProxy,
    handle: ControllerHandle,
    client: kube::Client,
    /// The leaf of a request signed before any fault (the "certificate for another key").
    other_leaf_pem: Arc<Mutex<String>>,
}

async fn rig() -> Rig {
    let mut opts = certbridge_testkit::SimOptions::default();
    opts.namespaces.push(NS.into());
    let kube = KubeSim::start_with(opts).await.unwrap();
    kube.install_cert_manager_crds().await.unwrap();
    let client = kube.client();
    install_crds::<VaultSpec>(&client).await.unwrap();

    let (bao, _pki) = openbao().await;
    bao.api(
        Method::POST,
        &format!("{PKI_MOUNT}/roles/{MATRIX_ROLE}"),
        Some(serde_json::json!({
            "allowed_domains": ["example.com"], "allow_subdomains": true, "max_ttl": "720h",
            "key_type": "any", "no_store": false,
        })),
    )
    .await
    .unwrap();
    let upstream: std::net::SocketAddr = bao.addr().trim_start_matches("http://").parse().unwrap();
    // HTTPS towards the issuer (so TLS faults reach it), plain HTTP to OpenBao's dev listener.
    let proxy =
        FaultProxy::start(ProxyOptions { upstream, http: true, serve_tls: true, upstream_tls: None }).await.unwrap();

    let token = bao.create_token("24h", true, None).await.unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret("vault-token", &[("token", &token)]))
        .await
        .unwrap();
    let spec = VaultSpec {
        server: proxy.url(),
        path: format!("{PKI_MOUNT}/sign/{MATRIX_ROLE}"),
        ca_bundle: Some(b64(proxy.ca_pem().unwrap())),
        auth: VaultAuth { token_secret_ref: Some(key_ref("vault-token", "token")), ..Default::default() },
        ..Default::default()
    };
    create_issuer(&client, IssuerScope::Namespaced, NS, "vault", &spec).await.unwrap();
    // The strict policy (https only): the proxy serves TLS.
    let handle = certbridge::runtime::start(VaultSigner::new(), client.clone(), Options::default()).await.unwrap();
    let rig = Rig { kube, bao, proxy, handle, client, other_leaf_pem: Arc::default() };

    // A baseline request: proves the path works and gives the "certificate for another key".
    let csr = rig.create("baseline").await;
    wait_ready(&rig.client, NS, "baseline", RECOVERY_CAP).await.expect("the baseline request becomes Ready");
    assert!(rig.right_key("baseline", &csr).await);
    let leaf = rig.leaf_der("baseline").await;
    *rig.other_leaf_pem.lock().unwrap() = pem::encode(&pem::Pem::new("CERTIFICATE", leaf));
    rig
}

impl Rig {
    async fn create(&self, name: &str) -> String {
        create_approved::<VaultSpec>(&self.client, NS, name, "vault", "example.com").await
    }

    async fn chain(&self, name: &str) -> Option<String> {
        chain(&self.client, NS, name).await
    }

    async fn leaf_der(&self, name: &str) -> Vec<u8> {
        let chain = self.chain(name).await.expect("a certificate");
        pem::parse_many(&chain).unwrap()[0].contents().to_vec()
    }

    /// Whether the request's leaf carries its CSR's key.
    async fn right_key(&self, name: &str, csr: &str) -> bool {
        leaf_has_key(&self.chain(name).await.unwrap(), csr)
    }

    /// Certificates OpenBao stored for `csr`'s key (its own records, `LIST pki/certs`).
    async fn issued_for(&self, csr: &str) -> usize {
        let key = certbridge::Csr::from_pem(csr).unwrap().public_key_der;
        let list = self.bao.api(Method::GET, &format!("{PKI_MOUNT}/certs?list=true"), None).await.unwrap();
        let mut n = 0;
        for serial in list["data"]["keys"].as_array().into_iter().flatten().filter_map(|s| s.as_str()) {
            let cert = self.bao.api(Method::GET, &format!("{PKI_MOUNT}/cert/{serial}"), None).await.unwrap();
            let Some(pem) = cert["data"]["certificate"].as_str() else { continue };
            let issued = certbridge::Issued { chain_pem: pem.to_owned(), ca_pem: None };
            n += usize::from(issued.leaf_public_key_der().ok().as_ref() == Some(&key));
        }
        n
    }

    /// Runs one row: `fault` on for `window`, then off until the request is Ready.
    async fn row(&self, index: usize, fault: Fault, window: Duration) -> Row {
        let name = format!("m{index:02}-{}", fault.name().replace(['_', '.'], "-"));
        let issuers = issuer_api::<VaultSpec>(&self.client, IssuerScope::Namespaced, NS);
        let watch = RowWatch::new(&self.client, NS, &name, issuers, "vault");
        let seen_before = self.proxy.seen().len();
        let attempts_before = sign_attempts(&self.handle);
        self.proxy.set(fault.clone());
        let csr = self.create(&name).await;
        let mut watched = watch.during(window).await;
        let attempts = sign_attempts(&self.handle) - attempts_before;
        let calls_to_vault = self.proxy.seen()[seen_before..]
            .iter()
            .filter(|s| s.path.contains(&format!("/sign/{MATRIX_ROLE}")))
            .count();
        self.proxy.clear();
        let recovered = watch.until(&mut watched, RECOVERY_CAP, |r| r.status == "True").await.map(|(at, _)| at);
        let issued_by_vault = self.issued_for(&csr).await;
        let row = Row {
            fault: fault.name(),
            window,
            request_states: watched.request_states,
            issuer_states: watched.issuer_states,
            attempts,
            calls_to_vault,
            recovered,
            issued_by_vault,
        };
        eprint!("{}", row.markdown());

        // What must hold whatever the timing.
        assert!(recovered.is_some(), "{name}: not Ready within {RECOVERY_CAP:?} of the fault clearing");
        assert!(
            sign_attempts(&self.handle) > attempts_before,
            "{name}: the sign-attempt count never moved: the metric reading is broken"
        );
        assert!(self.right_key(&name, &csr).await, "{name}: the request's certificate is for another key");
        assert_eq!(
            watched.certificates.len(),
            1,
            "{name}: the request's certificate changed once set: {:?}",
            watched.certificates
        );
        assert_within_backoff(&name, attempts, window);
        if stops_before_vault(&fault) {
            assert_eq!(issued_by_vault, 1, "{name}: OpenBao issued {issued_by_vault} certificates for one request");
        } else {
            // OpenBao's sign is not idempotent and has no search: an answer lost after it signed
            // costs one certificate at OpenBao per lost answer, never more than it was asked.
            let asked = calls_to_vault + 1;
            assert!(
                (1..=asked).contains(&issued_by_vault),
                "{name}: OpenBao issued {issued_by_vault} certificates for {asked} sign calls"
            );
        }
        row
    }

    async fn shutdown(self) {
        self.handle.shutdown().await;
        self.kube.shutdown().await;
    }
}

/// A body rewrite that swaps the signed leaf for `other` (a certificate for another key).
fn other_key(other: Arc<Mutex<String>>) -> Fault {
    Fault::replace_json(&["/sign/"], &["data/certificate"], other)
}

fn all_faults(other: Arc<Mutex<String>>) -> Vec<(Fault, Duration)> {
    let w = Duration::from_secs(15);
    vec![
        (Fault::Refuse, w),
        (Fault::Blackhole, w),
        (Fault::TlsAlert, w),
        (Fault::Reset, w),
        (Fault::Status { code: 500, retry_after: None }, w),
        (Fault::Status { code: 502, retry_after: None }, w),
        (Fault::Status { code: 503, retry_after: None }, w),
        (Fault::Status { code: 504, retry_after: None }, w),
        // Long enough to see the retry rate per minute.
        (Fault::Status { code: 503, retry_after: None }, Duration::from_secs(60)),
        (Fault::Status { code: 429, retry_after: Some(Duration::from_secs(10)) }, w),
        (Fault::SlowDrip { interval: Duration::from_secs(1) }, w),
        (Fault::Truncate, w),
        (Fault::Garbage, w),
        (other_key(other), w),
    ]
}

/// CI: a fault before OpenBao, one after it signed, and the wrong certificate; short windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_fault_matrix_ci() {
    let rig = rig().await;
    let w = Duration::from_secs(4);
    let rows = [
        (Fault::Status { code: 503, retry_after: None }, w),
        (Fault::TlsAlert, w),
        (Fault::Reset, w),
        (other_key(rig.other_leaf_pem.clone()), w),
    ];
    for (i, (fault, window)) in rows.into_iter().enumerate() {
        rig.row(i, fault, window).await;
    }
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement (~10 min): the Vault fault matrix against a real OpenBao; see RELIABILITY.md"]
async fn vault_fault_matrix() {
    let rig = rig().await;
    let mut table = String::from(HEADER);
    for (i, (fault, window)) in all_faults(rig.other_leaf_pem.clone()).into_iter().enumerate() {
        table.push_str(&rig.row(i, fault, window).await.markdown());
    }
    println!("\n{table}");
    if let Ok(path) = std::env::var("MATRIX_OUT") {
        std::fs::write(path, &table).unwrap();
    }
    rig.shutdown().await;
}
