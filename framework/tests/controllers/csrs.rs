//! Kubernetes CertificateSigningRequests through the real controller.

use certbridge::IssuerScope;
use certbridge::testing::{
    approve_kubernetes_csr, cluster_signer_name, create_kubernetes_csr, kubernetes_csr, wait_kubernetes_csr_certificate,
};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;

use crate::support::*;

#[tokio::test]
async fn cluster_issuer_signs_approved_csrs_with_cert_manager_durations() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Cluster, "ca", TestSpec::default()).await;
    let client = &env.client;
    let (pem, key) = csr("csr.example.com");
    let mut c1 = kubernetes_csr("c1", &pem, &cluster_signer_name::<TestSpec>("ca"));
    c1.metadata.annotations =
        Some([("experimental.cert-manager.io/request-duration".into(), "896h".into())].into_iter().collect());
    create_kubernetes_csr(client, &c1).await.unwrap();
    let (pem2, _) = csr("ns.example.com");
    // A namespaced signer name is never served for Kubernetes CSRs.
    create_kubernetes_csr(client, &kubernetes_csr("c2", &pem2, "testissuers.test.certbridge.io/team.ca"))
        .await
        .unwrap();
    approve_kubernetes_csr(client, "c2").await.unwrap();
    approve_kubernetes_csr(client, "c1").await.unwrap();
    let chain = wait_kubernetes_csr_certificate(client, "c1", TIMEOUT).await.unwrap();
    assert_eq!(leaf_key(chain.as_bytes()), key);
    let leaf = pem::parse(&chain).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(leaf.contents()).unwrap();
    let lifetime = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
    assert_eq!(lifetime, 896 * 3600, "the annotation wins over expirationSeconds");
    assert_eq!(env.signer.sign_calls(), 1);
    let c2 = Api::<CertificateSigningRequest>::all(client.clone()).get("c2").await.unwrap();
    assert!(c2.status.unwrap().certificate.is_none(), "namespaced signer names are ignored");
    env.stop().await;
}

#[tokio::test]
async fn permanent_failure_sets_the_failed_condition() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Cluster, "ca", TestSpec::default()).await;
    env.signer.push([Step::Permanent("the CA refused the subject")]);
    let client = &env.client;
    let (pem, _) = csr("refused.example.com");
    create_kubernetes_csr(client, &kubernetes_csr("c1", &pem, &cluster_signer_name::<TestSpec>("ca"))).await.unwrap();
    approve_kubernetes_csr(client, "c1").await.unwrap();
    let err = wait_kubernetes_csr_certificate(client, "c1", TIMEOUT).await.unwrap_err().to_string();
    assert!(err.contains("c1 is Failed"), "{err}");
    let done = Api::<CertificateSigningRequest>::all(client.clone()).get("c1").await.unwrap();
    let conditions = done.status.unwrap().conditions.unwrap();
    let failed = conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(
        failed.message.as_deref(),
        Some("CertificateSigningRequest has failed permanently: the CA refused the subject")
    );
    assert!(conditions.iter().any(|c| c.type_ == "Approved"), "approval kept");
    env.stop().await;
}
