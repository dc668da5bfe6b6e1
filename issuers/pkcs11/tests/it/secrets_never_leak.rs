//! Secrets never leak: the `certbridge-pkcs11` controller binary at TRACE (every target, kube and
//! hyper included) with a token policy, signing through a namespaced and a cluster issuer on a
//! SoftHSM token of its own, reporting an issuer with a wrong PIN and refusing a tenant without
//! a grant. No PIN (right, wrong, the tenant's guess) nor the token's SO PIN appears in its log,
//! its metrics, an Event, or a request's or issuer's status and annotations.
//!
//! The controller is a child process with its own `SOFTHSM2_CONF`, so this test makes its own
//! token (long PINs, so a hit means something) instead of using the shared fixture's.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use certbridge::IssuerScope;
use certbridge::testing::{
    approve, certificate_request, create_certificate_request, create_issuer, create_namespace, install_crds,
    wait_issuer_not_ready, wait_issuer_ready, wait_ready,
};
use certbridge_pkcs11::spec::Pkcs11IssuerSpec;
use certbridge_testkit::leaks::{Needles, TracedController};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::fixture::{openssl_csr, spec};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "leakcheck";
const PIN: &str = "pin-9f3c1e77a2";
const SO_PIN: &str = "so-pin-31f0c9d2";
const WRONG_PIN: &str = "wrong-pin-5b8d0c3e";
const TENANT_GUESS: &str = "tenant-guess-11aa22bb";

fn secret(ns: &str, name: &str, key: &str, value: &str) -> Secret {
    certbridge::testing::secret(ns, name, None, &[(key, value.as_bytes())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pin_in_trace_logs_events_status_or_metrics() {
    let dir = tempfile::Builder::new().prefix("pkcs11-leaks-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../softhsm/setup-token.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir.path())
        .args(["--label", TOKEN, "--pin", PIN, "--so-pin", SO_PIN, "--kind", "p256"])
        .env("CERTBRIDGE_PKCS11_TOKEN_BIN", env!("CARGO_BIN_EXE_certbridge-pkcs11-token"))
        .output()
        .unwrap();
    assert!(out.status.success(), "softhsm/setup-token.sh: {}", String::from_utf8_lossy(&out.stderr));
    let ca_pem = std::fs::read_to_string(dir.path().join(format!("{TOKEN}-ca-p256.pem"))).unwrap();
    let policy = dir.path().join("token-policy.yaml");
    std::fs::write(&policy, format!("grants:\n- cluster: true\n  namespaces: [team-a]\n  token: {{label: {TOKEN}}}\n"))
        .unwrap();

    let sim = certbridge_testkit::KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let client = sim.client();
    install_crds::<Pkcs11IssuerSpec>(&client).await.unwrap();
    for ns in ["team-a", "team-b", "cert-manager"] {
        create_namespace(&client, ns).await.unwrap();
        let secrets = Api::<Secret>::namespaced(client.clone(), ns);
        let pin = if ns == "team-b" { TENANT_GUESS } else { PIN };
        for s in [
            secret(ns, "hsm-pin", "pin", pin),
            secret(ns, "wrong-pin", "pin", WRONG_PIN),
            secret(ns, "ca-chain", "ca.crt", &ca_pem),
        ] {
            secrets.create(&PostParams::default(), &s).await.unwrap();
        }
    }
    let good = spec(TOKEN, "p256");
    let mut wrong = good.clone();
    wrong.pin_secret_ref.name = "wrong-pin".into();
    create_issuer(&client, IssuerScope::Namespaced, "team-a", "hsm", &good).await.unwrap();
    create_issuer(&client, IssuerScope::Cluster, "team-a", "hsm", &good).await.unwrap();
    create_issuer(&client, IssuerScope::Namespaced, "team-a", "wrong", &wrong).await.unwrap();
    create_issuer(&client, IssuerScope::Namespaced, "team-b", "hsm", &good).await.unwrap();

    let bin = env!("CARGO_BIN_EXE_certbridge-pkcs11");
    let conf = dir.path().join("softhsm2.conf");
    let policy_arg = format!("--token-policy={}", policy.display());
    let controller = TracedController::start(
        bin,
        &sim,
        &["--cluster-resource-namespace=cert-manager", &policy_arg],
        &[("SOFTHSM2_CONF", conf.to_str().unwrap())],
    )
    .await
    .unwrap();
    for scope in [IssuerScope::Namespaced, IssuerScope::Cluster] {
        wait_issuer_ready::<Pkcs11IssuerSpec>(&client, scope, "team-a", "hsm", WAIT).await.unwrap();
    }
    wait_issuer_not_ready::<Pkcs11IssuerSpec>(&client, IssuerScope::Namespaced, "team-a", "wrong", None, WAIT)
        .await
        .unwrap();
    let refused =
        wait_issuer_not_ready::<Pkcs11IssuerSpec>(&client, IssuerScope::Namespaced, "team-b", "hsm", None, WAIT)
            .await
            .unwrap();
    assert!(refused.message.contains("policy"), "team-b has no grant: {refused:?}");
    for (name, scope) in [("via-issuer", IssuerScope::Namespaced), ("via-cluster-issuer", IssuerScope::Cluster)] {
        let csr = openssl_csr("ec:P-256", &format!("/CN={name}.team-a.example"), &format!("DNS:{name}.team-a.example"));
        let cr = certificate_request::<Pkcs11IssuerSpec>("team-a", name, &csr, scope, "hsm");
        create_certificate_request(&client, &cr).await.unwrap();
        approve(&client, "team-a", name).await.unwrap();
        wait_ready(&client, "team-a", name, WAIT).await.unwrap();
    }

    let published = controller
        .finish(
            &client,
            &["pkcs11.certbridge.io/v1alpha1/pkcs11issuers", "pkcs11.certbridge.io/v1alpha1/pkcs11clusterissuers"],
        )
        .await
        .unwrap();
    published.search(
        &Needles::new()
            .value("the token PIN", PIN)
            .value("the wrong PIN", WRONG_PIN)
            .value("team-b's PIN guess", TENANT_GUESS)
            .value("the SO PIN", SO_PIN),
    );
}
