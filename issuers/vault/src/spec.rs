//! The `VaultIssuer` / `VaultClusterIssuer` spec: cert-manager's `spec.vault`, field for field, with
//! the checks cert-manager's webhook and setup code make (exactly one auth method, a signing path)
//! done in [`VaultSpec::validate`].

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use certbridge::IssuerSpec;

/// How to reach a Vault / OpenBao PKI secrets engine and authenticate to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultSpec {
    /// Vault server URL, e.g. `https://vault.example.com:8200`.
    pub server: String,
    /// The signing endpoint: `<mount>/sign/<role>` or `<mount>/sign-verbatim[/<role>]`, e.g. `pki_int/sign/example-dot-com`.
    pub path: String,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Base64-encoded PEM bundle of the CAs that sign the server's certificate (replaces the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// A Secret key holding the PEM CA bundle (key defaults to `ca.crt`). Mutually exclusive with `caBundle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
    /// A Secret key holding the PEM client certificate for mTLS to Vault (key defaults to `tls.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretKeyRef>,
    /// A Secret key holding the PEM client private key for mTLS to Vault (key defaults to `tls.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_secret_ref: Option<SecretKeyRef>,
    /// The name the server's certificate is verified against, when it differs from the host in `server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// How to authenticate: exactly one method.
    pub auth: VaultAuth,
}

/// A key in a Secret in the issuer's namespace (the cluster resource namespace for a cluster
/// issuer), the key optional with a default per field as in cert-manager's `spec.vault`: the
/// framework's shared type for such references (one schema across adapters).
pub use certbridge::SecretRef as SecretKeyRef;

/// Authentication methods; exactly one must be set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultAuth {
    /// A Vault token in a Secret (key defaults to `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// AppRole login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role: Option<AppRoleAuth>,
    /// Kubernetes service-account login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesAuth>,
    /// TLS client-certificate login (the `cert` auth method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificateAuth>,
}

/// AppRole login: `POST /v1/auth/<path>/login {role_id, secret_id}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppRoleAuth {
    /// Mount path of the AppRole auth method, e.g. `approle`.
    pub path: String,
    /// The role ID (not secret).
    pub role_id: String,
    /// The Secret key holding the secret ID (key defaults to `secretId`).
    pub secret_ref: SecretKeyRef,
}

/// Kubernetes login: `POST /v1/<mountPath>/login {role, jwt}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesAuth {
    /// The Vault role to log in as.
    pub role: String,
    /// Mount path of the Kubernetes auth method (default `/v1/auth/kubernetes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// A Secret key holding a service-account JWT (key defaults to `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// A service account the controller requests a short-lived token for (TokenRequest API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountRef>,
}

/// A service account in the issuer's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRef {
    /// Service account name.
    pub name: String,
    /// Audiences added to the default `vault://<namespace>/<issuer>` (or `vault://<cluster-issuer>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// Client-certificate login: `POST /v1/<mountPath>/login {name}` over mTLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateAuth {
    /// Mount path of the cert auth method (default `/v1/auth/cert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// The cert role to log in as; when unset Vault tries every role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) with the client certificate. When unset,
    /// `clientCertSecretRef` / `clientKeySecretRef` are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

impl IssuerSpec for VaultSpec {
    const GROUP: &'static str = "vault.certbridge.io";
    const NAME: &'static str = "Vault";

    fn validate(&self) -> Result<(), String> {
        validate_server(&self.server)?;
        SignPath::parse(&self.path)?;
        if self.ca_bundle.is_some() && self.ca_bundle_secret_ref.is_some() {
            return Err("spec.caBundle and spec.caBundleSecretRef are mutually exclusive: set only one".into());
        }
        if let Some(b64) = &self.ca_bundle {
            decode_ca_bundle(b64)?;
        }
        if self.client_cert_secret_ref.is_some() != self.client_key_secret_ref.is_some() {
            return Err(
                "spec.clientCertSecretRef and spec.clientKeySecretRef must be set together (mTLS needs both the certificate and its key)"
                    .into(),
            );
        }
        if let Some(sn) = &self.server_name
            && sn.trim().is_empty()
        {
            return Err("spec.serverName is empty: remove it or set the name in the server's certificate".into());
        }
        if let Some(ns) = &self.namespace
            && ns.trim().is_empty()
        {
            return Err("spec.namespace is empty: remove it or name a Vault namespace".into());
        }
        self.auth.validate(self.client_cert_secret_ref.is_some())
    }
}

