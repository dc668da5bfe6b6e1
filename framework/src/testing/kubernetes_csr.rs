//! Kubernetes CertificateSigningRequests (`certificates.k8s.io/v1`) for tests: build one for a
//! cluster issuer's signer name, approve it the way `kubectl certificate approve` does, and wait
//! for `status.certificate`.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};

use crate::issuer::{IssuerScope, IssuerSpec, KindNames};

/// The signerName of `S`'s cluster issuer `issuer_name`: `<plural>.<group>/<name>`. Namespaced
/// issuers do not serve Kubernetes CSRs (as in issuer-lib), so there is no namespaced form.
pub fn cluster_signer_name<S: IssuerSpec>(issuer_name: &str) -> String {
    format!("{}/{issuer_name}", KindNames::of::<S>(IssuerScope::Cluster).type_identifier())
}

/// A CSR object `name` for `csr_pem` and `signer_name`, asking for a server certificate
/// (`digital signature`, `key encipherment`, `server auth`) for an hour. Change its fields before
/// creating it to ask for something else.
pub fn kubernetes_csr(name: &str, csr_pem: &str, signer_name: &str) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.as_bytes().to_vec()),
            signer_name: signer_name.into(),
            usages: Some(vec!["digital signature".into(), "key encipherment".into(), "server auth".into()]),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        status: None,
    }
}

/// Creates a CSR object.
pub async fn create_kubernetes_csr(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
) -> anyhow::Result<CertificateSigningRequest> {
    Ok(Api::<CertificateSigningRequest>::all(client.clone()).create(&PostParams::default(), csr).await?)
}

/// Approves CSR `name` like `kubectl certificate approve`: read it, append an `Approved`
/// condition, and replace the `approval` subresource.
pub async fn approve_kubernetes_csr(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    decide(client, name, "Approved", "KubectlApprove", "This CSR was approved by kubectl certificate approve.").await
}

/// Denies CSR `name` like `kubectl certificate deny`.
pub async fn deny_kubernetes_csr(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    decide(client, name, "Denied", "KubectlDeny", "This CSR was denied by kubectl certificate deny.").await
}

async fn decide(client: &kube::Client, name: &str, type_: &str, reason: &str, message: &str) -> anyhow::Result<()> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut csr = api.get(name).await?;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    csr.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new).push(
        CertificateSigningRequestCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now),
        },
    );
    api.replace_subresource("approval", name, &PostParams::default(), &csr).await?;
    Ok(())
}

/// Waits until CSR `name` has `status.certificate` and returns it (the PEM chain); fails early
/// when it is Denied or Failed, with that condition's reason and message.
pub async fn wait_kubernetes_csr_certificate(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status = api.get(name).await?.status.unwrap_or_default();
        if let Some(cert) = status.certificate {
            return Ok(String::from_utf8(cert.0)?);
        }
        let conditions = status.conditions.unwrap_or_default();
        let ended = conditions.iter().find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True");
        if let Some(c) = ended {
            anyhow::bail!(
                "CSR {name} is {}: {}: {}",
                c.type_,
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or("")
            );
        }
        if tokio::time::Instant::now() >= deadline {
            let seen: Vec<String> = conditions.iter().map(|c| format!("{}={}", c.type_, c.status)).collect();
            anyhow::bail!("timed out after {timeout:?}; CSR {name} has no certificate, conditions: {seen:?}");
        }
        tokio::time::sleep(super::POLL).await;
    }
}
