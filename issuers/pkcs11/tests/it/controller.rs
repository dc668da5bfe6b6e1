//! The real controllers on the embedded API server, signing with a CA key held in SoftHSM: an
//! approved CertificateRequest is issued with the HSM key, and a wrong PIN makes the issuer not
//! ready (the token sees it once: a refused PIN is never sent again) until the PIN Secret is
//! fixed, which brings the issuer back without touching it.

use std::time::Duration;

use certbridge::IssuerScope;
use certbridge::testing::{
    approve, certificate_request, create_certificate_request, create_issuer, create_namespace, install_crds,
    wait_issuer_not_ready, wait_issuer_ready, wait_ready,
};
use certbridge_pkcs11::spec::Pkcs11IssuerSpec;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::fixture::{self, CTLBAD, MAIN, NS, PIN, hsm, openssl_csr, openssl_verify, signer, spec};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_issues_with_the_hsm_key_and_a_fixed_pin_secret_brings_the_issuer_back() {
    let hsm = hsm();
    let sim = certbridge_testkit::KubeSim::start().await.expect("kube-sim");
    sim.install_cert_manager_crds().await.expect("cert-manager CRDs");
    let client = sim.client();
    install_crds::<Pkcs11IssuerSpec>(&client).await.expect("pkcs11 CRDs");
    create_namespace(&client, NS).await.expect("namespace");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let ca_pem = hsm.ca_pem(MAIN, "p256");
    for s in [
        fixture::secret("hsm-pin", "pin", PIN),
        fixture::secret("ca-chain", "ca.crt", &ca_pem),
        fixture::secret("wrong-pin", "pin", "0000"),
        fixture::secret("badpin-chain", "ca.crt", &hsm.ca_pem(CTLBAD, "p256")),
    ] {
        secrets.create(&PostParams::default(), &s).await.expect("secret");
    }
    let handle = certbridge::runtime::start(signer(), client.clone(), Default::default()).await.expect("controllers");

    create_issuer(&client, IssuerScope::Namespaced, NS, "hsm", &spec(MAIN, "p256")).await.expect("issuer");
    wait_issuer_ready::<Pkcs11IssuerSpec>(&client, IssuerScope::Namespaced, NS, "hsm", TIMEOUT).await.expect("ready");
    let csr = openssl_csr("ec:P-256", "/CN=web.team-a.example", "DNS:web.team-a.example,IP:192.0.2.10");
    let cr = certificate_request::<Pkcs11IssuerSpec>(NS, "web", &csr, IssuerScope::Namespaced, "hsm");
    create_certificate_request(&client, &cr).await.expect("request");
    approve(&client, NS, "web").await.expect("approve");
    let status = wait_ready(&client, NS, "web", TIMEOUT).await.expect("issued").status.expect("status");
    let issued = certbridge::Issued {
        chain_pem: String::from_utf8(status.certificate.expect("certificate").0).expect("PEM"),
        ca_pem: None,
    };
    openssl_verify(&ca_pem, &issued).expect("openssl verify accepts the chain");
    let csr_key = certbridge::Csr::from_pem(&csr).expect("csr").public_key_der;
    assert_eq!(issued.leaf_public_key_der().expect("leaf"), csr_key, "the leaf carries the CSR's key");
    let ca_written = pem::parse(status.ca.expect("status.ca").0).expect("CA PEM");
    assert_eq!(ca_written.contents(), pem::parse(&ca_pem).expect("CA").contents(), "status.ca is the HSM CA");

    // A wrong PIN makes the issuer not ready, naming the Secret and key; never Failed forever.
    let mut bad = spec(CTLBAD, "p256");
    bad.pin_secret_ref.name = "wrong-pin".into();
    bad.ca_chain = Some(fixture::chain_in_secret("badpin-chain"));
    create_issuer(&client, IssuerScope::Namespaced, NS, "bad", &bad).await.expect("issuer");
    let message = wait_issuer_not_ready::<Pkcs11IssuerSpec>(
        &client,
        IssuerScope::Namespaced,
        NS,
        "bad",
        Some("Pending"),
        TIMEOUT,
    )
    .await
    .expect("the wrong-PIN issuer is not ready")
    .message;
    assert!(message.contains("Secret \"team-a/wrong-pin\" key \"pin\""), "{message}");
    assert!(!message.contains("0000") && !message.contains(PIN), "no PIN in the condition: {message}");

    // Fix the Secret: the issuer becomes Ready without a change to it and without a restart.
    let issuers = certbridge::testing::issuer_api::<Pkcs11IssuerSpec>(&client, IssuerScope::Namespaced, NS);
    let generation = issuers.get("bad").await.expect("issuer").metadata.generation;
    let mut fixed = secrets.get("wrong-pin").await.expect("secret");
    let wanted = fixture::secret("wrong-pin", "pin", PIN);
    (fixed.data, fixed.string_data) = (wanted.data, wanted.string_data);
    secrets.replace("wrong-pin", &PostParams::default(), &fixed).await.expect("fix the PIN");
    wait_issuer_ready::<Pkcs11IssuerSpec>(&client, IssuerScope::Namespaced, NS, "bad", TIMEOUT)
        .await
        .expect("the fixed issuer is ready");
    assert_eq!(issuers.get("bad").await.expect("issuer").metadata.generation, generation, "issuer untouched");

    handle.shutdown().await;
    sim.shutdown().await;
}
