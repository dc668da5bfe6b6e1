//! TLS Protect Cloud (Venafi as a Service) wire protocol (vcert `pkg/venafi/cloud`, see
//! `ca-protocols.md` §3.2 and §7.2): `tppl-api-key` or a service-account JWT exchanged for a
//! bearer token (cached until shortly before it expires), the zone resolved to an application and
//! issuing-template id once per client (= per issuer generation), certificate requests with
//! `validityPeriod`, status polling and the PEM contents.

use std::time::{Duration, Instant};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use certbridge::SignError;

use crate::http::{self, Answer, BODY_LIMIT, CHAIN_LIMIT, VenafiError};

/// The default (US) API.
pub const DEFAULT_URL: &str = "https://api.venafi.cloud/";

/// Known regions by API host.
pub const REGIONS: &[(&str, &str)] = &[
    ("api.venafi.cloud", "US"),
    ("api.venafi.eu", "EU"),
    ("api.au.venafi.cloud", "AU"),
    ("api.uk.venafi.cloud", "UK"),
    ("api.sg.venafi.cloud", "SG"),
    ("api.ca.venafi.cloud", "CA"),
];

/// `https://host[:port]/` from `spec.cloud.url` (default US). Any https host is accepted (proxies,
/// test rigs); [`region`] names the known ones.
pub fn cloud_base_url(url: Option<&str>) -> Result<String, String> {
    let Some(u) = url.map(str::trim).filter(|u| !u.is_empty()) else { return Ok(DEFAULT_URL.into()) };
    let rest = match u.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("https") => rest,
        _ => {
            return Err(format!(
                "spec.cloud.url {u:?} is not an https:// URL: use e.g. {DEFAULT_URL} or https://api.venafi.eu/"
            ));
        }
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("spec.cloud.url {u:?} has no host: use e.g. {DEFAULT_URL}"));
    }
    Ok(format!("https://{authority}/"))
}

/// The region of a base URL, if it is a known one.
pub fn region(base: &str) -> Option<&'static str> {
    let host = base.trim_start_matches("https://").trim_end_matches('/');
    REGIONS.iter().find(|(h, _)| *h == host).map(|(_, r)| *r)
}

/// `<Application name>\<Issuing template alias>` → (application, alias).
pub fn split_zone(zone: &str) -> Result<(String, String), String> {
    match zone.trim().split_once('\\') {
        Some((app, alias)) if !app.trim().is_empty() && !alias.trim().is_empty() && !alias.contains('\\') => {
            Ok((app.trim().to_owned(), alias.trim().to_owned()))
        }
        _ => Err(format!(
            "spec.zone {zone:?} is not a TLS Protect Cloud zone: use <Application>\\<Issuing template alias>"
        )),
    }
}

/// ISO 8601 duration for `validityPeriod` (vcert's `FormatValidityPeriodISO8601`): `PT<h>H` under
/// a day, else `P<d>D` plus `T<h>H` for the remainder.
pub fn validity_period(d: Duration) -> String {
    let hours = d.as_secs().div_ceil(3600).max(1);
    let (days, rest) = (hours / 24, hours % 24);
    match (days, rest) {
        (0, h) => format!("PT{h}H"),
        (d, 0) => format!("P{d}D"),
        (d, h) => format!("P{d}DT{h}H"),
    }
}

/// How the client authenticates.
pub enum CloudCredentials {
    /// `tppl-api-key`.
    ApiKey(Zeroizing<String>),
    /// A JWT exchanged at `v1/oauth2/v2.0/<tenant>/token`.
    ServiceAccount {
        /// Tenant id.
        tenant: String,
        /// The client assertion.
        jwt: Zeroizing<String>,
    },
}

/// A certificate request's status.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    /// `ISSUED`, `PENDING`, `FAILED`, `REJECTED`, …
    pub status: String,
    /// Leaf id first.
    #[serde(default)]
    pub certificate_ids: Vec<String>,
    /// Why it failed.
    #[serde(default)]
    pub error_information: Option<Value>,
}

/// A Cloud client for one issuer.
pub struct CloudClient {
    base: String,
    http: reqwest::Client,
    creds: CloudCredentials,
    token: tokio::sync::Mutex<Option<(Zeroizing<String>, Instant)>>,
    zone: tokio::sync::Mutex<Option<(String, String)>>,
    /// Token endpoint calls so far.
    pub token_calls: std::sync::atomic::AtomicU64,
}

/// Path-segment escaping (RFC 3986 unreserved characters stay as they are).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

