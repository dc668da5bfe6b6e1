//! Kubernetes CertificateSigningRequests through the real controller.

use std::time::Duration;

use certbridge::IssuerScope;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::support::*;

fn kube_csr(name: &str, signer_name: &str, pem: &str, annotations: &[(&str, &str)]) -> CertificateSigningRequest {
    let mut c = CertificateSigningRequest {
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(pem.as_bytes().to_vec()),
            signer_name: signer_name.into(),
            usages: Some(vec!["digital signature".into(), "key encipherment".into()]),
            expiration_seconds: Some(3333),
            ..Default::default()
        },
        ..Default::default()
    };
    c.metadata.name = Some(name.into());
    c.metadata.annotations = Some(annotations.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect());
    c
}

async fn approve_csr(api: &Api<CertificateSigningRequest>, name: &str) {
    let patch = serde_json::json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "TestApprover", "message": "approved by the test",
    }]}});
    api.patch_approval(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

async fn wait_csr(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    done: impl Fn(&CertificateSigningRequest) -> bool,
) -> CertificateSigningRequest {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let c = api.get(name).await.unwrap();
        if done(&c) {
            return c;
        }
        assert!(tokio::time::Instant::now() < deadline, "CSR {name} not done: {:?}", c.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cluster_issuer_signs_approved_csrs_with_cert_manager_durations() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Cluster, "ca", TestSpec::default()).await;
    let api: Api<CertificateSigningRequest> = Api::all(env.client.clone());
    let signer_name = "testclusterissuers.test.certbridge.io/ca";
    let (pem, key) = csr("csr.example.com");
    api.create(
        &PostParams::default(),
        &kube_csr("c1", signer_name, &pem, &[("experimental.cert-manager.io/request-duration", "896h")]),
    )
    .await
    .unwrap();
    let (pem2, _) = csr("ns.example.com");
    // A namespaced signer name is never served for Kubernetes CSRs.
    api.create(&PostParams::default(), &kube_csr("c2", "testissuers.test.certbridge.io/team.ca", &pem2, &[]))
        .await
        .unwrap();
    approve_csr(&api, "c2").await;
    approve_csr(&api, "c1").await;
    let done = wait_csr(&api, "c1", |c| c.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some()).await;
    let chain = done.status.unwrap().certificate.unwrap().0;
    assert_eq!(leaf_key(&chain), key);
    let leaf = pem::parse(&chain).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(leaf.contents()).unwrap();
    let lifetime = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
    assert_eq!(lifetime, 896 * 3600, "the annotation wins over expirationSeconds");
    assert_eq!(env.signer.sign_calls(), 1);
    let c2 = api.get("c2").await.unwrap();
    assert!(c2.status.unwrap().certificate.is_none(), "namespaced signer names are ignored");
    env.stop().await;
}

#[tokio::test]
async fn permanent_failure_sets_the_failed_condition() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Cluster, "ca", TestSpec::default()).await;
    env.signer.push([Step::Permanent("the CA refused the subject")]);
    let api: Api<CertificateSigningRequest> = Api::all(env.client.clone());
    let (pem, _) = csr("refused.example.com");
    api.create(&PostParams::default(), &kube_csr("c1", "testclusterissuers.test.certbridge.io/ca", &pem, &[]))
        .await
        .unwrap();
    approve_csr(&api, "c1").await;
    let done = wait_csr(&api, "c1", |c| {
        c.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed"))
    })
    .await;
    let conditions = done.status.unwrap().conditions.unwrap();
    let failed = conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(
        failed.message.as_deref(),
        Some("CertificateSigningRequest has failed permanently: the CA refused the subject")
    );
    assert!(conditions.iter().any(|c| c.type_ == "Approved"), "approval kept");
    env.stop().await;
}
