//! EJBCA's REST wire protocol (`/ejbca/ejbca-rest-api/v1/...`), as the vendored OpenAPI spec
//! (`spec/ejbca-rest-openapi.yaml`) and EJBCA's own resource code describe it:
//!
//! * `POST /v1/certificate/pkcs10enroll` → `201` with base64-DER `certificate` and the CA chain
//!   *without the leaf* in `certificate_chain`; `202 {"status_code","info_message"}` when an
//!   administrator must approve first.
//! * `POST /v1/certificate/search`, `GET /v1/ca`, `GET /v1/ca/{subject_dn}/certificate/download`,
//!   `POST /v1/certificate/{request_id}/finalize` — used to resume a request after a restart.
//! * `GET /v1/certificate/status` — the health check.
//! * Errors are `{"error_code": <status>, "error_message": "..."}`.
//!
//! This module knows HTTP and JSON; what an answer means for a certificate request is decided in
//! [`crate::signer`] through [`EjbcaError::to_sign_error`].

use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use certbridge::{SignError, redact};

use crate::auth::{Credentials, TokenSource};
use certbridge::http::describe;

/// Where EJBCA serves its REST API on every host.
pub const BASE_PATH: &str = "/ejbca/ejbca-rest-api";

/// `https://<host[:port]>/ejbca/ejbca-rest-api` from `spec.hostname` (a host, `host:port` or an
/// `https://` URL whose path is ignored, as Keyfactor's client does).
pub fn base_url(hostname: &str) -> Result<String, String> {
    let h = hostname.trim();
    let rest = match h.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "spec.hostname {h:?} uses scheme {scheme:?}: EJBCA's REST API is served over https only; use a host name or an https:// URL"
            ));
        }
        None => h,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "spec.hostname {h:?} is not a host name: use e.g. ejbca.example.com, ejbca.example.com:8443 or https://ejbca.example.com"
        ));
    }
    Ok(format!("https://{authority}{BASE_PATH}"))
}

/// Characters escaped in a path segment (a CA subject DN holds `=`, `,` and spaces).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// What went wrong talking to EJBCA.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EjbcaError {
    /// No HTTP answer: connect failure, reset, timeout, TLS failure.
    #[error("{0}")]
    Transport(String),
    /// EJBCA answered with an error status.
    #[error("HTTP {status}: {message}{}", code.map(|c| format!(" (error_code {c})")).unwrap_or_default())]
    Http {
        /// HTTP status.
        status: u16,
        /// `error_code` from the body, if it had one.
        code: Option<i64>,
        /// `error_message` from the body, verbatim minus secrets; or a description of the body.
        message: String,
    },
    /// A success status whose body is not what the API documents.
    #[error("{0}")]
    BadBody(String),
    /// The token endpoint failed (already classified).
    #[error("{0}")]
    Auth(SignError),
}

impl EjbcaError {
    /// The controller's reaction to this error during `op` (e.g. `"enroll"`): 400/403/404/409/413/422
    /// and other client errors are permanent, 401 (after one token refresh) means the issuer's
    /// credentials are refused, 429/5xx, transport failures and unreadable bodies are transient.
    pub fn to_sign_error(&self, op: &str) -> SignError {
        let msg = format!("EJBCA {op}: {self}");
        match self {
            EjbcaError::Transport(_) | EjbcaError::BadBody(_) => SignError::transient(msg),
            EjbcaError::Auth(e) => e.clone().context(format!("EJBCA {op}")),
            // EJBCA wraps a CA-offline exception raised inside enrollment into a 400 with the
            // cause's message (CertificateRestResource.enrollPkcs10Certificate): still transient.
            EjbcaError::Http { status: 400, message, .. } if message.to_ascii_lowercase().contains("offline") => {
                SignError::transient(msg)
            }
            EjbcaError::Http { status, .. } => match status {
                401 => {
                    SignError::issuer_not_ready(format!("{msg}: the credentials in spec.ejbcaSecretName are refused"))
                }
                408 | 429 => SignError::transient(msg),
                500..=599 => SignError::transient(msg),
                _ => SignError::permanent(msg),
            },
        }
    }

