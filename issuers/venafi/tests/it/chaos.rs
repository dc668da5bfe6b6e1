//! The chaos harness (`certbridge_testkit::chaos`) on the Venafi controller binary, against the
//! simulator's pending flow: every request is accepted and then waits for an approval (TPP
//! answers `certificates/request` with 202, retrieve is pending; Cloud requests are
//! `PENDING_APPROVAL`), approved by the harness every 200 ms. Meanwhile SIGKILLs at random points
//! and right after the simulator took a request or issued, watch expiry (410 Gone) and a 10 s
//! API-server outage. Asserts no request lost, duplicated at the CA, or wrong.
//!
//! CI size: `chaos_ci_tpp` (50 requests, ≥ 10 kills). The TPP soak (1,000 requests, ≥ 50 kills)
//! is the ignored `chaos_soak_tpp`, the Cloud measurement the ignored `chaos_soak_cloud` (50
//! requests, 10 kills by default); their commands and last figures are in RELIABILITY.md. All read `CHAOS_SEED`, `CHAOS_REQUESTS`, `CHAOS_KILLS`, `CHAOS_DEADLINE_SECS` and
//! `CHAOS_LOG` (a file for the controllers' output).
//!
//! Cloud is not in CI: its API has no way to find a request by CSR, so a kill between the POST
//! and saving the request id leaves an orphan request that the CA issues as well (README, "A
//! pickup ID is never lost"). `chaos_soak_cloud` measures how often: it asserts nothing lost or
//! wrong and that every certificate comes from its own request at Cloud (a duplicate is an
//! orphaned POST, never a request issued twice), and prints the duplicates.

use std::sync::Arc;
use std::time::Duration;

use certbridge::IssuerScope;
use certbridge::testing::{certificate_request, create_issuer, install_crds};
use certbridge_testkit::KubeSim;
use certbridge_testkit::chaos::{ChaosCa, ChaosOptions, ChaosReport, IssuerRef, knob};
use certbridge_venafi::VenafiIssuerSpec;
use certbridge_venafi::sim::{Issuance, RequestAnswer, VenafiSim};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::common::{Auth, NS, secrets, sim, spec};

struct Ca(VenafiSim);

impl ChaosCa for Ca {
    fn issued(&self) -> Vec<Vec<u8>> {
        self.0.issued_certificates()
    }
    /// Moves when the simulator takes a request (TPP or Cloud) and when it issues.
    fn enroll_events(&self) -> u64 {
        self.0.calls("request") + self.0.calls("cloud-request") + self.0.issued_total()
    }
    fn advance(&self) {
        self.0.approve_all();
    }
}

/// The report, the simulator's body violations, and how many requests the CA received.
async fn chaos(auth: Auth, requests: usize, kills: usize, deadline: Duration) -> (ChaosReport, Vec<String>, u64) {
    let mut opts = certbridge_testkit::SimOptions::default();
    opts.namespaces.push(NS.into());
    let kube = KubeSim::start_with(opts).await.expect("kube-sim starts");
    kube.install_cert_manager_crds().await.expect("cert-manager CRDs");
    let client = kube.client();
    install_crds::<VenafiIssuerSpec>(&client).await.expect("Venafi CRDs");
    let venafi = sim().await;
    // The pending flow: accepted (TPP: 202 + CertificateDN), issued only once approved.
    venafi.set_request_answer(RequestAnswer::Accepted202);
    venafi.set_issuance(Issuance::Approval);
    for s in secrets(&venafi, auth, NS) {
        Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &s).await.expect("Secret");
    }
    let mut issuer_spec = spec(&venafi, auth);
    if auth == Auth::RefreshToken {
        // Every controller process continues from the token the previous one wrote back.
        issuer_spec.tpp.as_mut().expect("TPP").persist_refreshed_token = Some(true);
    }
    create_issuer(&client, IssuerScope::Namespaced, NS, "venafi", &issuer_spec).await.expect("issuer");

    let named = certificate_request::<VenafiIssuerSpec>(NS, "x", "", IssuerScope::Namespaced, "venafi").spec.issuer_ref;
    let issuer =
        IssuerRef { group: named.group.unwrap_or_default(), kind: named.kind.unwrap_or_default(), name: named.name };
    let mut opts = ChaosOptions::sized(NS, issuer, requests, kills, deadline);
    // TPP names the certificate object after the CN: distinct requests need distinct CNs.
    opts.subject_cn = true;
    let controller = certbridge_testkit::chaos::controller_command(env!("CARGO_BIN_EXE_certbridge-venafi"), NS);
    let ca = Arc::new(Ca(venafi));
    let report = certbridge_testkit::chaos::run(&kube, ca.clone(), &controller, &opts).await.expect("chaos run");
    let violations = ca.0.violations();
    let received = ca.0.calls("request") + ca.0.calls("cloud-request");
    eprintln!(
        "chaos (Venafi {auth:?}): {received} requests and {} resets at the simulator, {} logins, {} refreshes",
        ca.0.calls("reset"),
        ca.0.logins() + ca.0.calls("cloud-token"),
        ca.0.refreshes()
    );
    kube.shutdown().await;
    (report, violations, received)
}

fn check(what: &str, report: &ChaosReport, violations: &[String], kills: usize) {
    eprintln!("chaos (Venafi {what}): {report}");
    assert!(report.is_clean(), "{report}");
    assert!(report.kills >= kills, "{report}");
    assert!(violations.is_empty(), "{violations:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_ci_tpp() {
    // A liveness bound, not a speed target (pickups back off to retrieveInterval, 1 s here).
    // CHAOS_TPP_AUTH=refresh-token: refresh-token auth with tpp.persistRefreshedToken.
    let auth = match std::env::var("CHAOS_TPP_AUTH").as_deref() {
        Ok("refresh-token") => Auth::RefreshToken,
        _ => Auth::Password,
    };
    let (report, violations, _) = chaos(auth, 50, 10, Duration::from_secs(240)).await;
    check("TPP", &report, &violations, knob("CHAOS_KILLS", 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 1,000 requests, 50 kills; see RELIABILITY.md"]
async fn chaos_soak_tpp() {
    let auth = match std::env::var("CHAOS_TPP_AUTH").as_deref() {
        Ok("refresh-token") => Auth::RefreshToken,
        _ => Auth::Password,
    };
    let (report, violations, _) = chaos(auth, 1000, 50, Duration::from_secs(1800)).await;
    check("TPP", &report, &violations, knob("CHAOS_KILLS", 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: Cloud cannot find a request by CSR, a kill inside the POST round trip duplicates; see RELIABILITY.md"]
async fn chaos_soak_cloud() {
    let (report, violations, received) = chaos(Auth::ApiKey, 50, 10, Duration::from_secs(1800)).await;
    eprintln!("chaos (Venafi Cloud): {report}");
    assert!(report.lost.is_empty() && report.wrong.is_empty(), "{report}");
    assert_eq!(report.issued as u64, received, "one certificate per request received: duplicates are orphaned POSTs");
    assert!(report.kills >= knob("CHAOS_KILLS", 10), "{report}");
    assert!(violations.is_empty(), "{violations:?}");
}
