//! TPP's WebSDK wire protocol (vcert `pkg/venafi/tpp`, see `ca-protocols.md` §3.1 and §7.2) and
//! its token lifecycle.
//!
//! ## One login for the whole run
//! A [`TppClient`] is built once per issuer (and rebuilt only when the issuer's spec or Secrets
//! change). It holds one access token behind an async mutex, so concurrent requests wait for one
//! login instead of each logging in:
//! * `access-token`: verified once (`GET vedauth/authorize/verify`), then trusted until the expiry
//!   TPP reported; a 401 re-verifies once.
//! * `username`/`password`: `POST vedauth/authorize/oauth` (scope `certificate:manage`).
//! * `refresh-token`: `POST vedauth/authorize/token`.
//!
//! Tokens with a refresh token are refreshed with `vedauth/authorize/token` shortly before they
//! expire (a fifth of their lifetime, at most five minutes, early); a rotated refresh token is kept
//! in memory. A 401 to a call drops the token and retries the call once with a fresh one; a second
//! 401 is `AuthFailed`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use certbridge::{Resources, SignError};

use crate::http::{self, Answer, BODY_LIMIT, CHAIN_LIMIT, VenafiError};

/// cert-manager's default OAuth client id.
pub const DEFAULT_CLIENT_ID: &str = "cert-manager.io";
/// The scope asked for (cert-manager's).
pub const SCOPE: &str = "certificate:manage";
/// TPP's policy root.
pub const POLICY_ROOT: &str = "\\VED\\Policy";

/// `https://host[:port]/` from `spec.tpp.url` (a trailing `vedsdk` is stripped, as vcert does).
pub fn tpp_base_url(url: &str) -> Result<String, String> {
    let u = url.trim();
    let rest = match u.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => rest,
        _ => {
            return Err(format!(
                "spec.tpp.url {u:?} is not an https:// URL: TPP's WebSDK is served over https only, e.g. https://tpp.example.com/vedsdk"
            ));
        }
    };
    let mut path = rest.trim_end_matches('/');
    for suffix in ["/vedsdk", "/VEDSDK"] {
        if let Some(p) = path.strip_suffix(suffix) {
            path = p;
        }
    }
    let (authority, prefix) = path.split_once('/').unwrap_or((path, ""));
    if authority.is_empty() || authority.contains('@') || authority.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("spec.tpp.url {u:?} has no host: use e.g. https://tpp.example.com/vedsdk"));
    }
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    Ok(format!("https://{authority}/{prefix}"))
}

/// Decodes cert-manager's base64 `caBundle` into PEM text.
pub fn decode_ca_bundle(b64: &str) -> Result<String, String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("spec.tpp.caBundle is not base64 ({e}): it holds the base64 of a PEM bundle"))?;
    let text = String::from_utf8(bytes).map_err(|_| "spec.tpp.caBundle does not decode to PEM text".to_owned())?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err("spec.tpp.caBundle does not decode to a PEM certificate bundle".into());
    }
    Ok(text)
}

/// `\VED\Policy\<zone>` (the prefix is added when missing, as vcert's `getPolicyDN` does).
pub fn policy_dn(zone: &str) -> String {
    let z = zone.trim().trim_matches('\\');
    if z.len() >= POLICY_ROOT.len() - 1 && z[..POLICY_ROOT.len() - 1].eq_ignore_ascii_case(&POLICY_ROOT[1..]) {
        format!("\\{z}")
    } else {
        format!("{POLICY_ROOT}\\{z}")
    }
}

/// Credentials from the Secret named in `spec.tpp.credentialsRef`.
pub enum TppCredentials {
    /// A ready access token.
    AccessToken(Zeroizing<String>),
    /// Username and password for `vedauth/authorize/oauth`.
    Password {
        /// User.
        username: Zeroizing<String>,
        /// Password.
        password: Zeroizing<String>,
        /// OAuth client id.
        client_id: String,
    },
    /// A refresh token for `vedauth/authorize/token`.
    RefreshToken {
        /// The refresh token.
        token: Zeroizing<String>,
        /// OAuth client id.
        client_id: String,
    },
}

