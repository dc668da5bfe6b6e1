//! Credentials for the four auth methods, read from the issuer's Secrets (or minted through the
//! TokenRequest API), and turned into a Vault token. Secret values stay in `Zeroizing` buffers and
//! are scrubbed from any message built from Vault's answers.

use std::fmt;

use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use certbridge::{Issuer, IssuerScope, Resources, SignError};

use crate::client::{TokenGrant, VaultClient, VaultError};
use crate::spec::{VaultSpec, auth_mount};
use crate::tls::TlsMaterial;

/// Lifetime asked for service-account tokens, as cert-manager does (they are only used to log in).
const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 600;

/// One issuer's credentials as read right now.
pub(crate) enum Credentials {
    /// A Vault token from a Secret.
    Token { token: Zeroizing<String>, source: String },
    /// AppRole role ID and secret ID.
    AppRole { mount: String, role_id: String, secret_id: Zeroizing<String> },
    /// A service-account JWT from a Secret.
    KubernetesJwt { mount: String, role: String, jwt: Zeroizing<String> },
    /// A service account to request a token for at login time.
    KubernetesServiceAccount { mount: String, role: String, account: String, audiences: Vec<String> },
    /// The TLS client certificate already configured on the connection.
    ClientCertificate { mount: String, name: Option<String> },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method())
    }
}

impl Credentials {
    /// Reads what the issuer's auth method needs. Missing Secrets or keys → issuer not ready.
    pub(crate) async fn load(issuer: &Issuer<VaultSpec>, resources: &Resources) -> Result<Credentials, SignError> {
        let auth = &issuer.spec.auth;
        if let Some(r) = &auth.token_secret_ref {
            let key = r.key_or("token");
            let token = resources.secret_string(&r.name, key).await?;
            return Ok(Credentials::Token {
                token,
                source: format!("Secret \"{}/{}\" key \"{key}\"", resources.namespace(), r.name),
            });
        }
        if let Some(a) = &auth.app_role {
            let secret_id = resources.secret_string(&a.secret_ref.name, a.secret_ref.key_or("secretId")).await?;
            return Ok(Credentials::AppRole {
                mount: auth_mount(Some(&a.path), "approle"),
                role_id: a.role_id.clone(),
                secret_id,
            });
        }
        if let Some(k) = &auth.kubernetes {
            let mount = auth_mount(k.mount_path.as_deref(), "kubernetes");
            if let Some(r) = &k.secret_ref {
                let jwt = resources.secret_string(&r.name, r.key_or("token")).await?;
                return Ok(Credentials::KubernetesJwt { mount, role: k.role.clone(), jwt });
            }
            if let Some(sa) = &k.service_account_ref {
                let mut audiences = sa.audiences.clone();
                audiences.push(default_audience(issuer));
                return Ok(Credentials::KubernetesServiceAccount {
                    mount,
                    role: k.role.clone(),
                    account: sa.name.clone(),
                    audiences,
                });
            }
        }
        if let Some(c) = &auth.client_certificate {
            return Ok(Credentials::ClientCertificate {
                mount: auth_mount(c.mount_path.as_deref(), "cert"),
                name: c.name.clone().filter(|n| !n.is_empty()),
            });
        }
        Err(SignError::permanent(
            "spec.auth: set exactly one of tokenSecretRef, appRole, kubernetes, clientCertificate",
        ))
    }

