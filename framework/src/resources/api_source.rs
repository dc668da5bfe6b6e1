//! [`ResourceSource`] over the API server: Secrets, ConfigMaps and TokenRequests. The namespace
//! rules are enforced by [`Resources`](super::Resources), which decides the namespace; this only
//! performs the reads. Errors name the object, never its content.

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
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
}
