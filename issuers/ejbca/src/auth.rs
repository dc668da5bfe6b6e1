//! EJBCA credentials: an mTLS client certificate or OAuth 2.0 client credentials, read from the
//! issuer's Secret, and the access-token cache for the OAuth case.
//!
//! The framework's [`Resources`] hands out a Secret's data but not its `type`, so the mode is told
//! apart by the keys Keyfactor's issuer documents for each type (`tls.crt`/`tls.key` for
//! kubernetes.io/tls, `tokenUrl`/`clientId`/`clientSecret` for Opaque). A Secret with both sets is
//! refused rather than guessed.
//!
//! Invariant: no secret value (key, client secret, access token) is ever formatted into an error,
//! a log line or a `Debug` output; the types holding them redact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use certbridge::{Resources, SignError};

/// How the controller authenticates to EJBCA.
pub enum Credentials {
    /// TLS client certificate: PEM certificate chain followed by the PEM private key.
    Mtls {
        /// `tls.crt` + `tls.key`, concatenated (what `reqwest::Identity::from_pem` takes).
        identity_pem: Zeroizing<Vec<u8>>,
    },
    /// OAuth 2.0 client credentials grant; the access token goes in `Authorization: Bearer`.
    OAuth2(OAuthConfig),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Mtls { .. } => f.write_str("Mtls { identity_pem: <redacted> }"),
            Credentials::OAuth2(c) => f.debug_tuple("OAuth2").field(c).finish(),
        }
    }
}

/// OAuth 2.0 client-credentials settings from the Secret.
pub struct OAuthConfig {
    /// Token endpoint URL.
    pub token_url: String,
    /// `client_id`.
    pub client_id: String,
    /// `client_secret` (never printed).
    pub client_secret: SecretString,
    /// Requested scopes (the Secret's `scopes`, split on spaces).
    pub scopes: Vec<String>,
    /// Extra `audience` token-endpoint parameter (Auth0, Keycloak with audience mappers).
    pub audience: Option<String>,
}

impl std::fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("audience", &self.audience)
            .finish()
    }
}

impl Credentials {
    /// Reads the credentials Secret `name` and tells the mode apart by its keys. Returns the
    /// credentials and a fingerprint of their content (so a rotated Secret gets a new client).
    pub async fn load(resources: &Resources, name: &str) -> Result<(Credentials, [u8; 32]), SignError> {
        let data = resources.secret(name).await?;
        let mut hasher = Sha256::new();
        for (k, v) in &data {
            hasher.update((k.len() as u64).to_be_bytes());
            hasher.update(k.as_bytes());
            hasher.update((v.len() as u64).to_be_bytes());
            hasher.update(v.as_slice());
        }
        let fingerprint: [u8; 32] = hasher.finalize().into();
        let where_ = format!("Secret \"{}/{}\" (spec.ejbcaSecretName)", resources.namespace(), name);
        let has_tls = data.contains_key("tls.crt") || data.contains_key("tls.key");
        let has_oauth = ["tokenUrl", "clientId", "clientSecret"].iter().any(|k| data.contains_key(*k));
        let text = |key: &str| -> Result<Zeroizing<String>, SignError> {
            let v = data.get(key).ok_or_else(|| {
                SignError::issuer_not_ready(format!("{where_} has no key \"{key}\": add it or fix the reference"))
            })?;
            let s = std::str::from_utf8(v)
                .map_err(|_| SignError::issuer_not_ready(format!("{where_} key \"{key}\" is not UTF-8 text")))?;
            Ok(Zeroizing::new(s.trim().to_owned()))
        };
        let creds = match (has_tls, has_oauth) {
            (true, true) => {
                return Err(SignError::issuer_not_ready(format!(
                    "{where_} has both mTLS keys (tls.crt/tls.key) and OAuth keys (tokenUrl/clientId/clientSecret): keep one set"
                )));
            }
            (false, false) => {
                let keys: Vec<&str> = data.keys().map(String::as_str).collect();
                return Err(SignError::issuer_not_ready(format!(
                    "{where_} holds neither a client certificate (type kubernetes.io/tls with tls.crt, tls.key) nor OAuth client credentials (tokenUrl, clientId, clientSecret); its keys are {keys:?}"
                )));
            }
            (true, false) => {
                let cert = text("tls.crt")?;
                let key = text("tls.key")?;
                if !cert.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(SignError::issuer_not_ready(format!(
                        "{where_} key \"tls.crt\" holds no PEM certificate"
                    )));
                }
                if !key.contains("PRIVATE KEY-----") {
                    return Err(SignError::issuer_not_ready(format!(
                        "{where_} key \"tls.key\" holds no PEM private key"
                    )));
                }
                let mut identity_pem = Zeroizing::new(Vec::with_capacity(cert.len() + key.len() + 1));
                identity_pem.extend_from_slice(cert.as_bytes());
                identity_pem.push(b'\n');
                identity_pem.extend_from_slice(key.as_bytes());
                Credentials::Mtls { identity_pem }
            }
            (false, true) => {
                let token_url = text("tokenUrl")?.to_string();
                if !token_url.starts_with("https://") {
                    return Err(SignError::issuer_not_ready(format!(
                        "{where_} key \"tokenUrl\" must be an https:// URL (client secrets are never sent in clear text)"
                    )));
                }
                let client_id = text("clientId")?.to_string();
                let client_secret = SecretString::from(text("clientSecret")?.to_string());
                let scopes = match data.get("scopes") {
                    Some(_) => text("scopes")?.split_whitespace().map(str::to_owned).collect(),
                    None => vec![],
                };
                let audience = match data.get("audience") {
                    Some(_) => Some(text("audience")?.to_string()).filter(|a| !a.is_empty()),
                    None => None,
                };
                Credentials::OAuth2(OAuthConfig { token_url, client_id, client_secret, scopes, audience })
            }
        };
        Ok((creds, fingerprint))
    }
}

