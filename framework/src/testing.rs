//! Helpers for adapter end-to-end tests (cargo feature `testing`): install an adapter's CRDs,
//! create namespaces, issuers and CertificateRequests, approve or deny them the way cmctl does,
//! wait for conditions, do the same for Kubernetes CSRs ([`kubernetes_csr`] and friends), generate
//! keys and CSRs, and run a throwaway CA hierarchy ([`TestCa`]) or a CA simulator's named one
//! ([`SimPki`]); [`matrix`] holds what every CA fault matrix watches. Pair with
//! `certbridge_testkit::KubeSim` and [`crate::runtime::start`].

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DynamicObject, PostParams};

use crate::api::{CertificateRequest, CertificateRequestCondition, CertificateRequestSpec, IssuerRef};
use crate::issuer::{IssuerScope, IssuerSpec, KindNames};
use crate::pki::KeyKind;

mod ca;
mod kubernetes_csr;
pub mod matrix;
mod sim_pki;

pub use ca::{TestCa, generate_key};
pub use kubernetes_csr::{
    approve_kubernetes_csr, cluster_signer_name, create_kubernetes_csr, deny_kubernetes_csr, kubernetes_csr,
    wait_kubernetes_csr_certificate,
};
pub use sim_pki::{SimCa, SimPki, SimSignError, foreign_client_cert};

/// How often the wait helpers look.
const POLL: Duration = Duration::from_millis(50);

/// Installs `S`'s two CRDs.
pub async fn install_crds<S: IssuerSpec>(client: &kube::Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for scope in [IssuerScope::Namespaced, IssuerScope::Cluster] {
        api.create(&PostParams::default(), &crate::crd::crd::<S>(scope)).await?;
    }
    Ok(())
}

/// Creates namespace `name`; one that already exists is fine (kube-sim, like a cluster with
/// cert-manager, may have it already).
pub async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns = Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating namespace {name}"))),
    }
}

/// The API of `S`'s kind in `scope` (`namespace` is used for the namespaced kind only).
pub fn issuer_api<S: IssuerSpec>(client: &kube::Client, scope: IssuerScope, namespace: &str) -> Api<DynamicObject> {
    let kind = crate::controllers::shared::Kind::of::<S>(scope);
    match scope {
        IssuerScope::Namespaced => Api::namespaced_with(client.clone(), namespace, &kind.resource),
        IssuerScope::Cluster => Api::all_with(client.clone(), &kind.resource),
    }
}

/// An issuer object of `S`'s kind in `scope` with `spec`.
pub fn issuer_object<S: IssuerSpec>(
    scope: IssuerScope,
    namespace: Option<&str>,
    name: &str,
    spec: &S,
) -> DynamicObject {
    let kind = crate::controllers::shared::Kind::of::<S>(scope);
    let mut obj = DynamicObject::new(name, &kind.resource);
    if scope == IssuerScope::Namespaced {
        obj.metadata.namespace = namespace.map(str::to_owned);
    }
    obj.data = serde_json::json!({ "spec": spec });
    obj
}

/// Creates an issuer and returns it.
pub async fn create_issuer<S: IssuerSpec>(
    client: &kube::Client,
    scope: IssuerScope,
    namespace: &str,
    name: &str,
    spec: &S,
) -> anyhow::Result<DynamicObject> {
    let obj = issuer_object(scope, Some(namespace), name, spec);
    Ok(issuer_api::<S>(client, scope, namespace).create(&PostParams::default(), &obj).await?)
}