impl TppCredentials {
    /// Reads the Secret.
    pub async fn load(res: &Resources, secret: &str) -> Result<TppCredentials, SignError> {
        let data = res.secret(secret).await?;
        let text = |k: &str| -> Result<Option<Zeroizing<String>>, SignError> {
            match data.get(k) {
                None => Ok(None),
                Some(v) => std::str::from_utf8(v).map(|s| Some(Zeroizing::new(s.trim().to_owned()))).map_err(|_| {
                    SignError::issuer_not_ready(format!(
                        "Secret \"{}/{secret}\" key \"{k}\" is not UTF-8 text",
                        res.namespace()
                    ))
                }),
            }
        };
        let client_id = text("client-id")?.map(|c| c.to_string()).unwrap_or_else(|| DEFAULT_CLIENT_ID.into());
        let creds = match (text("access-token")?, text("username")?, text("password")?, text("refresh-token")?) {
            (Some(t), _, _, _) if !t.is_empty() => TppCredentials::AccessToken(t),
            (_, Some(u), Some(p), _) if !u.is_empty() => {
                TppCredentials::Password { username: u, password: p, client_id }
            }
            (_, _, _, Some(r)) if !r.is_empty() => TppCredentials::RefreshToken { token: r, client_id },
            (_, Some(_), None, _) => {
                return Err(SignError::issuer_not_ready(format!(
                    "Secret \"{}/{secret}\" has \"username\" but no \"password\": add it",
                    res.namespace()
                )));
            }
            _ => {
                return Err(SignError::issuer_not_ready(format!(
                    "Secret \"{}/{secret}\" has none of \"access-token\", \"username\"+\"password\", \"refresh-token\": add one",
                    res.namespace()
                )));
            }
        };
        Ok(creds)
    }

    /// `access-token`, `password` or `refresh-token`, for logs and messages.
    pub fn mode(&self) -> &'static str {
        match self {
            TppCredentials::AccessToken(_) => "access-token",
            TppCredentials::Password { .. } => "password",
            TppCredentials::RefreshToken { .. } => "refresh-token",
        }
    }
}

/// `vedauth/authorize/{oauth,token}` answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires: Option<i64>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    refresh_until: Option<i64>,
}

#[derive(Default)]
struct Tokens {
    access: Option<Zeroizing<String>>,
    /// When to stop using `access` (a little before it expires).
    renew_at: Option<Instant>,
    refresh: Option<Zeroizing<String>>,
    refresh_until: Option<Instant>,
    /// Access-token mode: verified once.
    verified: bool,
    /// Refresh tokens TPP rotated so far.
    rotations: u64,
    /// The last refresh tokens this lineage held (the Secret's first, then each rotation), to
    /// tell a Secret that still holds one of ours from one someone replaced.
    held: std::collections::VecDeque<Zeroizing<String>>,
}

/// How many past refresh tokens a lineage remembers.
const HELD: usize = 16;

impl Tokens {
    fn hold(&mut self, token: &Zeroizing<String>) {
        if self.held.len() == HELD {
            self.held.pop_front();
        }
        self.held.push_back(token.clone());
    }
}

/// Counters of token traffic (the benchmark's "logins per 1,000 certificates").
#[derive(Default, Debug)]
pub struct TokenCounters {
    /// `vedauth/authorize/oauth` calls.
    pub logins: AtomicU64,
    /// `vedauth/authorize/token` calls.
    pub refreshes: AtomicU64,
    /// `vedauth/authorize/verify` calls.
    pub verifies: AtomicU64,
}

/// A TPP WebSDK client for one issuer.
pub struct TppClient {
    base: String,
    http: reqwest::Client,
    creds: TppCredentials,
    secret: String,
    /// Shared with the issuer's next client when it logs in as the same identity (see
    /// [`TppClient::continue_from`]).
    tokens: std::sync::Arc<tokio::sync::Mutex<Tokens>>,
    /// Token traffic so far.
    pub counters: TokenCounters,
}

/// What `certificates/retrieve` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retrieved {
    /// The PEM bundle (leaf and chain, any order, CRLF normalized).
    Issued(String),
    /// Still being processed: TPP's status text.
    Pending(String),
}

/// A SAN of the request body (`Type`: 0 UPN, 1 email, 2 DNS, 6 URI, 7 IP).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct San {
    /// TPP's SAN type code.
    #[serde(rename = "Type")]
    pub type_: u8,
    /// The value.
    pub name: String,
}

/// A `{Name, Value}` pair.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NameValue {
    /// Attribute name.
    pub name: String,
    /// Attribute value.
    pub value: String,
}