impl VaultAuth {
    fn validate(&self, has_mtls_cert: bool) -> Result<(), String> {
        let set: Vec<&str> = [
            self.token_secret_ref.as_ref().map(|_| "tokenSecretRef"),
            self.app_role.as_ref().map(|_| "appRole"),
            self.kubernetes.as_ref().map(|_| "kubernetes"),
            self.client_certificate.as_ref().map(|_| "clientCertificate"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match set.as_slice() {
            [] => {
                return Err(
                    "spec.auth: set exactly one of tokenSecretRef, appRole, kubernetes, clientCertificate".into()
                );
            }
            [_] => {}
            many => {
                return Err(format!("spec.auth: exactly one auth method may be set, found {}", many.join(", ")));
            }
        }
        if let Some(r) = &self.token_secret_ref {
            require_name(&r.name, "spec.auth.tokenSecretRef.name")?;
        }
        if let Some(a) = &self.app_role {
            require_name(&a.path, "spec.auth.appRole.path (the AppRole mount, e.g. \"approle\")")?;
            require_name(&a.role_id, "spec.auth.appRole.roleId")?;
            require_name(&a.secret_ref.name, "spec.auth.appRole.secretRef.name")?;
        }
        if let Some(k) = &self.kubernetes {
            require_name(&k.role, "spec.auth.kubernetes.role")?;
            match (&k.secret_ref, &k.service_account_ref) {
                (Some(r), None) => require_name(&r.name, "spec.auth.kubernetes.secretRef.name")?,
                (None, Some(sa)) => require_name(&sa.name, "spec.auth.kubernetes.serviceAccountRef.name")?,
                _ => {
                    return Err(
                        "spec.auth.kubernetes: set exactly one of secretRef (a static JWT) or serviceAccountRef (a token requested by the controller)"
                            .into(),
                    );
                }
            }
        }
        if let Some(c) = &self.client_certificate
            && c.secret_name.is_none()
            && !has_mtls_cert
        {
            return Err(
                "spec.auth.clientCertificate needs a client certificate: set secretName (a kubernetes.io/tls Secret) or spec.clientCertSecretRef and spec.clientKeySecretRef"
                    .into(),
            );
        }
        Ok(())
    }
}

fn require_name(value: &str, field: &str) -> Result<(), String> {
    if value.trim().is_empty() { Err(format!("{field} is required")) } else { Ok(()) }
}

fn validate_server(server: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(server).map_err(|e| {
        format!("spec.server {server:?} is not a URL ({e}): use e.g. \"https://vault.example.com:8200\"")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("spec.server {server:?} must be an http:// or https:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("spec.server {server:?} must not have a query or fragment"));
    }
    Ok(())
}

/// Decodes `spec.caBundle` (base64 of a PEM bundle) and checks it holds at least one certificate.
pub(crate) fn decode_ca_bundle(b64: &str) -> Result<Vec<u8>, String> {
    let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    let pem_bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| format!("spec.caBundle is not base64 ({e}): base64-encode the PEM CA bundle"))?;
    let blocks = pem::parse_many(&pem_bytes).map_err(|e| format!("spec.caBundle does not hold PEM ({e})"))?;
    if !blocks.iter().any(|b| b.tag() == "CERTIFICATE") {
        return Err("spec.caBundle holds no PEM CERTIFICATE block".into());
    }
    Ok(pem_bytes)
}

/// A validated signing endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignPath {
    /// The PKI mount, e.g. `pki_int`.
    pub mount: String,
    /// `sign` or `sign-verbatim`.
    pub verb: &'static str,
    /// The role, if any (required for `sign`).
    pub role: Option<String>,
}

impl SignPath {
    /// Parses `<mount>/sign/<role>` or `<mount>/sign-verbatim[/<role>]` (a leading `/` or `/v1/` is tolerated).
    pub fn parse(path: &str) -> Result<SignPath, String> {
        let bad = || {
            format!(
                "spec.path {path:?} is not a signing endpoint: use \"<mount>/sign/<role>\" or \"<mount>/sign-verbatim[/<role>]\", e.g. \"pki_int/sign/example-dot-com\""
            )
        };
        let trimmed = path.trim().trim_start_matches('/');
        let trimmed = trimmed.strip_prefix("v1/").unwrap_or(trimmed).trim_end_matches('/');
        let segments: Vec<&str> = trimmed.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(bad());
        }
        let n = segments.len();
        let (mount, verb, role) = if n >= 3 && segments[n - 2] == "sign" {
            (&segments[..n - 2], "sign", Some(segments[n - 1]))
        } else if n >= 3 && segments[n - 2] == "sign-verbatim" {
            (&segments[..n - 2], "sign-verbatim", Some(segments[n - 1]))
        } else if n >= 2 && segments[n - 1] == "sign-verbatim" {
            (&segments[..n - 1], "sign-verbatim", None)
        } else {
            return Err(bad());
        };
        Ok(SignPath { mount: mount.join("/"), verb, role: role.map(str::to_owned) })
    }

    /// The API path below `/v1/`.
    pub fn api_path(&self) -> String {
        match &self.role {
            Some(role) => format!("{}/{}/{}", self.mount, self.verb, role),
            None => format!("{}/{}", self.mount, self.verb),
        }
    }
}

/// Normalizes an auth mount path as cert-manager accepts it (`/v1/auth/kubernetes`, `auth/kubernetes`,
/// or for AppRole just `approle`) to the path below `/v1/`.
pub(crate) fn auth_mount(path: Option<&str>, default: &str) -> String {
    let p = path.map(str::trim).filter(|p| !p.is_empty()).unwrap_or(default);
    let p = p.trim_matches('/');
    let p = p.strip_prefix("v1/").unwrap_or(p);
    if p.starts_with("auth/") { p.to_owned() } else { format!("auth/{p}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VaultSpec {
        VaultSpec {
            server: "https://vault.example.com:8200".into(),
            path: "pki_int/sign/web".into(),
            auth: VaultAuth {
                token_secret_ref: Some(SecretKeyRef { name: "vault-token".into(), key: None }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn sign_paths_are_parsed_and_others_refused() {
        let p = SignPath::parse("pki_int/sign/web").unwrap();
        assert_eq!((p.mount.as_str(), p.verb, p.role.as_deref()), ("pki_int", "sign", Some("web")));
        let p = SignPath::parse("/v1/teams/a/pki/sign-verbatim").unwrap();
        assert_eq!((p.mount.as_str(), p.verb, p.role), ("teams/a/pki", "sign-verbatim", None));
        assert_eq!(SignPath::parse("pki/sign-verbatim/web").unwrap().api_path(), "pki/sign-verbatim/web");
        for bad in ["pki/issue/web", "pki/sign", "sign/web", "pki//sign/web", "", "pki/sign/web/extra", "/"] {
            let e = SignPath::parse(bad).unwrap_err();
            assert!(e.contains("spec.path") && e.contains("<mount>/sign/<role>"), "{bad}: {e}");
        }
    }

    #[test]
    fn exactly_one_auth_method() {
        assert_eq!(spec().validate(), Ok(()));
        let mut s = spec();
        s.auth.app_role = Some(AppRoleAuth {
            path: "approle".into(),
            role_id: "r".into(),
            secret_ref: SecretKeyRef { name: "s".into(), key: None },
        });
        let e = s.validate().unwrap_err();
        assert!(e.contains("tokenSecretRef, appRole"), "{e}");
        let mut s = spec();
        s.auth = VaultAuth::default();
        assert!(s.validate().unwrap_err().contains("set exactly one of"));
        let mut s = spec();
        s.auth = VaultAuth {
            kubernetes: Some(KubernetesAuth { role: "issuer".into(), ..Default::default() }),
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().contains("secretRef (a static JWT) or serviceAccountRef"));
        s.auth.kubernetes.as_mut().unwrap().service_account_ref =
            Some(ServiceAccountRef { name: "vault-issuer".into(), audiences: vec![] });
        assert_eq!(s.validate(), Ok(()));
        let mut s = spec();
        s.auth = VaultAuth { client_certificate: Some(ClientCertificateAuth::default()), ..Default::default() };
        assert!(s.validate().unwrap_err().contains("clientCertSecretRef"));
    }

    #[test]
    fn server_and_tls_fields_are_checked() {
        let mut s = spec();
        s.server = "vault:8200".into();
        assert!(s.validate().unwrap_err().contains("spec.server"));
        let mut s = spec();
        s.ca_bundle = Some("not base64!".into());
        assert!(s.validate().unwrap_err().contains("spec.caBundle is not base64"));
        s.ca_bundle = Some(base64::engine::general_purpose::STANDARD.encode("hello"));
        assert!(s.validate().unwrap_err().contains("spec.caBundle"));
        let mut s = spec();
        s.client_cert_secret_ref = Some(SecretKeyRef { name: "c".into(), key: None });
        assert!(s.validate().unwrap_err().contains("set together"));
    }

    #[test]
    fn auth_mounts_accept_cert_manager_spellings() {
        assert_eq!(auth_mount(Some("/v1/auth/kubernetes"), "kubernetes"), "auth/kubernetes");
        assert_eq!(auth_mount(Some("approle"), "approle"), "auth/approle");
        assert_eq!(auth_mount(None, "/v1/auth/cert"), "auth/cert");
        assert_eq!(auth_mount(Some("auth/k8s-prod/"), "kubernetes"), "auth/k8s-prod");
    }
}
