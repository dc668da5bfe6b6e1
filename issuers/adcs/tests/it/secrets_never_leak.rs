//! Secrets never leak: the `certbridge-adcs` controller binary at TRACE (every target, kube,
//! hyper and reqwest included) signs at three certsrv simulators — NTLM with channel binding (EPA
//! required), Basic, client certificate — and reports an NTLM issuer with a wrong password. No
//! secret value used — the passwords, the Basic `Authorization` value, the client key — appears
//! in its log, its metrics, an Event, or a request's or issuer's status and annotations.

use std::time::Duration;

use base64::Engine as _;
use certbridge::testing::{
    approve, certificate_request, create_certificate_request, create_issuer, create_namespace, generate_csr,
    install_crds, wait_issuer_not_ready, wait_issuer_ready, wait_ready,
};
use certbridge::{IssuerScope, KeyKind};
use certbridge_adcs::AdcsIssuerSpec;
use certbridge_testkit::KubeSim;
use certbridge_testkit::leaks::{Needles, TracedController};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(60);
const WRONG_PASSWORD: &str = "wrong-adcs-password-9d41";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_trace_logs_events_status_or_metrics() {
    let kube = KubeSim::start().await.unwrap();
    kube.install_cert_manager_crds().await.unwrap();
    let client = kube.client();
    install_crds::<AdcsIssuerSpec>(&client).await.unwrap();

    // One simulator per auth method, each with its issuer in a namespace of its own.
    let sims = [
        ("team-ntlm", Sim::start(SimOpts { mode: Mode::Ntlm, epa: "required", latency_ms: 0 })),
        ("team-basic", Sim::start(SimOpts { mode: Mode::Basic, ..Default::default() })),
        ("team-cert", Sim::start(SimOpts { mode: Mode::Cert, ..Default::default() })),
    ];
    for (ns, sim) in &sims {
        create_namespace(&client, ns).await.unwrap();
        let (secrets, cms) = objects(sim, ns, PASSWORD);
        for s in secrets {
            Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &s).await.unwrap();
        }
        for c in cms {
            Api::<ConfigMap>::namespaced(client.clone(), ns).create(&PostParams::default(), &c).await.unwrap();
        }
        create_issuer(&client, IssuerScope::Namespaced, ns, "adcs", &spec(sim)).await.unwrap();
    }
    let (ntlm_ns, ntlm) = &sims[0];
    let (mut wrong, _) = objects(ntlm, ntlm_ns, WRONG_PASSWORD);
    wrong[0].metadata.name = Some("wrong-creds".into());
    Api::<Secret>::namespaced(client.clone(), ntlm_ns).create(&PostParams::default(), &wrong[0]).await.unwrap();
    let mut wrong_spec = spec(ntlm);
    wrong_spec.auth.ntlm.as_mut().unwrap().secret_name = "wrong-creds".into();
    create_issuer(&client, IssuerScope::Namespaced, ntlm_ns, "adcs-wrong", &wrong_spec).await.unwrap();

    let bin = env!("CARGO_BIN_EXE_certbridge-adcs");
    let controller =
        TracedController::start(bin, &kube, &["--cluster-resource-namespace=cert-manager"], &[]).await.unwrap();
    wait_issuer_not_ready::<AdcsIssuerSpec>(&client, IssuerScope::Namespaced, ntlm_ns, "adcs-wrong", None, WAIT)
        .await
        .unwrap();
    for (ns, _) in &sims {
        wait_issuer_ready::<AdcsIssuerSpec>(&client, IssuerScope::Namespaced, ns, "adcs", WAIT).await.unwrap();
        let (csr, _key) = generate_csr(&KeyKind::EcP256, &[&format!("web.{ns}.example")]).unwrap();
        let cr = certificate_request::<AdcsIssuerSpec>(ns, "web", &csr, IssuerScope::Namespaced, "adcs");
        create_certificate_request(&client, &cr).await.unwrap();
        approve(&client, ns, "web").await.unwrap();
        wait_ready(&client, ns, "web", WAIT).await.unwrap();
    }

    let published = controller.finish(&client, &["adcs.certbridge.io/v1alpha1/adcsissuers"]).await.unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    published.search(
        &Needles::new()
            .value("the AD CS password", PASSWORD)
            .value("the wrong AD CS password", WRONG_PASSWORD)
            .value("the Basic Authorization value", &basic)
            .pem("the client certificate's key", &sims[2].1.client_key_pem),
    );
}