/// A cached access token.
struct CachedToken {
    token: SecretString,
    refresh_at: Instant,
}

/// Fetches client-credentials access tokens and keeps one until shortly before it expires.
///
/// The lock is held while a token is fetched, so concurrent requests share one token call instead
/// of stampeding the identity provider.
pub struct TokenSource {
    config: OAuthConfig,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<CachedToken>>,
    fetches: AtomicU64,
}

/// When a token response has no `expires_in`, how long to keep the token.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Refresh this long before expiry (or at half the lifetime for short-lived tokens).
const REFRESH_MARGIN: Duration = Duration::from_secs(30);

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

impl TokenSource {
    /// A token source calling `config.token_url` with `http`.
    pub fn new(config: OAuthConfig, http: reqwest::Client) -> Self {
        TokenSource { config, http, cached: tokio::sync::Mutex::new(None), fetches: AtomicU64::new(0) }
    }

    /// How many times the token endpoint was called (metrics, tests).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// A valid access token, from the cache when it is not about to expire; `true` when it came
    /// from the cache (so a refusal may mean it was revoked or expired early).
    pub async fn token(&self) -> Result<(SecretString, bool), SignError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok((c.token.clone(), true));
        }
        let (token, lifetime) = self.fetch().await?;
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        *cached = Some(CachedToken { token: token.clone(), refresh_at: Instant::now() + lifetime - margin });
        Ok((token, false))
    }

    /// Drops `stale` from the cache (EJBCA refused it); a newer token someone else fetched stays.
    pub async fn invalidate(&self, stale: &SecretString) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token.expose_secret() == stale.expose_secret()) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<(SecretString, Duration), SignError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let c = &self.config;
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if !c.scopes.is_empty() {
                form.append_pair("scope", &c.scopes.join(" "));
            }
            if let Some(a) = &c.audience {
                form.append_pair("audience", a);
            }
            form.finish()
        };
        // client_secret_basic (RFC 6749 §2.3.1: servers MUST support it); the id and secret are
        // form-urlencoded before base64, as the RFC says.
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = Zeroizing::new(format!("{}:{}", enc(&c.client_id), enc(c.client_secret.expose_secret())));
        let auth = Zeroizing::new(format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, basic.as_bytes())
        ));
        let mut auth_value = reqwest::header::HeaderValue::from_str(&auth)
            .map_err(|_| SignError::issuer_not_ready("the OAuth client id or secret holds characters not allowed"))?;
        auth_value.set_sensitive(true);
        let resp = self
            .http
            .post(&c.token_url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::AUTHORIZATION, auth_value)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                SignError::transient(format!(
                    "OAuth token endpoint {}: {}",
                    c.token_url,
                    certbridge::http::describe(&e)
                ))
            })?;
        let status = resp.status();
        let bytes = certbridge::http::read_limited(reqwest::Body::from(resp), certbridge::http::BODY_LIMIT)
            .await
            .map_err(|e| SignError::transient(format!("OAuth token endpoint {}: {e}", c.token_url)))?;
        let parsed: Option<TokenResponse> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let detail = parsed
                .map(|p| {
                    format!(
                        "{}{}",
                        p.error.unwrap_or_default(),
                        p.error_description.map(|d| format!(": {d}")).unwrap_or_default()
                    )
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "no OAuth error body".into());
            let msg = format!(
                "OAuth token endpoint {} refused client {:?} with HTTP {}: {}",
                c.token_url,
                c.client_id,
                status.as_u16(),
                certbridge::redact(&detail, &[c.client_secret.expose_secret()])
            );
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                SignError::transient(msg)
            } else {
                SignError::issuer_not_ready(format!(
                    "{msg}: check clientId/clientSecret/scopes in the credentials Secret"
                ))
            });
        }
        let parsed = parsed.ok_or_else(|| {
            SignError::transient(format!("OAuth token endpoint {} answered with a body that is not JSON", c.token_url))
        })?;
        let token = parsed.access_token.filter(|t| !t.is_empty()).ok_or_else(|| {
            SignError::transient(format!("OAuth token endpoint {} answered without an access_token", c.token_url))
        })?;
        // Some providers send expires_in as a string.
        let lifetime = match parsed.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64().map(Duration::from_secs),
            Some(serde_json::Value::String(s)) => s.parse().ok().map(Duration::from_secs),
            _ => None,
        }
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok((SecretString::from(token), lifetime))
    }
}