/// A `{Name, Values}` custom field.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomFieldBody {
    /// Field label.
    pub name: String,
    /// Values.
    pub values: Vec<String>,
}

/// `certificates/request` body, as vcert's `prepareRequest` builds it for a user CSR.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestBody {
    /// `\VED\Policy\<zone>`.
    #[serde(rename = "PolicyDN")]
    pub policy_dn: String,
    /// The certificate object's name.
    pub object_name: String,
    /// The CSR (PEM).
    #[serde(rename = "PKCS10")]
    pub pkcs10: String,
    /// SANs.
    pub subject_alt_names: Vec<San>,
    /// Origin and end-date attributes.
    #[serde(rename = "CASpecificAttributes")]
    pub ca_specific_attributes: Vec<NameValue>,
    /// Who asked.
    pub origin: String,
    /// `RSA` or `ECC`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_algorithm: Option<String>,
    /// RSA size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_bit_size: Option<u32>,
    /// ECC curve (`P256`, `P384`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elliptic_curve: Option<String>,
    /// Custom fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub custom_fields: Vec<CustomFieldBody>,
    /// cert-manager renews, not TPP.
    pub disable_automatic_renewal: bool,
    /// `AUTO`.
    pub certificate_type: String,
    /// Re-enable a disabled object of the same name.
    pub reenable: bool,
}

impl TppClient {
    /// A client for `base` (see [`tpp_base_url`]) trusting `ca_bundle_pem` or the system roots.
    pub fn new(
        base: String,
        creds: TppCredentials,
        secret: String,
        ca_bundle_pem: Option<&str>,
        timeout: Duration,
    ) -> Result<TppClient, SignError> {
        let http = http::client(timeout, ca_bundle_pem, "the TPP CA bundle")?;
        let mut tokens = Tokens::default();
        if let TppCredentials::RefreshToken { token, .. } = &creds {
            tokens.refresh = Some(token.clone());
            tokens.hold(token);
        }
        Ok(TppClient {
            base,
            http,
            creds,
            secret,
            tokens: std::sync::Arc::new(tokio::sync::Mutex::new(tokens)),
            counters: TokenCounters::default(),
        })
    }