    /// The auth method's name, for messages and logs.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Credentials::Token { .. } => "token",
            Credentials::AppRole { .. } => "AppRole",
            Credentials::KubernetesJwt { .. } | Credentials::KubernetesServiceAccount { .. } => "Kubernetes",
            Credentials::ClientCertificate { .. } => "client certificate",
        }
    }

    /// A digest of the credentials, to notice a changed Secret without keeping its value around.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut put = |v: &[u8]| {
            h.update((v.len() as u64).to_be_bytes());
            h.update(v);
        };
        put(self.method().as_bytes());
        match self {
            Credentials::Token { token, .. } => put(token.as_bytes()),
            Credentials::AppRole { mount, role_id, secret_id } => {
                put(mount.as_bytes());
                put(role_id.as_bytes());
                put(secret_id.as_bytes());
            }
            Credentials::KubernetesJwt { mount, role, jwt } => {
                put(mount.as_bytes());
                put(role.as_bytes());
                put(jwt.as_bytes());
            }
            Credentials::KubernetesServiceAccount { mount, role, account, audiences } => {
                put(mount.as_bytes());
                put(role.as_bytes());
                put(account.as_bytes());
                audiences.iter().for_each(|a| put(a.as_bytes()));
            }
            Credentials::ClientCertificate { mount, name } => {
                put(mount.as_bytes());
                put(name.as_deref().unwrap_or("").as_bytes());
            }
        }
        h.finalize().into()
    }

    /// Logs in (or, for a static token, asks Vault what the token is worth).
    pub(crate) async fn obtain(&self, client: &VaultClient, resources: &Resources) -> Result<TokenGrant, SignError> {
        match self {
            Credentials::Token { token, source } => {
                let (ttl, renewable) = client.lookup_self(token).await.map_err(|e| {
                    let e = certbridge::redact(&e.to_string(), &[token]);
                    SignError::issuer_not_ready(format!(
                        "Vault at {} did not accept the token in {source} (auth/token/lookup-self: {e}): it is invalid, expired or revoked, or lacks the default policy",
                        client.server()
                    ))
                })?;
                Ok(TokenGrant { token: token.clone(), ttl, renewable })
            }
            Credentials::AppRole { mount, role_id, secret_id } => {
                let body = json!({ "role_id": role_id, "secret_id": &**secret_id });
                login(client, mount, self.method(), &body, &[secret_id]).await
            }
            Credentials::KubernetesJwt { mount, role, jwt } => {
                let body = json!({ "role": role, "jwt": &**jwt });
                login(client, mount, self.method(), &body, &[jwt]).await
            }
            Credentials::KubernetesServiceAccount { mount, role, account, audiences } => {
                let jwt = resources
                    .service_account_token(account, audiences, SERVICE_ACCOUNT_TOKEN_SECONDS)
                    .await
                    .map_err(|e| e.context(format!("requesting a token for service account \"{account}\"")))?;
                let body = json!({ "role": role, "jwt": &**jwt });
                login(client, mount, self.method(), &body, &[&jwt]).await
            }
            Credentials::ClientCertificate { mount, name } => {
                let body = match name {
                    Some(n) => json!({ "name": n }),
                    None => json!({}),
                };
                login(client, mount, self.method(), &body, &[]).await
            }
        }
    }
}

async fn login(
    client: &VaultClient,
    mount: &str,
    method: &str,
    body: &serde_json::Value,
    secrets: &[&str],
) -> Result<TokenGrant, SignError> {
    client.login(mount, body).await.map_err(|e| {
        let msg = format!(
            "{method} login at {}v1/{mount}/login failed: {}",
            client.server(),
            certbridge::redact(&e.to_string(), secrets)
        );
        login_error(&e, msg)
    })
}

/// A refused login means the issuer is not usable until its credentials or Vault's config change;
/// no answer at all may pass.
fn login_error(e: &VaultError, msg: String) -> SignError {
    if e.is_transient() { SignError::transient(msg) } else { SignError::issuer_not_ready(msg) }
}

/// cert-manager's default audience for service-account tokens.
pub(crate) fn default_audience(issuer: &Issuer<VaultSpec>) -> String {
    match (issuer.scope, &issuer.namespace) {
        (IssuerScope::Namespaced, Some(ns)) => format!("vault://{ns}/{}", issuer.name),
        _ => format!("vault://{}", issuer.name),
    }
}