    /// The HTTP status, if EJBCA answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            EjbcaError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The pkcs10enroll request body (EJBCA's `EnrollCertificateRestRequest`, snake_case).
#[derive(Serialize)]
pub struct EnrollRequest<'a> {
    /// PEM CSR, as the user sent it.
    pub certificate_request: &'a str,
    /// Certificate profile name.
    pub certificate_profile_name: &'a str,
    /// End-entity profile name.
    pub end_entity_profile_name: &'a str,
    /// CA name.
    pub certificate_authority_name: &'a str,
    /// End-entity name.
    pub username: &'a str,
    /// End-entity enrollment code: random, new every call, never logged.
    pub password: &'a str,
    /// Ask for the CA chain (it comes back without the leaf).
    pub include_chain: bool,
    /// `DER`: base64 DER certificates. Sent explicitly because EJBCA rejects a null format.
    pub response_format: &'static str,
    /// Requested notAfter, UTC `YYYY-MM-DD HH:MM:SS` (EJBCA ≥ 9.3.3 with "Allow Validity Override").
    pub end_time: String,
}

impl std::fmt::Debug for EnrollRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("certificate_profile_name", &self.certificate_profile_name)
            .field("end_entity_profile_name", &self.end_entity_profile_name)
            .field("certificate_authority_name", &self.certificate_authority_name)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("end_time", &self.end_time)
            .finish_non_exhaustive()
    }
}

/// EJBCA's `CertificateRestResponse`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default)]
pub struct CertificateResponse {
    /// base64 DER (format `DER`) or PEM (legacy `PEM`).
    #[serde(default)]
    pub certificate: Option<String>,
    /// Upper-case hex serial.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// `DER`, `PKCS7` or `PEM`.
    #[serde(default)]
    pub response_format: Option<String>,
    /// CA certificates (not the leaf), same encoding as `certificate`.
    #[serde(default)]
    pub certificate_chain: Option<Vec<String>>,
}

impl CertificateResponse {
    /// The leaf and the chain as DER, decoded according to `response_format`.
    pub fn decode(&self) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
        let format = self.response_format.as_deref().unwrap_or("DER");
        let one = |s: &str| -> Result<Vec<Vec<u8>>, String> {
            match format {
                "DER" => base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s.trim())
                    .map(|d| vec![d])
                    .map_err(|e| format!("a DER certificate is not valid base64: {e}")),
                "PEM" => pem::parse_many(s)
                    .map_err(|e| format!("a PEM certificate does not parse: {e}"))
                    .map(|v| v.into_iter().filter(|p| p.tag() == "CERTIFICATE").map(pem::Pem::into_contents).collect()),
                other => Err(format!("EJBCA returned unsupported certificate format {other:?} (asked for DER)")),
            }
        };
        let leaf = one(self.certificate.as_deref().ok_or("the answer has no certificate")?)?
            .into_iter()
            .next()
            .ok_or("the answer's certificate is empty")?;
        let mut chain = Vec::new();
        for c in self.certificate_chain.iter().flatten() {
            chain.extend(one(c)?);
        }
        Ok((leaf, chain))
    }
}

/// What an enrollment call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// `201`: the certificate.
    Issued(CertificateResponse),
    /// `202`: waiting for an EJBCA administrator's approval.
    Pending {
        /// `info_message`, verbatim.
        message: String,
        /// The approval request id, when the message names one (`... Id '123' ...`).
        approval_id: Option<i32>,
    },
}

/// One CA from `GET /v1/ca`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct CaInfo {
    /// CA id.
    #[serde(default)]
    pub id: Option<i64>,
    /// CA name.
    pub name: String,
    /// Subject DN.
    #[serde(default)]
    pub subject_dn: Option<String>,
    /// Issuer DN.
    #[serde(default)]
    pub issuer_dn: Option<String>,
}

#[derive(Deserialize)]
struct CaList {
    #[serde(default)]
    certificate_authorities: Vec<CaInfo>,
}

