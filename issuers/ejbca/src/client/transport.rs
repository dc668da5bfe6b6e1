//! The HTTP side of the client: the base URL, one reqwest client per issuer (CA bundle, client
//! certificate, timeouts, header and body limits), and [`Transport::send`], which adds the bearer
//! token (refreshing it once when refused) and reads the answer with a size limit.

use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS};
use secrecy::ExposeSecret;

use certbridge::http::describe;
use certbridge::{SignError, redact};

use super::errors::EjbcaError;
use crate::auth::{Credentials, TokenSource};

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
pub(super) const SEGMENT: &AsciiSet = &CONTROLS
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

enum Auth {
    Mtls,
    OAuth(TokenSource),
}

/// The HTTP client for one EJBCA instance with one set of credentials.
pub(super) struct Transport {
    base: String,
    http: reqwest::Client,
    auth: Auth,
    timeout: Duration,
}

/// A status and a body read within the size limit.
pub(super) struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body bytes.
    pub body: Vec<u8>,
    /// `Retry-After`, when the answer has a readable one.
    pub retry_after: Option<Duration>,
}

impl Transport {
    /// A client for `base` (see [`base_url`]) trusting `ca_bundle_pem` (or the system roots).
    pub(super) fn new(
        base: String,
        credentials: Credentials,
        ca_bundle_pem: Option<&str>,
        timeout: Duration,
    ) -> Result<Transport, SignError> {
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
        Ok(Transport { base, http, auth, timeout })
    }

    /// The longest one call through [`Transport::send`] is allowed to take, enforced by the
    /// callers that need a bound (enroll): the request timeout twice, for the one retry after a
    /// refused token.
    pub(super) fn call_budget(&self) -> Duration {
        self.timeout.saturating_mul(2)
    }

    /// Token endpoint calls so far (0 for mTLS).
    pub(super) fn token_fetches(&self) -> u64 {
        match &self.auth {
            Auth::OAuth(t) => t.fetch_count(),
            Auth::Mtls => 0,
        }
    }

    /// Sends one request (built by `build`, so it can be rebuilt), with a bearer token when
    /// OAuth is used; on 401 the token is dropped and the request sent once more with a new one.
    /// Returns the status and body; transport failures are errors, statuses are not.
    pub(super) async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        secrets: &[&str],
    ) -> Result<Answer, EjbcaError> {
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
            let resp = rb.send().await.map_err(|e| {
                let text = redact(&describe(&e), secrets);
                // A connect error (TCP or TLS handshake) means this request never reached EJBCA.
                if e.is_connect() { EjbcaError::Unsent(text) } else { EjbcaError::Transport(text) }
            })?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| certbridge::http::parse_retry_after(v, std::time::SystemTime::now()));
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
            return Ok(Answer { status, body: body.to_vec(), retry_after });
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

#[cfg(test)]
mod tests {

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
}
