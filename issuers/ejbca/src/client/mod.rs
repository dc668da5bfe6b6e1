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
//!
//! Layout: `transport` (base URL, HTTP client, bearer tokens, bounded reads), `wire` (JSON bodies
//! and how an answer is read), `errors` ([`EjbcaError`] and its reaction). This file holds the
//! operations. Dependencies point one way: operations → transport/wire → errors; nothing here
//! imports [`crate::signer`], and [`crate::auth`] does not import this module.

mod errors;
mod transport;
mod wire;

use std::time::Duration;

use percent_encoding::utf8_percent_encode;
use zeroize::Zeroizing;

use certbridge::SignError;

use crate::auth::Credentials;
pub use errors::EjbcaError;
use errors::http_error;
use transport::{Answer, SEGMENT, Transport};
pub use transport::{BASE_PATH, base_url};
pub use wire::{CaInfo, CertificateResponse, EnrollOutcome, EnrollRequest, ResourceStatus, SearchQuery};
use wire::{CaList, SearchResponse, enroll_outcome, expect_json};

/// A client for one EJBCA instance with one set of credentials. Cheap to share (`Arc`).
pub struct EjbcaClient {
    transport: Transport,
}

impl EjbcaClient {
    /// A client for `base` (see [`base_url`]) trusting `ca_bundle_pem` (or the system roots).
    pub fn new(
        base: String,
        credentials: Credentials,
        ca_bundle_pem: Option<&str>,
        timeout: Duration,
    ) -> Result<EjbcaClient, SignError> {
        Ok(EjbcaClient { transport: Transport::new(base, credentials, ca_bundle_pem, timeout)? })
    }

    /// Token endpoint calls so far (0 for mTLS).
    pub fn token_fetches(&self) -> u64 {
        self.transport.token_fetches()
    }
}

impl EjbcaClient {
    /// `GET /v1/certificate/status`.
    pub async fn status(&self) -> Result<ResourceStatus, EjbcaError> {
        let a = self.transport.send(|c| c.get(self.transport.url("/v1/certificate/status")), &[]).await?;
        expect_json(a.status, &a.body, &[200], &[]).map_err(|e| e.with_retry_after(a.retry_after))
    }

    /// `GET /v1/ca`: the CAs the credentials may see.
    pub async fn list_cas(&self) -> Result<Vec<CaInfo>, EjbcaError> {
        let a = self.transport.send(|c| c.get(self.transport.url("/v1/ca")), &[]).await?;
        let list =
            expect_json::<CaList>(a.status, &a.body, &[200], &[]).map_err(|e| e.with_retry_after(a.retry_after))?;
        Ok(list.certificate_authorities)
    }

    /// `GET /v1/ca/{subject_dn}/certificate/download`: the CA's chain as PEM.
    pub async fn ca_chain_pem(&self, subject_dn: &str) -> Result<String, EjbcaError> {
        let path = format!("/v1/ca/{}/certificate/download", utf8_percent_encode(subject_dn, SEGMENT));
        let Answer { status, body, retry_after } =
            self.transport.send(|c| c.get(self.transport.url(&path)), &[]).await?;
        if status != 200 {
            return Err(http_error(status, &body, &[]).with_retry_after(retry_after));
        }
        String::from_utf8(body).map_err(|_| EjbcaError::BadBody("the CA chain download is not PEM text".into()))
    }

    /// The longest an [`EjbcaClient::enroll`] call can take, token refresh included: after
    /// this, no request of that call can still be on its way to EJBCA.
    pub fn enroll_budget(&self) -> Duration {
        self.transport.call_budget()
    }

    /// `POST /v1/certificate/pkcs10enroll`, given up after [`EjbcaClient::enroll_budget`].
    pub async fn enroll(&self, req: &EnrollRequest<'_>) -> Result<EnrollOutcome, EjbcaError> {
        let body = serde_json::to_vec(req).map_err(|e| EjbcaError::BadBody(format!("encoding the request: {e}")))?;
        let body = Zeroizing::new(body);
        let budget = self.enroll_budget();
        let secrets = [req.password];
        let call = self.transport.send(
            |c| {
                c.post(self.transport.url("/v1/certificate/pkcs10enroll"))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_vec())
            },
            &secrets,
        );
        let Answer { status, body: resp, retry_after } = tokio::time::timeout(budget, call)
            .await
            .map_err(|_| EjbcaError::Transport(format!("no answer within {budget:?} (the enroll call's budget)")))??;
        enroll_outcome(status, &resp, &[req.password]).map_err(|e| e.with_retry_after(retry_after))
    }

    /// `POST /v1/certificate/{request_id}/finalize` for a user-generated key after approval.
    pub async fn finalize(&self, request_id: i32, password: &str) -> Result<EnrollOutcome, EjbcaError> {
        let body = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({ "response_format": "DER", "password": password }))
                .map_err(|e| EjbcaError::BadBody(format!("encoding the request: {e}")))?,
        );
        let path = format!("/v1/certificate/{request_id}/finalize");
        let Answer { status, body: resp, retry_after } = self
            .transport
            .send(
                |c| {
                    c.post(self.transport.url(&path))
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.to_vec())
                },
                &[password],
            )
            .await?;
        enroll_outcome(status, &resp, &[password]).map_err(|e| e.with_retry_after(retry_after))
    }

    /// `POST /v1/certificate/search`: what `query` selects, at most `max`.
    pub async fn search_certificates(
        &self,
        query: &SearchQuery<'_>,
        max: u32,
    ) -> Result<Vec<CertificateResponse>, EjbcaError> {
        let mut criteria = vec![];
        if let Some(username) = query.username {
            criteria.push(serde_json::json!({ "property": "QUERY", "value": username, "operation": "EQUAL" }));
        }
        for (property, value) in [
            ("CA", query.ca),
            ("CERTIFICATE_PROFILE", query.certificate_profile),
            ("END_ENTITY_PROFILE", query.end_entity_profile),
        ] {
            criteria.push(serde_json::json!({ "property": property, "value": value, "operation": "EQUAL" }));
        }
        criteria
            .push(serde_json::json!({ "property": "ISSUED_DATE", "value": query.issued_after, "operation": "AFTER" }));
        let body = serde_json::json!({ "max_number_of_results": max, "criteria": criteria });
        let a = self.transport.send(|c| c.post(self.transport.url("/v1/certificate/search")).json(&body), &[]).await?;
        let found = expect_json::<SearchResponse>(a.status, &a.body, &[200], &[])
            .map_err(|e| e.with_retry_after(a.retry_after))?;
        Ok(found.certificates)
    }
}