/// Waits until the issuer is Ready=True at its current generation; the error carries its last
/// Ready condition.
pub async fn wait_issuer_ready<S: IssuerSpec>(
    client: &kube::Client,
    scope: IssuerScope,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<DynamicObject> {
    let api = issuer_api::<S>(client, scope, namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let obj = api.get(name).await?;
        let ready = crate::controllers::shared::issuer_ready(&obj);
        if let Some(c) = &ready
            && c.status == "True"
            && c.observed_generation >= obj.metadata.generation.unwrap_or(0)
        {
            return Ok(obj);
        }
        if tokio::time::Instant::now() >= deadline {
            let last = ready.map(|c| format!("{}/{}: {}", c.status, c.reason, c.message)).unwrap_or("<none>".into());
            anyhow::bail!("timed out after {timeout:?}; issuer {name} Ready condition: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// An issuer's Ready condition, as [`wait_issuer_not_ready`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerReady {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// `Checked`, `Pending` (not ready for now, rechecked) or `Failed` (permanent until the spec
    /// changes), as the framework writes them.
    pub reason: String,
    /// What the check said.
    pub message: String,
    /// The generation the condition was written for.
    pub observed_generation: i64,
}

/// Waits until the issuer is Ready=False at its current generation (with `reason`, if given) and
/// returns that condition; the error carries its last Ready condition.
pub async fn wait_issuer_not_ready<S: IssuerSpec>(
    client: &kube::Client,
    scope: IssuerScope,
    namespace: &str,
    name: &str,
    reason: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<IssuerReady> {
    let api = issuer_api::<S>(client, scope, namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let obj = api.get(name).await?;
        let ready = crate::controllers::shared::issuer_ready(&obj).map(|c| IssuerReady {
            status: c.status,
            reason: c.reason,
            message: c.message,
            observed_generation: c.observed_generation,
        });
        let generation = obj.metadata.generation.unwrap_or(0);
        match ready {
            Some(c)
                if c.status == "False"
                    && reason.is_none_or(|r| c.reason == r)
                    && c.observed_generation >= generation =>
            {
                return Ok(c);
            }
            last if tokio::time::Instant::now() >= deadline => {
                let last = last.map(|c| format!("{}/{}: {}", c.status, c.reason, c.message)).unwrap_or("<none>".into());
                anyhow::bail!("timed out after {timeout:?}; issuer {name} Ready condition: {last}");
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// A CertificateRequest for `csr_pem` naming issuer `issuer_kind`/`issuer_name` in `S`'s group.
pub fn certificate_request<S: IssuerSpec>(
    namespace: &str,
    name: &str,
    csr_pem: &str,
    scope: IssuerScope,
    issuer_name: &str,
) -> CertificateRequest {
    let mut cr = CertificateRequest::new(
        name,
        CertificateRequestSpec {
            issuer_ref: IssuerRef {
                name: issuer_name.into(),
                kind: Some(KindNames::of::<S>(scope).kind),
                group: Some(S::GROUP.into()),
            },
            request: ByteString(csr_pem.as_bytes().to_vec()),
            ..Default::default()
        },
    );
    cr.metadata.namespace = Some(namespace.into());
    cr
}

/// Creates a CertificateRequest.
pub async fn create_certificate_request(
    client: &kube::Client,
    cr: &CertificateRequest,
) -> anyhow::Result<CertificateRequest> {
    let api: Api<CertificateRequest> =
        Api::namespaced(client.clone(), cr.metadata.namespace.as_deref().unwrap_or("default"));
    Ok(api.create(&PostParams::default(), cr).await?)
}

async fn add_condition(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    type_: &str,
    reason: &str,
    message: &str,
) -> anyhow::Result<()> {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), namespace);
    // As cmctl does: read, append the condition, update the status subresource.
    let mut cr = api.get(name).await?;
    let status = cr.status.get_or_insert_with(Default::default);
    status.conditions.push(CertificateRequestCondition {
        type_: type_.into(),
        status: "True".into(),
        last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        reason: Some(reason.into()),
        message: Some(message.into()),
        observed_generation: None,
    });
    api.replace_status(name, &PostParams { field_manager: Some("cmctl".into()), ..Default::default() }, &cr).await?;
    Ok(())
}

/// Approves a CertificateRequest like `cmctl approve`.
pub async fn approve(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    add_condition(client, namespace, name, "Approved", "KubectlCertManager", "manually approved by cmctl").await
}

/// Denies a CertificateRequest like `cmctl deny`.
pub async fn deny(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    add_condition(client, namespace, name, "Denied", "KubectlCertManager", "manually denied by cmctl").await
}

/// Waits until the request's condition `type_` has `status` (and `reason`, if given).
pub async fn wait_condition(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<CertificateRequest> {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let cr = api.get(name).await?;
        let cond = cr.condition(type_);
        if let Some(c) = cond
            && c.status == status
            && reason.is_none_or(|r| c.reason.as_deref() == Some(r))
        {
            return Ok(cr);
        }
        if tokio::time::Instant::now() >= deadline {
            let last = cond
                .map(|c| {
                    format!(
                        "{}/{}: {}",
                        c.status,
                        c.reason.as_deref().unwrap_or(""),
                        c.message.as_deref().unwrap_or("")
                    )
                })
                .unwrap_or("<none>".into());
            anyhow::bail!("timed out after {timeout:?}; {namespace}/{name} {type_} condition: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the request is Ready=True (Issued); fails early when it Failed or was Denied.
pub async fn wait_ready(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<CertificateRequest> {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), namespace);
    poll(timeout, || async {
        let cr = api.get(name).await?;
        match cr.condition("Ready") {
            Some(c) if c.status == "True" => Ok(Some(cr)),
            Some(c) if matches!(c.reason.as_deref(), Some("Failed") | Some("Denied")) => Err(anyhow::anyhow!(
                "{namespace}/{name} ended {}: {}",
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or("")
            )),
            _ => Ok(None),
        }
    })
    .await
}

async fn poll<T, F, Fut>(timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A Secret with string data.
pub fn secret(namespace: &str, name: &str, type_: Option<&str>, data: &[(&str, &[u8])]) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(namespace.into()), ..Default::default() },
        type_: type_.map(str::to_owned),
        data: Some(data.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec()))).collect()),
        ..Default::default()
    }
}

/// A ConfigMap with string data.
pub fn config_map(namespace: &str, name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(namespace.into()), ..Default::default() },
        data: Some(data.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
        ..Default::default()
    }
}

/// A fresh key and a CSR for it with `dns_names` (the first is also the CN). Returns
/// `(csr_pem, key_pem)`. RSA keys come from `openssl` (ring cannot generate them).
pub fn generate_csr(key: &KeyKind, dns_names: &[&str]) -> anyhow::Result<(String, String)> {
    let key_pair = generate_key(key)?;
    let mut params = rcgen::CertificateParams::new(dns_names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
    if let Some(cn) = dns_names.first() {
        params.distinguished_name.push(rcgen::DnType::CommonName, *cn);
    }
    let csr = params.serialize_request(&key_pair)?;
    Ok((csr.pem()?, key_pair.serialize_pem()))
}