/// `GET /v1/certificate/status` answer.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ResourceStatus {
    /// `OK` when the resource works.
    #[serde(default)]
    pub status: Option<String>,
    /// API version.
    #[serde(default)]
    pub version: Option<String>,
    /// EJBCA product and version.
    #[serde(default)]
    pub revision: Option<String>,
}

#[derive(Deserialize)]
struct SearchResponse {
    #[serde(default)]
    certificates: Vec<CertificateResponse>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    error_message: Option<String>,
}

#[derive(Deserialize)]
struct InfoBody {
    info_message: Option<String>,
}

enum Auth {
    Mtls,
    OAuth(TokenSource),
}

/// A client for one EJBCA instance with one set of credentials. Cheap to share (`Arc`).
pub struct EjbcaClient {
    base: String,
    http: reqwest::Client,
    auth: Auth,
}

impl EjbcaClient {
    /// A client for `base` (see [`base_url`]) trusting `ca_bundle_pem` (or the system roots).
    pub fn new(
        base: String,
        credentials: Credentials,
        ca_bundle_pem: Option<&str>,
        timeout: Duration,
    ) -> Result<EjbcaClient, SignError> {
        let roots = match ca_bundle_pem {
            Some(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                    SignError::issuer_not_ready(format!("spec.caBundle does not hold PEM certificates: {e}"))
                })?;
                if certs.is_empty() {
                    return Err(SignError::issuer_not_ready("spec.caBundle holds no PEM certificate"));
                }
                Some(certs)
            }
            None => None,
        };
        let builder = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .pool_idle_timeout(Duration::from_secs(60))
                .http1_max_headers(certbridge::http::MAX_RESPONSE_HEADERS)
                .http2_max_header_list_size(certbridge::http::MAX_HEADER_LIST_BYTES)
                .https_only(true)
                .user_agent(concat!("certbridge-ejbca/", env!("CARGO_PKG_VERSION")))
        };
        let (http, auth) = match credentials {
            Credentials::Mtls { identity_pem } => {
                let identity = reqwest::Identity::from_pem(&identity_pem).map_err(|_| {
                    SignError::issuer_not_ready(
                        "the client certificate in spec.ejbcaSecretName (tls.crt/tls.key) does not load: check that tls.key is the key of tls.crt, in PEM",
                    )
                })?;
                let mut b = builder().identity(identity);
                if let Some(r) = &roots {
                    b = b.tls_certs_only(r.clone());
                }
                (b.build().map_err(|e| SignError::issuer_not_ready(format!("HTTP client: {e}")))?, Auth::Mtls)
            }
            Credentials::OAuth2(config) => {
                let mut b = builder();
                if let Some(r) = &roots {
                    b = b.tls_certs_only(r.clone());
                }
                let http = b.build().map_err(|e| SignError::issuer_not_ready(format!("HTTP client: {e}")))?;
                // The token endpoint is often another host with a public certificate: trust the
                // system roots plus the bundle there.
                let mut tb = builder();
                if let Some(r) = &roots {
                    tb = tb.tls_certs_merge(r.clone());
                }
                let token_http = tb.build().map_err(|e| SignError::issuer_not_ready(format!("HTTP client: {e}")))?;
                (http, Auth::OAuth(TokenSource::new(config, token_http)))
            }
        };
        Ok(EjbcaClient { base, http, auth })
    }

    /// Token endpoint calls so far (0 for mTLS).
    pub fn token_fetches(&self) -> u64 {
        match &self.auth {
            Auth::OAuth(t) => t.fetch_count(),
            Auth::Mtls => 0,
        }
    }

    /// Sends one request (built by `build`, so it can be rebuilt), with a bearer token when
    /// OAuth is used; on 401 the token is dropped and the request sent once more with a new one.
    /// Returns the status and body; transport failures are errors, statuses are not.
    async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        secrets: &[&str],
    ) -> Result<(u16, bytes_like::Body), EjbcaError> {
        let mut retried = false;
        loop {
            let mut rb = build(&self.http).header(reqwest::header::ACCEPT, "application/json");
            let (token, cached) = match &self.auth {
                Auth::OAuth(ts) => {
                    let (t, cached) = ts.token().await.map_err(EjbcaError::Auth)?;
                    (Some(t), cached)
                }
                Auth::Mtls => (None, false),
            };
            if let Some(t) = &token {
                let mut v =
                    reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.expose_secret())).map_err(|_| {
                        EjbcaError::BadBody("the OAuth access token holds characters not allowed in a header".into())
                    })?;
                v.set_sensitive(true);
                rb = rb.header(reqwest::header::AUTHORIZATION, v);
            }
            let resp = rb.send().await.map_err(|e| EjbcaError::Transport(redact(&describe(&e), secrets)))?;
            let status = resp.status().as_u16();
            // 401 is what OAuth resource servers answer for a bad token; EJBCA's exception mapper
            // answers authentication failures with 403, so a 403 to a *cached* token is treated
            // the same (a 403 to a fresh token is an authorization problem and stands).
            if (status == 401 || (status == 403 && cached))
                && !retried
                && let (Auth::OAuth(ts), Some(t)) = (&self.auth, &token)
            {
                // The token expired early or was revoked: one fresh token, one more try. Nothing
                // happened at EJBCA for a request that was not authenticated.
                ts.invalidate(t).await;
                retried = true;
                continue;
            }
            // Bounded: answers carry at most a certificate chain or a search page.
            let body = certbridge::http::read_limited(reqwest::Body::from(resp), certbridge::http::CHAIN_BODY_LIMIT)
                .await
                .map_err(|e| EjbcaError::Transport(redact(&e.to_string(), secrets)))?;
            return Ok((status, bytes_like::Body(body.to_vec())));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `GET /v1/certificate/status`.
    pub async fn status(&self) -> Result<ResourceStatus, EjbcaError> {
        let (status, body) = self.send(|c| c.get(self.url("/v1/certificate/status")), &[]).await?;
        expect_json(status, &body, &[200], &[])
    }

    /// `GET /v1/ca`: the CAs the credentials may see.
    pub async fn list_cas(&self) -> Result<Vec<CaInfo>, EjbcaError> {
        let (status, body) = self.send(|c| c.get(self.url("/v1/ca")), &[]).await?;
        Ok(expect_json::<CaList>(status, &body, &[200], &[])?.certificate_authorities)
    }

    /// `GET /v1/ca/{subject_dn}/certificate/download`: the CA's chain as PEM.
    pub async fn ca_chain_pem(&self, subject_dn: &str) -> Result<String, EjbcaError> {
        let path = format!("/v1/ca/{}/certificate/download", utf8_percent_encode(subject_dn, SEGMENT));
        let (status, body) = self.send(|c| c.get(self.url(&path)), &[]).await?;
        if status != 200 {
            return Err(http_error(status, &body, &[]));
        }
        String::from_utf8(body.0).map_err(|_| EjbcaError::BadBody("the CA chain download is not PEM text".into()))
    }

    /// `POST /v1/certificate/pkcs10enroll`.
    pub async fn enroll(&self, req: &EnrollRequest<'_>) -> Result<EnrollOutcome, EjbcaError> {
        let body = serde_json::to_vec(req).map_err(|e| EjbcaError::BadBody(format!("encoding the request: {e}")))?;
        let body = Zeroizing::new(body);
        let (status, resp) = self
            .send(
                |c| {
                    c.post(self.url("/v1/certificate/pkcs10enroll"))
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.to_vec())
                },
                &[req.password],
            )
            .await?;
        enroll_outcome(status, &resp, &[req.password])
    }

    /// `POST /v1/certificate/{request_id}/finalize` for a user-generated key after approval.
    pub async fn finalize(&self, request_id: i32, password: &str) -> Result<EnrollOutcome, EjbcaError> {
        let body = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({ "response_format": "DER", "password": password }))
                .map_err(|e| EjbcaError::BadBody(format!("encoding the request: {e}")))?,
        );
        let path = format!("/v1/certificate/{request_id}/finalize");
        let (status, resp) = self
            .send(
                |c| {
                    c.post(self.url(&path))
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.to_vec())
                },
                &[password],
            )
            .await?;
        enroll_outcome(status, &resp, &[password])
    }

    /// `POST /v1/certificate/search`: certificates of end entity `username` at CA `ca` issued
    /// after `issued_after` (RFC 3339), at most `max`.
    pub async fn search_certificates(
        &self,
        username: &str,
        ca: &str,
        issued_after: &str,
        max: u32,
    ) -> Result<Vec<CertificateResponse>, EjbcaError> {
        let body = serde_json::json!({
            "max_number_of_results": max,
            "criteria": [
                { "property": "QUERY", "value": username, "operation": "EQUAL" },
                { "property": "CA", "value": ca, "operation": "EQUAL" },
                { "property": "ISSUED_DATE", "value": issued_after, "operation": "AFTER" },
            ],
        });
        let (status, resp) = self.send(|c| c.post(self.url("/v1/certificate/search")).json(&body), &[]).await?;
        Ok(expect_json::<SearchResponse>(status, &resp, &[200], &[])?.certificates)
    }
}