/// Reads the TLS material the spec references: CA bundle, mTLS client certificate and key.
pub(crate) async fn load_tls(issuer: &Issuer<VaultSpec>, resources: &Resources) -> Result<TlsMaterial, SignError> {
    let spec = &issuer.spec;
    let mut tls = TlsMaterial { server_name: spec.server_name.clone(), ..Default::default() };
    if let Some(b64) = &spec.ca_bundle {
        tls.ca_pem = Some(crate::spec::decode_ca_bundle(b64).map_err(SignError::permanent)?);
    } else if let Some(r) = &spec.ca_bundle_secret_ref {
        tls.ca_pem = Some(resources.secret_key(&r.name, r.key_or("ca.crt")).await?.to_vec());
    }
    let client_secret = spec.auth.client_certificate.as_ref().and_then(|c| c.secret_name.as_deref());
    if let Some(name) = client_secret {
        let cert = resources.secret_key(name, "tls.crt").await?;
        let key = resources.secret_key(name, "tls.key").await?;
        tls.client = Some((cert.to_vec(), key));
    } else if let (Some(c), Some(k)) = (&spec.client_cert_secret_ref, &spec.client_key_secret_ref) {
        let cert = resources.secret_key(&c.name, c.key_or("tls.crt")).await?;
        let key = resources.secret_key(&k.name, k.key_or("tls.key")).await?;
        tls.client = Some((cert.to_vec(), key));
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_follow_cert_manager() {
        let mut issuer = Issuer {
            name: "vault".into(),
            namespace: Some("team-a".into()),
            scope: IssuerScope::Namespaced,
            uid: String::new(),
            generation: 1,
            annotations: Default::default(),
            spec: VaultSpec::default(),
        };
        assert_eq!(default_audience(&issuer), "vault://team-a/vault");
        issuer.scope = IssuerScope::Cluster;
        issuer.namespace = None;
        assert_eq!(default_audience(&issuer), "vault://vault");
    }

    /// The manifest in the README, and the auth and TLS alternatives its comments show, written
    /// for cert-manager's `spec.vault`, parse with the framework's `SecretRef` and read the same
    /// Secret keys as before: the key each comment spells out, and the same key when it is left
    /// out (the per-field default).
    #[tokio::test]
    async fn readme_manifests_parse_and_read_the_keys_they_always_read() {
        use certbridge::IssuerSpec;
        #[derive(serde::Deserialize)]
        struct Manifest {
            spec: VaultSpec,
        }
        let readme = include_str!("../README.md");
        let block = readme.split("```yaml\n").nth(1).and_then(|b| b.split("```").next()).unwrap();
        // The README's placeholder, replaced by a real bundle so the manifest validates.
        let ca = certbridge::testing::TestCa::new(&certbridge::KeyKind::EcP256).unwrap();
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca.cert_pem());
        let manifest = block.replace("<base64 PEM>", &b64);
        let base = serde_yaml::from_str::<Manifest>(&manifest).unwrap().spec;
        base.validate().unwrap();
        let secret = |name: &str, data: &[(&str, &[u8])]| certbridge::testing::secret("team-a", name, None, data);
        let resources = Resources::from_objects(
            "team-a",
            vec![
                secret("vault-token", &[("token", b"t-1")]),
                secret("approle", &[("secretId", b"s-1")]),
                secret("sa-jwt", &[("token", b"j-1")]),
                secret("vault-ca", &[("ca.crt", b"ca-1")]),
                secret("mtls", &[("tls.crt", b"crt-1"), ("tls.key", b"key-1")]),
            ],
            vec![],
        );
        let issuer = |spec: VaultSpec| Issuer {
            name: "vault".into(),
            namespace: Some("team-a".into()),
            scope: IssuerScope::Namespaced,
            uid: String::new(),
            generation: 1,
            annotations: Default::default(),
            spec,
        };
        // `    # tokenSecretRef: {name: vault-token, key: token}` → that auth method, with the key as
        // written and with the key left out.
        let alternatives: Vec<&str> = block
            .lines()
            .filter_map(|l| l.trim().strip_prefix("# "))
            .filter(|l| ["tokenSecretRef:", "appRole:", "kubernetes:"].iter().any(|m| l.starts_with(m)))
            .collect();
        assert_eq!(alternatives.len(), 3, "{alternatives:?}");
        for line in alternatives {
            let without_key = line.replace(", key: token", "").replace(", key: secretId", "");
            assert_ne!(line, without_key);
            for text in [line.to_owned(), without_key] {
                let mut spec = base.clone();
                spec.auth = serde_yaml::from_str(&text).unwrap();
                spec.validate().unwrap();
                let read = match Credentials::load(&issuer(spec), &resources).await.unwrap() {
                    Credentials::Token { token, source } => {
                        assert_eq!(source, "Secret \"team-a/vault-token\" key \"token\"");
                        token.to_string()
                    }
                    Credentials::AppRole { secret_id, .. } => secret_id.to_string(),
                    Credentials::KubernetesJwt { jwt, .. } => jwt.to_string(),
                    other => panic!("{text}: {other:?}"),
                };
                let expected = ["t-1", "s-1", "j-1"];
                assert!(expected.contains(&read.as_str()), "{text}: read {read}");
            }
        }
        // The TLS references the README names, with and without their keys.
        for (ca, cert, key) in [
            ("{name: vault-ca, key: ca.crt}", "{name: mtls, key: tls.crt}", "{name: mtls, key: tls.key}"),
            ("{name: vault-ca}", "{name: mtls}", "{name: mtls}"),
        ] {
            let mut spec = base.clone();
            spec.ca_bundle = None;
            spec.ca_bundle_secret_ref = serde_yaml::from_str(ca).unwrap();
            spec.client_cert_secret_ref = serde_yaml::from_str(cert).unwrap();
            spec.client_key_secret_ref = serde_yaml::from_str(key).unwrap();
            spec.validate().unwrap();
            let tls = load_tls(&issuer(spec), &resources).await.unwrap();
            assert_eq!(tls.ca_pem.as_deref(), Some(&b"ca-1"[..]), "{ca}");
            let (c, k) = tls.client.unwrap();
            assert_eq!((c.as_slice(), k.as_slice()), (&b"crt-1"[..], &b"key-1"[..]));
        }
    }
}
