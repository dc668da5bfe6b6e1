//! EJBCA's JSON bodies (the vendored OpenAPI spec plus the deltas read in EJBCA's code), and how
//! an answer's status and body are read: [`expect_json`] for ordinary answers, [`enroll_outcome`]
//! for pkcs10enroll and finalize (201 issued, 202 or an approval-worded 400 pending).

use serde::{Deserialize, Serialize};

use certbridge::redact;

use super::errors::{EjbcaError, http_error, snippet};

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

/// What a certificate search asks for (`SearchCertificateCriteriaRestRequest`s): certificates of
/// end entity `username` (any, when `None`), at CA `ca`, with both profiles, issued after
/// `issued_after` (RFC 3339).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchQuery<'a> {
    /// End-entity name (`QUERY` … `EQUAL`, which EJBCA matches against the username among others).
    pub username: Option<&'a str>,
    /// CA name.
    pub ca: &'a str,
    /// Certificate profile name.
    pub certificate_profile: &'a str,
    /// End-entity profile name.
    pub end_entity_profile: &'a str,
    /// RFC 3339 lower bound of the issue date.
    pub issued_after: &'a str,
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
pub(super) struct CaList {
    #[serde(default)]
    pub(super) certificate_authorities: Vec<CaInfo>,
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
pub(super) struct SearchResponse {
    #[serde(default)]
    pub(super) certificates: Vec<CertificateResponse>,
}

#[derive(Deserialize)]
struct InfoBody {
    info_message: Option<String>,
}

pub(super) fn enroll_outcome(status: u16, body: &[u8], secrets: &[&str]) -> Result<EnrollOutcome, EjbcaError> {
    match status {
        // 201 is what EJBCA sends; 200 is what newer spec revisions document.
        200 | 201 => Ok(EnrollOutcome::Issued(expect_json(status, body, &[200, 201], secrets)?)),
        202 => {
            let info: Option<InfoBody> = serde_json::from_slice(body).ok();
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

pub(super) fn expect_json<T: serde::de::DeserializeOwned>(
    status: u16,
    body: &[u8],
    ok: &[u16],
    secrets: &[&str],
) -> Result<T, EjbcaError> {
    if !ok.contains(&status) {
        return Err(http_error(status, body, secrets));
    }
    serde_json::from_slice(body).map_err(|e| {
        EjbcaError::BadBody(format!(
            "HTTP {status} with a body that is not the documented JSON ({e}): {}",
            snippet(body, secrets)
        ))
    })
}

#[cfg(test)]
mod tests {
    use certbridge::Reaction;

    use super::*;

    #[test]
    fn approval_and_offline_400s_are_not_permanent() {
        let body = br#"{"error_code":400,"error_message":"Add End Entity Action have been added for approval by authorized administrators."}"#;
        assert!(matches!(enroll_outcome(400, body, &[]), Ok(EnrollOutcome::Pending { approval_id: None, .. })));
        let body = br#"{"error_code":400,"error_message":"Request with Id '7' has been rejected"}"#;
        assert!(matches!(enroll_outcome(400, body, &[]), Err(EjbcaError::Http { status: 400, .. })));
        let offline =
            EjbcaError::Http { status: 400, code: Some(400), message: "CA 'X' is offline.".into(), retry_after: None };
        assert!(offline.to_sign_error("enroll").reaction == Reaction::Transient);
    }

    #[test]
    fn approval_ids_are_read_from_messages() {
        assert_eq!(approval_id_in("Request with Id '1234' is still waiting for approval"), Some(1234));
        assert_eq!(approval_id_in("Add End Entity Action have been added for approval."), None);
    }
}