/// A response body (a named type so signatures stay readable).
mod bytes_like {
    /// Raw body bytes.
    pub struct Body(pub Vec<u8>);
}

fn enroll_outcome(status: u16, body: &bytes_like::Body, secrets: &[&str]) -> Result<EnrollOutcome, EjbcaError> {
    match status {
        // 201 is what EJBCA sends; 200 is what newer spec revisions document.
        200 | 201 => Ok(EnrollOutcome::Issued(expect_json(status, body, &[200, 201], secrets)?)),
        202 => {
            let info: Option<InfoBody> = serde_json::from_slice(&body.0).ok();
            let message = info
                .and_then(|i| i.info_message)
                .map(|m| redact(&m, secrets))
                .unwrap_or_else(|| "the request is waiting for approval by an EJBCA administrator".into());
            let approval_id = approval_id_in(&message);
            Ok(EnrollOutcome::Pending { message, approval_id })
        }
        _ => {
            let err = http_error(status, body, secrets);
            // WaitingForApprovalException is an EjbcaException, which enrollPkcs10Certificate
            // turns into a 400 with its message instead of the 202 its exception mapper would
            // give (EJBCA-ce CertificateRestResource @062a4292): read such a 400 as pending.
            if let EjbcaError::Http { status: 400, message, .. } = &err
                && is_waiting_for_approval(message)
            {
                return Ok(EnrollOutcome::Pending { message: message.clone(), approval_id: approval_id_in(message) });
            }
            Err(err)
        }
    }
}

