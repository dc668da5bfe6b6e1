//! Two issuers' controllers in one cluster, as operators run them: each serves only requests for
//! its own API group and never writes to the other's.

use std::time::Duration;

use certbridge::api::CertificateRequest;
use certbridge::runtime::{self, Options};
use certbridge::testing::{self, approve, create_certificate_request, wait_condition, wait_ready};
use certbridge::{IssuerScope, KeyKind};
use certbridge_example_ca::{LocalCaSigner, LocalCaSpec};
use certbridge_testkit::KubeSim;
use certbridge_vault::{VaultSigner, VaultSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

const NS: &str = "team-a";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The field managers that wrote to a request.
async fn managers(client: &kube::Client, name: &str) -> Vec<String> {
    let cr = Api::<CertificateRequest>::namespaced(client.clone(), NS).get(name).await.unwrap();
    cr.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_adapters_controllers_serve_only_their_own_requests() {
    let body = async {
        let sim = KubeSim::start().await.unwrap();
        sim.install_cert_manager_crds().await.unwrap();
        let client = sim.client();
        testing::install_crds::<LocalCaSpec>(&client).await.unwrap();
        testing::install_crds::<VaultSpec>(&client).await.unwrap();
        testing::create_namespace(&client, NS).await.unwrap();

        // A CA for LocalCA: this test is about routing, not certificates.
        let ca = testing::TestCa::new(&KeyKind::EcP256).unwrap();
        Api::<Secret>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &ca.tls_secret(NS, "ca-key-pair"))
            .await
            .unwrap();

        let local = runtime::start(LocalCaSigner::default(), client.clone(), Options::default()).await.unwrap();
        let vault = runtime::start(VaultSigner::dev(), client.clone(), Options::default()).await.unwrap();

        let spec = LocalCaSpec { secret_name: "ca-key-pair".into() };
        testing::create_issuer(&client, IssuerScope::Namespaced, NS, "ca", &spec).await.unwrap();
        testing::wait_issuer_ready::<LocalCaSpec>(&client, IssuerScope::Namespaced, NS, "ca", TIMEOUT).await.unwrap();

        let (csr, _) = testing::generate_csr(&KeyKind::EcP256, &["web.example"]).unwrap();
        let for_local = testing::certificate_request::<LocalCaSpec>(NS, "local", &csr, IssuerScope::Namespaced, "ca");
        let for_vault = testing::certificate_request::<VaultSpec>(NS, "vault", &csr, IssuerScope::Namespaced, "absent");
        for cr in [&for_local, &for_vault] {
            create_certificate_request(&client, cr).await.unwrap();
            approve(&client, NS, cr.metadata.name.as_deref().unwrap()).await.unwrap();
        }
        wait_ready(&client, NS, "local", TIMEOUT).await.unwrap();
        let pending = wait_condition(&client, NS, "vault", "Ready", "False", Some("Pending"), TIMEOUT).await.unwrap();
        let message = pending.condition("Ready").unwrap().message.clone().unwrap_or_default();
        assert!(message.contains("absent"), "the Vault controller names its missing issuer: {message}");

        // Stop both, then look at who wrote to which request.
        local.shutdown().await;
        vault.shutdown().await;
        let local_writers = managers(&client, "local").await;
        let vault_writers = managers(&client, "vault").await;
        assert!(local_writers.iter().any(|m| m.starts_with("example.certbridge.io/")), "{local_writers:?}");
        assert!(!local_writers.iter().any(|m| m.starts_with("vault.certbridge.io/")), "{local_writers:?}");
        assert!(vault_writers.iter().any(|m| m.starts_with("vault.certbridge.io/")), "{vault_writers:?}");
        assert!(!vault_writers.iter().any(|m| m.starts_with("example.certbridge.io/")), "{vault_writers:?}");
        sim.shutdown().await;
    };
    // A hang fails the test instead of the CI job; not a speed assertion.
    tokio::time::timeout(Duration::from_secs(120), body).await.expect("the test hung for 2 minutes");
}
