//! `Options::namespaced_issuers = false` (`--disable-namespaced-issuers`): only the cluster kind is
//! served; requests naming the namespaced kind are left exactly as they are.

use certbridge::IssuerScope;
use certbridge::api::CertificateRequest;
use certbridge::testing::{
    approve, certificate_request, create_certificate_request, create_issuer, issuer_api, wait_ready,
};
use certbridge_testkit::Verb;
use kube::api::Api;

use crate::support::*;

#[tokio::test]
async fn cluster_issuer_requests_are_issued_and_namespaced_issuer_requests_left_untouched() {
    let opts = certbridge::runtime::Options { namespaced_issuers: false, ..options() };
    let env = Env::start_with(TestSigner::new(Ca::new()), opts).await;
    // A namespaced issuer that would be ready if it were served.
    create_issuer(&env.client, IssuerScope::Namespaced, NS, "ns-ca", &TestSpec::default()).await.unwrap();
    env.ready_issuer(IssuerScope::Cluster, "cl-ca", TestSpec::default()).await;

    // Two requests for the namespaced kind (named, and by cert-manager's default empty kind),
    // approved before the cluster one: by the time that one is issued, these were seen.
    let (pem, _) = csr("ns.example.com");
    let named = certificate_request::<TestSpec>(NS, "via-issuer", &pem, IssuerScope::Namespaced, "ns-ca");
    let mut implicit = certificate_request::<TestSpec>(NS, "via-default-kind", &pem, IssuerScope::Namespaced, "ns-ca");
    implicit.spec.issuer_ref.kind = None;
    for cr in [&named, &implicit] {
        create_certificate_request(&env.client, cr).await.unwrap();
        approve(&env.client, NS, cr.metadata.name.as_deref().unwrap()).await.unwrap();
    }
    let (pem, key) = csr("cl.example.com");
    let cluster = certificate_request::<TestSpec>(NS, "via-cluster-issuer", &pem, IssuerScope::Cluster, "cl-ca");
    create_certificate_request(&env.client, &cluster).await.unwrap();
    approve(&env.client, NS, "via-cluster-issuer").await.unwrap();
    let done = wait_ready(&env.client, NS, "via-cluster-issuer", TIMEOUT).await.unwrap();
    assert_eq!(leaf_key(&done.status.unwrap().certificate.unwrap().0), key, "issued through the cluster issuer");

    let api: Api<CertificateRequest> = Api::namespaced(env.client.clone(), NS);
    for name in ["via-issuer", "via-default-kind"] {
        let cr = api.get(name).await.unwrap();
        let status = cr.status.clone().unwrap_or_default();
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Approved"], "{name}: only the approver wrote its status");
        assert!(status.certificate.is_none() && status.failure_time.is_none(), "{name}: {status:?}");
        let managers: Vec<String> =
            cr.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
        assert!(!managers.iter().any(|m| m.starts_with("test.certbridge.io")), "{name} written by {managers:?}");
    }
    env.handle.as_ref().unwrap().flush_events().await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), NS);
    let about: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.regarding.and_then(|r| r.name))
        .collect();
    assert!(about.iter().all(|n| n == "via-cluster-issuer"), "events about {about:?}");
    assert_eq!(env.signer.sign_calls(), 1, "only the cluster issuer's request was signed");

    // The namespaced kind is neither watched nor reconciled.
    let faults = env.sim.faults();
    for verb in [Verb::List, Verb::Watch, Verb::Patch] {
        assert_eq!(faults.count(verb, "testissuers"), 0, "{verb:?} testissuers");
    }
    let ns_issuer = issuer_api::<TestSpec>(&env.client, IssuerScope::Namespaced, NS);
    let ns_issuer = ns_issuer.get("ns-ca").await.unwrap();
    assert!(ns_issuer.data.get("status").is_none(), "the namespaced issuer got a status: {:?}", ns_issuer.data);
    let metrics = env.handle.as_ref().unwrap().metrics_text();
    assert!(!metrics.contains("kind=\"TestIssuer\""), "{metrics}");
    env.stop().await;
}