/// "... has been added for approval ...", "... waiting for approval ..." — but not "rejected",
/// "expired" or "denied" approvals, which are final.
fn is_waiting_for_approval(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("added for approval") || m.contains("waiting for approval"))
        && !["rejected", "expired", "denied", "could not be executed"].iter().any(|w| m.contains(w))
}

/// EJBCA names approval requests as `Id '123'` in its messages.
fn approval_id_in(message: &str) -> Option<i32> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("id '")? + 4;
    let digits: String = message[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn expect_json<T: serde::de::DeserializeOwned>(
    status: u16,
    body: &bytes_like::Body,
    ok: &[u16],
    secrets: &[&str],
) -> Result<T, EjbcaError> {
    if !ok.contains(&status) {
        return Err(http_error(status, body, secrets));
    }
    serde_json::from_slice(&body.0).map_err(|e| {
        EjbcaError::BadBody(format!(
            "HTTP {status} with a body that is not the documented JSON ({e}): {}",
            snippet(&body.0, secrets)
        ))
    })
}

fn http_error(status: u16, body: &bytes_like::Body, secrets: &[&str]) -> EjbcaError {
    match serde_json::from_slice::<ErrorBody>(&body.0) {
        Ok(ErrorBody { error_code, error_message: Some(m) }) => {
            EjbcaError::Http { status, code: error_code, message: redact(&m, secrets) }
        }
        _ => EjbcaError::Http {
            status,
            code: None,
            message: format!("non-JSON error body: {}", snippet(&body.0, secrets)),
        },
    }
}

/// A printable, bounded excerpt of a body for messages.
fn snippet(body: &[u8], secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(body);
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
    let clean = redact(&clean, secrets);
    if clean.trim().is_empty() { "(empty)".into() } else { format!("{:?}", clean.trim()) }
}

#[cfg(test)]
mod tests {
    use certbridge::Reaction;

    use super::*;

    #[test]
    fn base_url_accepts_hosts_and_https_urls() {
        assert_eq!(base_url("ejbca.example.com").unwrap(), "https://ejbca.example.com/ejbca/ejbca-rest-api");
        assert_eq!(base_url("127.0.0.1:8443").unwrap(), "https://127.0.0.1:8443/ejbca/ejbca-rest-api");
        assert_eq!(
            base_url("https://ejbca.example.com:8443/ejbca/ejbca-rest-api/").unwrap(),
            "https://ejbca.example.com:8443/ejbca/ejbca-rest-api"
        );
        assert!(base_url("http://ejbca.example.com").unwrap_err().contains("https only"));
        assert!(base_url("user:pw@host").unwrap_err().contains("spec.hostname"));
        assert!(base_url("").is_err());
    }

    #[test]
    fn errors_map_to_the_taxonomy() {
        let http = |status| EjbcaError::Http { status, code: Some(status as i64), message: "m".into() };
        for s in [400, 403, 404, 409, 413, 422] {
            assert!(http(s).to_sign_error("enroll").reaction == Reaction::Permanent, "{s}");
        }
        for s in [500, 502, 503, 504, 429] {
            assert!(http(s).to_sign_error("enroll").reaction == Reaction::Transient, "{s}");
        }
        assert!(http(401).to_sign_error("enroll").reaction == Reaction::IssuerNotReady);
        assert!(EjbcaError::Transport("reset".into()).to_sign_error("x").reaction == Reaction::Transient);
        assert_eq!(http(404).to_sign_error("enroll").to_string(), "EJBCA enroll: HTTP 404: m (error_code 404)");
    }

    #[test]
    fn error_bodies_are_verbatim_minus_secrets() {
        let body = bytes_like::Body(
            br#"{"error_code":422,"error_message":"Wrong password hunter2hunter2 for user"}"#.to_vec(),
        );
        let e = http_error(422, &body, &["hunter2hunter2"]);
        assert_eq!(
            e,
            EjbcaError::Http { status: 422, code: Some(422), message: "Wrong password <redacted> for user".into() }
        );
        let e = http_error(502, &bytes_like::Body(b"<html>\x00bad gateway</html>".to_vec()), &[]);
        assert!(e.to_string().contains("non-JSON error body") && e.to_string().contains("bad gateway"), "{e}");
    }

    #[test]
    fn approval_and_offline_400s_are_not_permanent() {
        let body = bytes_like::Body(
            br#"{"error_code":400,"error_message":"Add End Entity Action have been added for approval by authorized administrators."}"#
                .to_vec(),
        );
        assert!(matches!(enroll_outcome(400, &body, &[]), Ok(EnrollOutcome::Pending { approval_id: None, .. })));
        let body =
            bytes_like::Body(br#"{"error_code":400,"error_message":"Request with Id '7' has been rejected"}"#.to_vec());
        assert!(matches!(enroll_outcome(400, &body, &[]), Err(EjbcaError::Http { status: 400, .. })));
        let offline = EjbcaError::Http { status: 400, code: Some(400), message: "CA 'X' is offline.".into() };
        assert!(offline.to_sign_error("enroll").reaction == Reaction::Transient);
    }

    #[test]
    fn approval_ids_are_read_from_messages() {
        assert_eq!(approval_id_in("Request with Id '1234' is still waiting for approval"), Some(1234));
        assert_eq!(approval_id_in("Add End Entity Action have been added for approval."), None);
    }
}