    /// The credential mode.
    pub fn mode(&self) -> &'static str {
        self.creds.mode()
    }

    /// The refresh token held now and how many times TPP rotated it (for writing it back to the
    /// Secret with `tpp.persistRefreshedToken`).
    pub async fn refresh_token(&self) -> (Option<Zeroizing<String>>, u64) {
        let st = self.tokens.lock().await;
        (st.refresh.clone(), st.rotations)
    }

    /// Continues `previous`'s tokens instead of starting anew, when this client (built for a new
    /// generation of the issuer, or after a change to one of its Secrets) logs in as the same
    /// identity at the same TPP: the same `access-token`, or `username`/`password`/`client-id`, or
    /// a `refresh-token` that `previous`'s lineage already held — the Secret still has the token
    /// the previous client started from or wrote back, which TPP may have rotated away since, so
    /// starting from it would fail. A refresh token the lineage never held was put there by
    /// someone: it is used, not overridden. Returns whether the tokens are shared now.
    pub async fn continue_from(&mut self, previous: &TppClient) -> bool {
        if self.base != previous.base {
            return false;
        }
        let same = match (&self.creds, &previous.creds) {
            (TppCredentials::AccessToken(a), TppCredentials::AccessToken(b)) => a == b,
            (
                TppCredentials::Password { username: u1, password: p1, client_id: c1 },
                TppCredentials::Password { username: u2, password: p2, client_id: c2 },
            ) => u1 == u2 && p1 == p2 && c1 == c2,
            (
                TppCredentials::RefreshToken { token, client_id: c1 },
                TppCredentials::RefreshToken { client_id: c2, .. },
            ) => c1 == c2 && previous.tokens.lock().await.held.iter().any(|h| h == token),
            _ => false,
        };
        if same {
            self.tokens = previous.tokens.clone();
        }
        same
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn secrets(&self) -> Vec<String> {
        match &self.creds {
            TppCredentials::AccessToken(t) => vec![t.to_string()],
            TppCredentials::Password { password, .. } => vec![password.to_string()],
            TppCredentials::RefreshToken { token, .. } => vec![token.to_string()],
        }
    }

    fn auth_failed(&self, what: &str) -> VenafiError {
        VenafiError::Auth(SignError::issuer_not_ready(format!(
            "AuthFailed: {what}: fix the credentials in Secret {:?} (spec.tpp.credentialsRef)",
            self.secret
        )))
    }

    /// A valid access token: cached, refreshed, or from a new login.
    pub async fn token(&self) -> Result<Zeroizing<String>, VenafiError> {
        let mut st = self.tokens.lock().await;
        let now = Instant::now();
        if let (Some(a), Some(at)) = (&st.access, st.renew_at)
            && now < at
        {
            return Ok(a.clone());
        }
        if let TppCredentials::AccessToken(t) = &self.creds {
            if st.verified && st.access.is_some() {
                return Err(self.auth_failed("the access-token has expired (TPP's verify reported its expiry)"));
            }
            let expires = self.verify_token(t).await?;
            st.access = Some(t.clone());
            st.renew_at = Some(expires);
            st.verified = true;
            return Ok(t.clone());
        }
        // Refresh when a refresh token is still good; fall back to a login with a password.
        if let Some(r) = st.refresh.clone().filter(|_| st.refresh_until.is_none_or(|u| now < u)) {
            let client_id = match &self.creds {
                TppCredentials::Password { client_id, .. } | TppCredentials::RefreshToken { client_id, .. } => {
                    client_id
                }
                TppCredentials::AccessToken(_) => DEFAULT_CLIENT_ID,
            };
            self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
            let body =
                Zeroizing::new(serde_json::json!({ "client_id": client_id, "refresh_token": r.as_str() }).to_string());
            let a = self.post_raw("vedauth/authorize/token", &body).await?;
            match a.status {
                200 => return self.store(&mut st, &a),
                400 | 401 if matches!(self.creds, TppCredentials::Password { .. }) => {
                    tracing::info!(status = a.status, "TPP refused the refresh token; logging in again");
                }
                400 | 401 => {
                    let text = http::error_text(&a, &[r.as_str()]);
                    return Err(self.auth_failed(&format!("TPP refused the refresh token ({text})")));
                }
                _ => return Err(VenafiError::Http { status: a.status, message: http::error_text(&a, &[r.as_str()]) }),
            }
        }
        match &self.creds {
            TppCredentials::Password { username, password, client_id } => {
                self.counters.logins.fetch_add(1, Ordering::Relaxed);
                let body = Zeroizing::new(
                    serde_json::json!({
                        "client_id": client_id, "username": username.as_str(),
                        "password": password.as_str(), "scope": SCOPE,
                    })
                    .to_string(),
                );
                let a = self.post_raw("vedauth/authorize/oauth", &body).await?;
                match a.status {
                    200 => self.store(&mut st, &a),
                    400 | 401 | 403 => {
                        let text = http::error_text(&a, &[password.as_str()]);
                        Err(self.auth_failed(&format!("TPP refused username {:?} ({text})", username.as_str())))
                    }
                    _ => {
                        Err(VenafiError::Http { status: a.status, message: http::error_text(&a, &[password.as_str()]) })
                    }
                }
            }
            _ => Err(self.auth_failed("the refresh token has expired (past TPP's refresh_until)")),
        }
    }

    fn store(&self, st: &mut Tokens, a: &Answer) -> Result<Zeroizing<String>, VenafiError> {
        let t: TokenAnswer = http::json(a, &[200], &[])?;
        let now_unix = jiff::Timestamp::now().as_second();
        let lifetime = t
            .expires_in
            .or(t.expires.map(|e| e - now_unix))
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(Duration::from_secs(3600));
        let early = (lifetime / 5).min(Duration::from_secs(300));
        let now = Instant::now();
        let token = Zeroizing::new(t.access_token);
        st.access = Some(token.clone());
        st.renew_at = Some(now + lifetime - early);
        if let Some(r) = t.refresh_token.filter(|r| !r.is_empty()) {
            let r = Zeroizing::new(r);
            if st.refresh.as_deref().map(String::as_str) != Some(r.as_str()) {
                st.rotations += 1;
                st.hold(&r);
            }
            st.refresh = Some(r);
            st.refresh_until = t.refresh_until.map(|u| {
                now + Duration::from_secs((u - now_unix).max(0) as u64).saturating_sub(Duration::from_secs(30))
            });
        }
        Ok(token)
    }

    /// `GET vedauth/authorize/verify` with `token`: when to stop trusting it.
    async fn verify_token(&self, token: &str) -> Result<Instant, VenafiError> {
        self.counters.verifies.fetch_add(1, Ordering::Relaxed);
        let rb = self.http.get(self.url("vedauth/authorize/verify")).bearer_auth(token);
        let a = http::send(rb, BODY_LIMIT, &[token]).await?;
        match a.status {
            200 => {
                let v: Value = http::json(&a, &[200], &[token])?;
                let now = jiff::Timestamp::now();
                let left = v
                    .get("expires_ISO8601")
                    .and_then(|e| e.as_str())
                    .and_then(|e| e.parse::<jiff::Timestamp>().ok())
                    .map(|e| (e.as_second() - now.as_second()).max(0) as u64)
                    .or_else(|| v.get("valid_for").and_then(Value::as_u64))
                    .unwrap_or(3600);
                if left == 0 {
                    return Err(self.auth_failed("the access-token has expired"));
                }
                Ok(Instant::now() + Duration::from_secs(left))
            }
            401 | 403 => {
                let text = http::error_text(&a, &[token]);
                Err(self.auth_failed(&format!("TPP refused the access-token ({text})")))
            }
            s => Err(VenafiError::Http { status: s, message: http::error_text(&a, &[token]) }),
        }
    }

    /// Verifies the current token (`vedauth/authorize/verify`; the issuer check).
    pub async fn verify(&self) -> Result<(), VenafiError> {
        let t = self.token().await?;
        if matches!(self.creds, TppCredentials::AccessToken(_)) {
            return Ok(()); // token() verified it (once); verifying again proves nothing new.
        }
        match self.verify_token(&t).await {
            Err(VenafiError::Auth(_)) => {
                self.invalidate(&t).await;
                let t = self.token().await?;
                self.verify_token(&t).await.map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    async fn invalidate(&self, token: &str) {
        let mut st = self.tokens.lock().await;
        if st.access.as_deref().map(String::as_str) == Some(token) {
            st.access = None;
            st.renew_at = None;
            st.verified = false;
        }
    }

    async fn post_raw(&self, path: &str, body: &str) -> Result<Answer, VenafiError> {
        let secrets = self.secrets();
        let s: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let rb = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        http::send(rb, BODY_LIMIT, &s).await
    }

    /// POSTs `body` to a WebSDK resource with the bearer token; a 401 drops the token and
    /// retries once with a fresh one, a second 401 is `AuthFailed`.
    pub async fn post(&self, path: &str, body: &Value, limit: usize) -> Result<Answer, VenafiError> {
        let text = body.to_string();
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let rb = self
                .http
                .post(self.url(path))
                .bearer_auth(token.as_str())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::CACHE_CONTROL, "no-cache")
                .body(text.clone());
            let a = http::send(rb, limit, &[token.as_str()]).await?;
            if a.status == 401 {
                if !retried {
                    self.invalidate(&token).await;
                    retried = true;
                    continue;
                }
                let msg = http::error_text(&a, &[token.as_str()]);
                return Err(self.auth_failed(&format!("TPP answered 401 to a fresh token ({msg})")));
            }
            return Ok(a);
        }
    }

    /// `POST vedsdk/certificates/checkpolicy`: the zone's policy.
    pub async fn check_policy(&self, zone: &str) -> Result<Value, VenafiError> {
        let a = self
            .post("vedsdk/certificates/checkpolicy", &serde_json::json!({ "PolicyDN": policy_dn(zone) }), BODY_LIMIT)
            .await?;
        check_policy_answer(&a)
    }

    /// `POST vedsdk/certificates/request`: the pickup ID (CertificateDN). 200/201, and 202 with a
    /// `CertificateDN` (WorkToDoTimeout passed), all give one.
    pub async fn request(&self, body: &RequestBody) -> Result<String, VenafiError> {
        let v = serde_json::to_value(body).map_err(|e| VenafiError::BadBody(format!("encoding the request: {e}")))?;
        let a = self.post("vedsdk/certificates/request", &v, BODY_LIMIT).await?;
        request_answer(&a)
    }

    /// `POST vedsdk/certificates/retrieve` (base64, chain included, root last).
    pub async fn retrieve(&self, dn: &str) -> Result<Retrieved, VenafiError> {
        let body = serde_json::json!({ "CertificateDN": dn, "Format": "base64", "IncludeChain": true });
        let a = self.post("vedsdk/certificates/retrieve", &body, CHAIN_LIMIT).await?;
        retrieve_answer(&a)
    }

    /// `POST vedsdk/certificates/reset`; "no reset is required" and "does not exist" are fine.
    pub async fn reset(&self, dn: &str) -> Result<(), VenafiError> {
        let a = self.post("vedsdk/certificates/reset", &serde_json::json!({ "CertificateDN": dn }), BODY_LIMIT).await?;
        match a.status {
            200 => Ok(()),
            400 => {
                let text = http::error_text(&a, &[]);
                if text.contains("No reset is required")
                    || text.contains("does not exist or you do not have sufficient rights to the object")
                {
                    Ok(())
                } else {
                    Err(VenafiError::Http { status: 400, message: text })
                }
            }
            s => Err(VenafiError::Http { status: s, message: http::error_text(&a, &[]) }),
        }
    }
}

// The answer readers below are free functions, `#[doc(hidden)] pub` only so that the fuzz
// target `venafi_response` (fuzz/src/targets.rs) can feed them arbitrary answers.

/// `certificates/checkpolicy`'s answer: the policy, or TPP's `Error`.
#[doc(hidden)]
pub fn check_policy_answer(a: &Answer) -> Result<Value, VenafiError> {
    let v: Value = http::json(a, &[200], &[])?;
    match v.get("Error").and_then(Value::as_str).filter(|e| !e.is_empty()) {
        Some(e) => Err(VenafiError::Http { status: 400, message: e.to_owned() }),
        None => Ok(v),
    }
}

/// `certificates/request`'s answer: the pickup ID (CertificateDN).
#[doc(hidden)]
pub fn request_answer(a: &Answer) -> Result<String, VenafiError> {
    if !matches!(a.status, 200..=202) {
        return Err(VenafiError::Http { status: a.status, message: http::error_text(a, &[]) });
    }
    let v: Value = http::json(a, &[a.status], &[])?;
    match v.get("CertificateDN").and_then(Value::as_str).filter(|d| !d.is_empty()) {
        Some(dn) => Ok(dn.to_owned()),
        None => Err(VenafiError::Http {
            status: a.status,
            message: http::error_text(a, &[]).replace("(empty body)", "no CertificateDN in the answer"),
        }),
    }
}

/// `certificates/retrieve`'s answer: the PEM bundle, or still pending.
#[doc(hidden)]
pub fn retrieve_answer(a: &Answer) -> Result<Retrieved, VenafiError> {
    let pending_text = |a: &Answer| {
        let v: Option<Value> = serde_json::from_slice(&a.body).ok();
        let status = v.as_ref().and_then(|v| v.get("Status")).and_then(Value::as_str).map(str::to_owned);
        a.reason.clone().or(status).unwrap_or_else(|| "being processed".into())
    };
    match a.status {
        202 => Ok(Retrieved::Pending(pending_text(a))),
        200 => {
            let v: Value = http::json(a, &[200], &[])?;
            let data = v.get("CertificateData").and_then(Value::as_str).unwrap_or_default();
            if data.is_empty() {
                return Ok(Retrieved::Pending(pending_text(a)));
            }
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| VenafiError::BadBody(format!("CertificateData is not base64: {e}")))?;
            let text =
                String::from_utf8(bytes).map_err(|_| VenafiError::BadBody("CertificateData is not PEM text".into()))?;
            Ok(Retrieved::Issued(text.replace("\r\n", "\n")))
        }
        s => Err(VenafiError::Http { status: s, message: http::error_text(a, &[]) }),
    }
}

