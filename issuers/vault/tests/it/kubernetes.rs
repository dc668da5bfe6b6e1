//! Kubernetes auth against OpenBao's real `kubernetes` auth method, which reviews the
//! service-account JWT through kube-sim's TokenReview API: with a static JWT in a Secret, and
//! with `serviceAccountRef`, for which the signer requests a short-lived token (TokenRequest) with
//! cert-manager's audience.

use std::sync::Arc;

use certbridge::resources::{ResourceSource, StaticSource};
use certbridge::{Signer, async_trait};
use certbridge_testkit::KubeSim;
use certbridge_vault::VaultSigner;
use certbridge_vault::spec::{KubernetesAuth, ServiceAccountRef, VaultAuth};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use zeroize::Zeroizing;

use crate::*;

const ACCOUNT: &str = "vault-issuer";

/// Secrets from memory; service-account tokens from kube-sim's TokenRequest API.
struct SimSource {
    client: kube::Client,
    objects: StaticSource,
}

#[async_trait]
impl ResourceSource for SimSource {
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, SignError> {
        self.objects.secret(namespace, name).await
    }

    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, SignError> {
        self.objects.config_map(namespace, name).await
    }

    async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[String],
        expiration_seconds: i64,
    ) -> Result<Zeroizing<String>, SignError> {
        let token = request_token(&self.client, namespace, name, audiences, expiration_seconds)
            .await
            .map_err(|e| SignError::issuer_not_ready(format!("TokenRequest failed: {e}")))?;
        Ok(Zeroizing::new(token))
    }
}

async fn request_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    audiences: &[String],
    expiration_seconds: i64,
) -> anyhow::Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.to_vec(),
            expiration_seconds: Some(expiration_seconds),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = api.create_token_request(name, &PostParams::default(), &tr).await?;
    Ok(out.status.map(|s| s.token).unwrap_or_default())
}

async fn cluster() -> KubeSim {
    let sim = KubeSim::start().await.unwrap();
    let client = sim.client();
    certbridge::testing::create_namespace(&client, NS).await.unwrap();
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some(ACCOUNT.into()), ..Default::default() },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client, NS).create(&PostParams::default(), &sa).await.unwrap();
    sim
}

fn sim_resources(sim: &KubeSim, secrets: Vec<Secret>) -> Resources {
    Resources::new(Arc::new(SimSource { client: sim.client(), objects: StaticSource::new(NS, secrets, vec![]) }), NS)
}

#[tokio::test]
async fn service_account_ref_through_token_request_and_token_review() {
    let sim = cluster().await;
    let (bao, pki) = openbao().await;
    // The role only accepts tokens for cert-manager's audience of issuer team-a/vault.
    bao.kubernetes_auth(&sim.url(), "certbridge", NS, ACCOUNT, Some("vault://team-a/vault")).await.unwrap();
    let auth = VaultAuth {
        kubernetes: Some(KubernetesAuth {
            role: "certbridge".into(),
            mount_path: Some("/v1/auth/kubernetes".into()),
            secret_ref: None,
            service_account_ref: Some(ServiceAccountRef { name: ACCOUNT.into(), audiences: vec!["extra".into()] }),
        }),
        ..Default::default()
    };
    let res = sim_resources(&sim, vec![]);
    let logs = LogCapture::start();
    let vault_issuer = issuer(spec(&bao, auth.clone()));
    // "extra" is an audience the controller's operator allows (--allowed-token-audience).
    let signer = VaultSigner::new().with_policy(certbridge_vault::flags::ControllerPolicy {
        allowed_audiences: vec!["extra".into()],
        allow_insecure_http: true,
    });
    signer.check(&vault_issuer, &res).await.unwrap();
    let issued = sign(&signer, &vault_issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    openssl_verify(&pki.root_pem, &issued);
    assert_eq!(logs.count("obtained a Vault token"), 1, "{}", logs.text());

    // Another issuer name means another audience, which the role refuses: the audience is real.
    let mut other = issuer(spec(&bao, auth));
    other.name = "other".into();
    let err = signer.check(&other, &res).await.unwrap_err();
    assert!(err.reaction == Reaction::IssuerNotReady, "{err:?}");
    assert!(err.to_string().contains("Kubernetes login"), "{err}");
    assert!(!logs.text().contains("eyJ"), "a JWT was logged: {}", logs.text());
    assert!(!err.to_string().contains("eyJ"), "{err}");
}

#[tokio::test]
async fn static_jwt_from_a_secret() {
    let sim = cluster().await;
    let (bao, pki) = openbao().await;
    bao.kubernetes_auth(&sim.url(), "certbridge", NS, ACCOUNT, Some("vault")).await.unwrap();
    let jwt = request_token(&sim.client(), NS, ACCOUNT, &["vault".into()], 3600).await.unwrap();
    let res = sim_resources(&sim, vec![secret("sa-token", &[("token", &jwt)])]);
    let auth = VaultAuth {
        kubernetes: Some(KubernetesAuth {
            role: "certbridge".into(),
            mount_path: None,
            secret_ref: Some(SecretKeyRef { name: "sa-token".into(), key: None }),
            service_account_ref: None,
        }),
        ..Default::default()
    };
    let logs = LogCapture::start();
    let vault_issuer = issuer(spec(&bao, auth));
    let signer = VaultSigner::dev();
    signer.check(&vault_issuer, &res).await.unwrap();
    let issued = sign(&signer, &vault_issuer, &res, &csr(&["app.example.com"], &[], &[])).await.unwrap();
    openssl_verify(&pki.root_pem, &issued);

    // A JWT for another service account is refused by the role binding, and never shown.
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some("intruder".into()), ..Default::default() },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(sim.client(), NS).create(&PostParams::default(), &sa).await.unwrap();
    let wrong = request_token(&sim.client(), NS, "intruder", &["vault".into()], 3600).await.unwrap();
    let res = sim_resources(&sim, vec![secret("sa-token", &[("token", &wrong)])]);
    let mut next = vault_issuer.clone();
    next.generation = 2;
    let err = signer.check(&next, &res).await.unwrap_err();
    assert!(err.reaction == Reaction::IssuerNotReady, "{err:?}");
    for text in [logs.text(), err.to_string()] {
        assert!(!text.contains(&jwt) && !text.contains(&wrong), "a JWT leaked: {text}");
    }
}
