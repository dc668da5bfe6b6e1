//! [`ResourceSource`] over the API server: Secrets, ConfigMaps and TokenRequests, and the one
//! write (a merge patch of one Secret key). The namespace rules are enforced by
//! [`Resources`](super::Resources), which decides the namespace; this only performs the calls.
//! Errors name the object, never its content.

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use zeroize::Zeroizing;

use super::ResourceSource;
use crate::error::SignError;

/// Reads from the cluster with the controller's client.
pub(crate) struct ApiSource {
    client: kube::Client,
}

impl ApiSource {
    pub(crate) fn new(client: kube::Client) -> Self {
        ApiSource { client }
    }
}

fn read_error(kind: &str, namespace: &str, name: &str, e: kube::Error) -> SignError {
    match &e {
        kube::Error::Api(s) if s.code == 403 => SignError::issuer_not_ready(format!(
            "the controller may not read {kind} \"{namespace}/{name}\" (forbidden): grant it RBAC access"
        )),
        _ => SignError::transient(format!("cannot read {kind} \"{namespace}/{name}\": {e}")),
    }
}

#[async_trait]
impl ResourceSource for ApiSource {
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, SignError> {
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| read_error("Secret", namespace, name, e))
    }

    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, SignError> {
        Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| read_error("ConfigMap", namespace, name, e))
    }

    async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[String],
        expiration_seconds: i64,
    ) -> Result<Zeroizing<String>, SignError> {
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.to_vec(),
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let answer: TokenRequest =
            api.create_subresource("token", name, &PostParams::default(), &request).await.map_err(|e| match &e {
                kube::Error::Api(s) if s.is_not_found() => SignError::issuer_not_ready(format!(
                    "ServiceAccount \"{namespace}/{name}\" not found: create it or fix the reference"
                )),
                _ => read_error("a token for ServiceAccount", namespace, name, e),
            })?;
        let token = answer.status.map(|s| s.token).unwrap_or_default();
        if token.is_empty() {
            return Err(SignError::transient(format!(
                "the API server returned an empty token for ServiceAccount \"{namespace}/{name}\""
            )));
        }
        Ok(Zeroizing::new(token))
    }

    async fn patch_secret_key(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: &[u8],
        resource_version: Option<&str>,
    ) -> Result<Option<String>, SignError> {
        use base64::Engine as _;
        let mut patch = serde_json::json!({
            "data": { key: base64::engine::general_purpose::STANDARD.encode(value) }
        });
        if let Some(rv) = resource_version {
            // A resourceVersion in a merge patch is a precondition: 409 if the Secret changed.
            patch["metadata"] = serde_json::json!({ "resourceVersion": rv });
        }
        let api = Api::<Secret>::namespaced(self.client.clone(), namespace);
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(s) => Ok(s.metadata.resource_version),
            Err(kube::Error::Api(s)) if s.code == 403 => Err(SignError::issuer_not_ready(format!(
                "the controller may not patch Secret \"{namespace}/{name}\" (forbidden): grant it patch on secrets (charts: rbac.secretUpdates: true)"
            ))),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(SignError::issuer_not_ready(format!(
                "Secret \"{namespace}/{name}\" not found: create it or fix the reference"
            ))),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(SignError::transient(format!(
                "Secret \"{namespace}/{name}\" changed since it was read: key \"{key}\" not written over the change"
            ))),
            Err(e) => Err(SignError::transient(format!("cannot patch Secret \"{namespace}/{name}\": {e}"))),
        }
    }
}