/// What an error means for a request (the classification table, one row per arm, tested row by row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Try again later (timeouts, resets, 408, 429, 5xx).
    Transient,
    /// Credentials refused (401 after one refresh, 403).
    AuthFailed,
    /// `PolicyDN: ... does not exist`.
    ZoneNotFound,
    /// "... click Retry": reset the object and request once more.
    ClickRetry,
    /// Never succeeds as it is; the optional fix is appended to the message.
    Failed(Option<&'static str>),
}

/// The classification table.
pub fn classify(err: &VenafiError) -> Verdict {
    let (status, message) = match err {
        VenafiError::Transport(_) | VenafiError::BadBody(_) => return Verdict::Transient,
        VenafiError::Auth(_) => return Verdict::AuthFailed,
        VenafiError::Http { status, message } => (*status, message.as_str()),
    };
    let lower = message.to_ascii_lowercase();
    if lower.contains("click retry") {
        return Verdict::ClickRetry;
    }
    match status {
        401 | 403 => Verdict::AuthFailed,
        400 if lower.contains("policydn") && lower.contains("does not exist") => Verdict::ZoneNotFound,
        400..=500 if lower.contains("reuse a private key") => Verdict::Failed(Some(
            "use a new private key for each request (Certificate spec.privateKey.rotationPolicy: Always) or allow key reuse in the TPP policy",
        )),
        400..=500 if lower.contains("dn is empty") => Verdict::Failed(Some(
            "give the Certificate a commonName or a DNS name: TPP names the certificate object after it",
        )),
        500 if lower.contains("failed with error") => Verdict::Failed(None),
        408 | 429 => Verdict::Transient,
        400..=499 => Verdict::Failed(None),
        _ => Verdict::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_policy_dns() {
        assert_eq!(tpp_base_url("https://tpp.example.com/vedsdk").unwrap(), "https://tpp.example.com/");
        assert_eq!(tpp_base_url("https://tpp.example.com:8443/vedsdk/").unwrap(), "https://tpp.example.com:8443/");
        assert_eq!(tpp_base_url("https://tpp.example.com").unwrap(), "https://tpp.example.com/");
        assert_eq!(tpp_base_url("https://h/prefix/vedsdk").unwrap(), "https://h/prefix/");
        assert!(tpp_base_url("http://tpp.example.com/vedsdk").unwrap_err().contains("spec.tpp.url"));
        assert_eq!(policy_dn("Certificates\\K8s"), "\\VED\\Policy\\Certificates\\K8s");
        assert_eq!(policy_dn("\\VED\\Policy\\Certificates\\K8s"), "\\VED\\Policy\\Certificates\\K8s");
        assert_eq!(policy_dn("VED\\Policy\\A"), "\\VED\\Policy\\A");
    }

    /// One row per line: (status or transport, Venafi's text) → verdict.
    #[test]
    fn classification_table_row_by_row() {
        let http = |status, m: &str| VenafiError::Http { status, message: m.into() };
        let rows: Vec<(VenafiError, Verdict)> = vec![
            (VenafiError::Transport("timed out".into()), Verdict::Transient),
            (VenafiError::Transport("connection reset".into()), Verdict::Transient),
            (VenafiError::BadBody("not JSON".into()), Verdict::Transient),
            (VenafiError::Auth(SignError::issuer_not_ready("x")), Verdict::AuthFailed),
            (http(401, "invalid_token: Invalid token format"), Verdict::AuthFailed),
            (http(403, "insufficient_scope: Grant rejected scope"), Verdict::AuthFailed),
            (http(400, "PolicyDN: \\VED\\Policy\\Nope does not exist"), Verdict::ZoneNotFound),
            (
                http(400, "This CSR appears to reuse a private key.  Private key reuse has not been allowed."),
                Verdict::Failed(Some("")),
            ),
            (
                http(500, "WebSDK CertRequest Module Requested Certificate: Request DN is empty"),
                Verdict::Failed(Some("")),
            ),
            (
                http(500, "Post CSR failed with error: Cannot connect to the certificate authority"),
                Verdict::Failed(None),
            ),
            (
                http(
                    500,
                    "This certificate cannot be processed while it is in an error state. Fix any errors, and then click Retry.",
                ),
                Verdict::ClickRetry,
            ),
            (http(400, "Certificate \\VED\\Policy\\A\\b does not exist."), Verdict::Failed(None)),
            (http(404, "Not Found"), Verdict::Failed(None)),
            (http(408, "Request Timeout"), Verdict::Transient),
            (http(429, "Too Many Requests"), Verdict::Transient),
            (http(500, "Internal Server Error"), Verdict::Transient),
            (http(502, "Bad Gateway"), Verdict::Transient),
            (http(503, "Service Unavailable"), Verdict::Transient),
        ];
        for (err, want) in rows {
            let got = classify(&err);
            let same = match (&got, &want) {
                (Verdict::Failed(a), Verdict::Failed(b)) => a.is_some() == b.is_some(),
                (a, b) => a == b,
            };
            assert!(same, "{err}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn ca_bundle_is_base64_pem() {
        assert!(decode_ca_bundle("!!").unwrap_err().contains("not base64"));
        let pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(pem);
        assert_eq!(decode_ca_bundle(&b).unwrap(), pem);
    }
}