impl CloudClient {
    /// A client for `base` (see [`cloud_base_url`]).
    pub fn new(
        base: String,
        creds: CloudCredentials,
        roots_pem: Option<&str>,
        timeout: Duration,
    ) -> Result<CloudClient, SignError> {
        let http = http::client(timeout, roots_pem, "the Cloud CA bundle")?;
        Ok(CloudClient {
            base,
            http,
            creds,
            token: tokio::sync::Mutex::new(None),
            zone: tokio::sync::Mutex::new(None),
            token_calls: Default::default(),
        })
    }

    fn auth_failed(what: &str) -> VenafiError {
        VenafiError::Auth(SignError::issuer_not_ready(format!(
            "AuthFailed: {what}: fix spec.cloud.apiTokenSecretRef / spec.cloud.serviceAccount or the Secret it names"
        )))
    }

    async fn authorize(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<(reqwest::RequestBuilder, Vec<String>), VenafiError> {
        match &self.creds {
            CloudCredentials::ApiKey(k) => Ok((rb.header("tppl-api-key", k.as_str()), vec![k.to_string()])),
            CloudCredentials::ServiceAccount { tenant, jwt } => {
                let mut t = self.token.lock().await;
                if let Some((tok, until)) = t.as_ref()
                    && Instant::now() < *until
                {
                    return Ok((rb.bearer_auth(tok.as_str()), vec![tok.to_string(), jwt.to_string()]));
                }
                self.token_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "client_credentials")
                    .append_pair("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                    .append_pair("client_assertion", jwt)
                    .finish();
                let form = Zeroizing::new(form);
                let trb = self
                    .http
                    .post(format!("{}v1/oauth2/v2.0/{}/token", self.base, seg(tenant)))
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.to_string());
                let a = http::send(trb, BODY_LIMIT, &[jwt.as_str()]).await?;
                if matches!(a.status, 400 | 401 | 403) {
                    return Err(Self::auth_failed(&format!(
                        "the token endpoint refused the service-account JWT ({})",
                        http::error_text(&a, &[jwt.as_str()])
                    )));
                }
                #[derive(Deserialize)]
                struct Tok {
                    access_token: String,
                    #[serde(default)]
                    expires_in: Option<u64>,
                }
                let tok: Tok = http::json(&a, &[200], &[jwt.as_str()])?;
                let life = Duration::from_secs(tok.expires_in.unwrap_or(3600).max(1));
                let until = Instant::now() + life - (life / 5).min(Duration::from_secs(300));
                let tok_s = Zeroizing::new(tok.access_token);
                *t = Some((tok_s.clone(), until));
                Ok((rb.bearer_auth(tok_s.as_str()), vec![tok_s.to_string(), jwt.to_string()]))
            }
        }
    }

    async fn call(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Answer, VenafiError> {
        let mut retried = false;
        loop {
            let (rb, secrets) = self.authorize(build(&self.http)).await?;
            let s: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let a = http::send(rb, limit, &s).await?;
            if a.status == 401 {
                if !retried && matches!(self.creds, CloudCredentials::ServiceAccount { .. }) {
                    *self.token.lock().await = None;
                    retried = true;
                    continue;
                }
                return Err(Self::auth_failed(&format!(
                    "TLS Protect Cloud answered 401 ({})",
                    http::error_text(&a, &s)
                )));
            }
            return Ok(a);
        }
    }

    /// `GET v1/useraccounts` (API key) or a token (service account): proves the credentials.
    pub async fn verify(&self) -> Result<(), VenafiError> {
        match &self.creds {
            CloudCredentials::ApiKey(_) => {
                let a = self.call(|c| c.get(format!("{}v1/useraccounts", self.base)), BODY_LIMIT).await?;
                http::json::<Value>(&a, &[200], &[]).map(|_| ())
            }
            CloudCredentials::ServiceAccount { .. } => self.authorize(self.http.get(&self.base)).await.map(|_| ()),
        }
    }

    /// (application id, issuing template id) of `zone`, looked up once per client.
    pub async fn resolve_zone(&self, zone: &str) -> Result<(String, String), VenafiError> {
        let mut cached = self.zone.lock().await;
        if let Some(z) = cached.as_ref() {
            return Ok(z.clone());
        }
        let (app, alias) = split_zone(zone).map_err(|m| VenafiError::Http { status: 400, message: m })?;
        let url = format!("{}outagedetection/v1/applications/name/{}", self.base, seg(&app));
        let a = self.call(|c| c.get(&url), BODY_LIMIT).await?;
        if a.status == 404 {
            return Err(VenafiError::Http {
                status: 404,
                message: format!("ZoneNotFound: application {app:?} does not exist ({})", http::error_text(&a, &[])),
            });
        }
        let v: Value = http::json(&a, &[200], &[])?;
        let app_id = v.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let cit = v
            .get("certificateIssuingTemplateAliasIdMap")
            .and_then(|m| m.get(&alias))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| VenafiError::Http {
                status: 404,
                message: format!("ZoneNotFound: application {app:?} has no issuing template alias {alias:?}"),
            })?;
        *cached = Some((app_id, cit));
        Ok(cached.clone().unwrap_or_default())
    }

