//! The controller end to end on kube-sim: a VaultIssuer authenticating with a service account (the
//! controller requests its token through the TokenRequest API, OpenBao reviews it through kube-sim's
//! TokenReview), a CertificateRequest approved like `cmctl approve`, issued by OpenBao; a request the
//! role refuses ends Failed with Vault's message.

use std::time::Duration;

use certbridge::IssuerScope;
use certbridge::KeyKind;
use certbridge::runtime::{Options, start};
use certbridge::testing;
use certbridge_vault::VaultSigner;
use certbridge_vault::spec::{KubernetesAuth, ServiceAccountRef, VaultAuth};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::{DynamicObject, ListParams, PostParams};

use crate::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn vault_issuer_signs_an_approved_certificate_request() {
    let sim = certbridge_testkit::KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let client = sim.client();
    testing::install_crds::<VaultSpec>(&client).await.unwrap();
    testing::create_namespace(&client, NS).await.unwrap();
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some("vault-issuer".into()), ..Default::default() },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), NS).create(&PostParams::default(), &sa).await.unwrap();

    let (bao, pki) = openbao().await;
    bao.kubernetes_auth(&sim.url(), "certbridge", NS, "vault-issuer", Some("vault://team-a/vault")).await.unwrap();
    let spec = spec(
        &bao,
        VaultAuth {
            kubernetes: Some(KubernetesAuth {
                role: "certbridge".into(),
                mount_path: None,
                secret_ref: None,
                service_account_ref: Some(ServiceAccountRef { name: "vault-issuer".into(), audiences: vec![] }),
            }),
            ..Default::default()
        },
    );
    testing::create_issuer(&client, IssuerScope::Namespaced, NS, "vault", &spec).await.unwrap();

    let handle = start(VaultSigner::dev(), client.clone(), Options::default()).await.unwrap();
    testing::wait_issuer_ready::<VaultSpec>(&client, IssuerScope::Namespaced, NS, "vault", WAIT).await.unwrap();

    let (csr_pem, _key) = testing::generate_csr(&KeyKind::EcP256, &["app.example.com"]).unwrap();
    let cr = testing::certificate_request::<VaultSpec>(NS, "app", &csr_pem, IssuerScope::Namespaced, "vault");
    testing::create_certificate_request(&client, &cr).await.unwrap();
    testing::approve(&client, NS, "app").await.unwrap();
    let done = testing::wait_ready(&client, NS, "app", WAIT).await.unwrap();
    let status = done.status.unwrap();
    let chain = String::from_utf8(status.certificate.unwrap().0).unwrap();
    let ca = String::from_utf8(status.ca.unwrap().0).unwrap();
    assert_eq!(pem::parse(&ca).unwrap(), pem::parse(&pki.root_pem).unwrap());
    let issued = certbridge::Issued { chain_pem: chain, ca_pem: Some(ca) };
    assert_eq!(pem_blocks(&issued.chain_pem).len(), 2);
    openssl_verify(&pki.root_pem, &issued);

    // The role refuses evil.example.org: Failed, with Vault's own words.
    let (csr_pem, _key) = testing::generate_csr(&KeyKind::EcP256, &["evil.example.org"]).unwrap();
    let cr = testing::certificate_request::<VaultSpec>(NS, "evil", &csr_pem, IssuerScope::Namespaced, "vault");
    testing::create_certificate_request(&client, &cr).await.unwrap();
    testing::approve(&client, NS, "evil").await.unwrap();
    let err = testing::wait_ready(&client, NS, "evil", WAIT).await.unwrap_err().to_string();
    assert!(err.contains("Failed") && err.contains("evil.example.org not allowed by this role"), "{err}");

    // One login served the check and both requests; no JWT or token in events or conditions.
    assert_eq!(bao.token_count().await.unwrap(), 1);
    // The final events are created in the background: wait for them so the search covers them.
    handle.flush_events().await;
    let events: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("events.k8s.io", "v1", "Event")),
    );
    let events = serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items).unwrap();
    let requests: Api<certbridge::api::CertificateRequest> = Api::namespaced(client.clone(), NS);
    let requests = serde_json::to_string(&requests.list(&ListParams::default()).await.unwrap().items).unwrap();
    for text in [&events, &requests] {
        assert!(!text.contains("eyJ"), "a JWT leaked: {text}");
        assert!(!text.contains(bao.root_token()), "{text}");
    }
    handle.shutdown().await;
}

/// Issue 10 item 2: a wrong token in the referenced Secret makes the issuer not ready; replacing
/// it with a good token brings the issuer back without touching the issuer or restarting.
#[tokio::test]
async fn a_fixed_token_secret_brings_the_issuer_back() {
    let sim = certbridge_testkit::KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let client = sim.client();
    testing::install_crds::<VaultSpec>(&client).await.unwrap();
    testing::create_namespace(&client, NS).await.unwrap();
    let (bao, _pki) = openbao().await;
    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    secrets.create(&PostParams::default(), &secret("vault-token", &[("token", "hvs.not-a-token")])).await.unwrap();
    let spec = spec(&bao, VaultAuth { token_secret_ref: Some(key_ref("vault-token", "token")), ..Default::default() });
    testing::create_issuer(&client, IssuerScope::Namespaced, NS, "vault", &spec).await.unwrap();
    let handle = start(VaultSigner::dev(), client.clone(), Options::default()).await.unwrap();
    let not_ready =
        testing::wait_issuer_not_ready::<VaultSpec>(&client, IssuerScope::Namespaced, NS, "vault", None, WAIT)
            .await
            .unwrap();
    assert_ne!(not_ready.reason, "Failed", "{not_ready:?}");
    assert!(!not_ready.message.contains("hvs.not-a-token"), "{not_ready:?}");

    let issuers = testing::issuer_api::<VaultSpec>(&client, IssuerScope::Namespaced, NS);
    let generation = issuers.get("vault").await.unwrap().metadata.generation;
    let token = bao.create_token("1h", true, None).await.unwrap();
    let mut fixed = secrets.get("vault-token").await.unwrap();
    fixed.data = None;
    fixed.string_data = Some([("token".to_owned(), token)].into());
    secrets.replace("vault-token", &PostParams::default(), &fixed).await.unwrap();
    testing::wait_issuer_ready::<VaultSpec>(&client, IssuerScope::Namespaced, NS, "vault", WAIT).await.unwrap();
    assert_eq!(issuers.get("vault").await.unwrap().metadata.generation, generation, "the issuer was not touched");
    handle.shutdown().await;
}
