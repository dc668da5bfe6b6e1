//! Secrets never leak: the example controller binary at TRACE (every target, kube and hyper
//! included) signs through both kinds and fails on a broken Secret; neither the CA key nor the
//! broken Secret's content appears in its log, its metrics, an Event, or any status/annotation.

use std::time::Duration;

use certbridge::IssuerScope;
use certbridge::testing::{self, approve, wait_ready};
use certbridge_example_ca::LocalCaSpec;
use certbridge_testkit::KubeSim;
use certbridge_testkit::leaks::{Needles, TracedController};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::support::{TestCa, tls_secret};

const NS: &str = "team-a";
const BIN: &str = env!("CARGO_BIN_EXE_certbridge-example-ca");
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_trace_logs_events_status_or_metrics() {
    let sim = KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let client = sim.client();
    testing::install_crds::<LocalCaSpec>(&client).await.unwrap();
    let ca = TestCa::new(&["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    // Not a key, but what a tenant might paste by mistake: the error must not quote it.
    let broken = "not-a-key-but-a-secret-4f9c2a7be1d0";
    for ns in [NS, "cert-manager"] {
        testing::create_namespace(&client, ns).await.unwrap();
        let secrets = Api::<Secret>::namespaced(client.clone(), ns);
        secrets.create(&PostParams::default(), &ca.secret(ns, "ca-key-pair")).await.unwrap();
        secrets.create(&PostParams::default(), &tls_secret(ns, "broken", &ca.read("ca.crt"), broken)).await.unwrap();
    }
    let controller =
        TracedController::start(BIN, &sim, &["--cluster-resource-namespace=cert-manager"], &[]).await.unwrap();

    let good = LocalCaSpec { secret_name: "ca-key-pair".into() };
    let bad = LocalCaSpec { secret_name: "broken".into() };
    for scope in [IssuerScope::Namespaced, IssuerScope::Cluster] {
        testing::create_issuer(&client, scope, NS, "ca", &good).await.unwrap();
        testing::create_issuer(&client, scope, NS, "broken", &bad).await.unwrap();
    }
    for scope in [IssuerScope::Namespaced, IssuerScope::Cluster] {
        testing::wait_issuer_ready::<LocalCaSpec>(&client, scope, NS, "ca", WAIT).await.unwrap();
        testing::wait_issuer_not_ready::<LocalCaSpec>(&client, scope, NS, "broken", None, WAIT).await.unwrap();
    }
    for (name, scope) in [("via-issuer", IssuerScope::Namespaced), ("via-cluster-issuer", IssuerScope::Cluster)] {
        let csr = ca.csr(name, &[&format!("{name}.example")]);
        let cr = testing::certificate_request::<LocalCaSpec>(NS, name, &csr, scope, "ca");
        testing::create_certificate_request(&client, &cr).await.unwrap();
        approve(&client, NS, name).await.unwrap();
        wait_ready(&client, NS, name, WAIT).await.unwrap();
    }
    // A request to the broken issuer waits for it (and publishes why).
    let csr = ca.csr("to-broken", &["to-broken.example"]);
    let cr = testing::certificate_request::<LocalCaSpec>(NS, "to-broken", &csr, IssuerScope::Namespaced, "broken");
    testing::create_certificate_request(&client, &cr).await.unwrap();
    approve(&client, NS, "to-broken").await.unwrap();
    testing::wait_condition(&client, NS, "to-broken", "Ready", "False", None, WAIT).await.unwrap();

    let published = controller
        .finish(
            &client,
            &["example.certbridge.io/v1alpha1/localcaissuers", "example.certbridge.io/v1alpha1/localcaclusterissuers"],
        )
        .await
        .unwrap();
    published.search(
        &Needles::new().pem("the CA private key", &ca.read("ca.key")).value("the broken Secret's tls.key", broken),
    );
}