    /// `POST outagedetection/v1/certificaterequests`: the request id.
    pub async fn request(
        &self,
        csr_pem: &str,
        app_id: &str,
        cit_id: &str,
        validity: Duration,
    ) -> Result<String, VenafiError> {
        let body = serde_json::json!({
            "certificateSigningRequest": csr_pem,
            "applicationId": app_id,
            "certificateIssuingTemplateId": cit_id,
            "apiClientInformation": {"type": "certbridge", "identifier": "certbridge-venafi"},
            "validityPeriod": validity_period(validity),
        });
        let url = format!("{}outagedetection/v1/certificaterequests", self.base);
        let a = self.call(|c| c.post(&url).json(&body), BODY_LIMIT).await?;
        request_answer(&a)
    }

    /// `GET outagedetection/v1/certificaterequests/<id>`.
    pub async fn status(&self, id: &str) -> Result<RequestStatus, VenafiError> {
        let url = format!("{}outagedetection/v1/certificaterequests/{}", self.base, seg(id));
        let a = self.call(|c| c.get(&url), BODY_LIMIT).await?;
        http::json(&a, &[200], &[])
    }

    /// `GET outagedetection/v1/certificates/<id>/contents?chainOrder=EE_FIRST&format=PEM`;
    /// `None` on 409 (not signed yet).
    pub async fn contents(&self, cert_id: &str) -> Result<Option<String>, VenafiError> {
        let url = format!(
            "{}outagedetection/v1/certificates/{}/contents?chainOrder=EE_FIRST&format=PEM",
            self.base,
            seg(cert_id)
        );
        let a = self.call(|c| c.get(&url), CHAIN_LIMIT).await?;
        contents_answer(a)
    }
}

// The answer readers below are free functions, `#[doc(hidden)] pub` only so that the fuzz
// target `venafi_response` (fuzz/src/targets.rs) can feed them arbitrary answers.

/// `POST certificaterequests`' answer: the request id.
#[doc(hidden)]
pub fn request_answer(a: &Answer) -> Result<String, VenafiError> {
    let v: Value = http::json(a, &[200, 201], &[])?;
    v.pointer("/certificateRequests/0/id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| VenafiError::BadBody("the answer has no certificateRequests[0].id".into()))
}

/// `GET certificates/<id>/contents`' answer: the PEM chain, or `None` on 409 (not signed yet).
#[doc(hidden)]
pub fn contents_answer(a: Answer) -> Result<Option<String>, VenafiError> {
    match a.status {
        200 => String::from_utf8(a.body)
            .map(Some)
            .map_err(|_| VenafiError::BadBody("the certificate contents are not PEM text".into())),
        409 => Ok(None),
        s => Err(VenafiError::Http { status: s, message: http::error_text(&a, &[]) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_by_url() {
        assert_eq!(cloud_base_url(None).unwrap(), DEFAULT_URL);
        for (host, r) in REGIONS {
            let base = cloud_base_url(Some(&format!("https://{host}"))).unwrap();
            assert_eq!(base, format!("https://{host}/"));
            assert_eq!(region(&base), Some(*r));
        }
        assert_eq!(region("https://127.0.0.1:8443/"), None);
        assert!(cloud_base_url(Some("http://api.venafi.cloud")).unwrap_err().contains("spec.cloud.url"));
    }

    #[test]
    fn zones_and_validity() {
        assert_eq!(split_zone("My App\\Default").unwrap(), ("My App".into(), "Default".into()));
        assert!(split_zone("NoAlias").is_err());
        assert!(split_zone("a\\b\\c").is_err());
        assert_eq!(validity_period(Duration::from_secs(3600 * 5)), "PT5H");
        assert_eq!(validity_period(Duration::from_secs(90 * 86400)), "P90D");
        assert_eq!(validity_period(Duration::from_secs(86400 + 7200)), "P1DT2H");
    }
}
