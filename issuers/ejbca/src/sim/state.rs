//! What the simulated EJBCA holds (issued certificates, approval requests, tokens, faults,
//! counters) and how it issues.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use certbridge::testing::SimPki;

use super::openapi::OpenApi;
use super::options::{ApprovalMode, Fault, Logged, SimOptions};

pub(super) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// EJBCA's error body for `status`.
pub(super) fn ejbca_error(status: u16, message: &str) -> (u16, Value) {
    (status, json!({ "error_code": status, "error_message": message }))
}

#[derive(Debug, Clone)]
pub(super) struct IssuedCert {
    pub(super) username: String,
    pub(super) ca: String,
    pub(super) certificate_profile: String,
    pub(super) end_entity_profile: String,
    pub(super) der: Vec<u8>,
    pub(super) serial: String,
    pub(super) issued_at: jiff::Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ApprovalStatus {
    Waiting,
    Approved,
    Rejected,
    Finalized,
}

#[derive(Debug, Clone)]
pub(super) struct Approval {
    pub(super) username: String,
    pub(super) ca: String,
    pub(super) certificate_profile: String,
    pub(super) end_entity_profile: String,
    pub(super) csr: String,
    pub(super) validity: Duration,
    pub(super) status: ApprovalStatus,
}

pub(super) struct SimState {
    pub(super) issued: Vec<IssuedCert>,
    pub(super) approvals: BTreeMap<i32, Approval>,
    pub(super) next_approval: i32,
    pub(super) tokens: HashMap<String, Instant>,
    pub(super) faults: VecDeque<(String, Fault)>,
    pub(super) latency: Duration,
    pub(super) approval: ApprovalMode,
    pub(super) bad_token_status: u16,
    pub(super) token_ttl: Duration,
    pub(super) ca_offline: bool,
    pub(super) denied: std::collections::BTreeSet<String>,
    pub(super) requests: Vec<Logged>,
    pub(super) violations: Vec<String>,
}

pub(super) struct Shared {
    pub(super) api: OpenApi,
    pub(super) pki: SimPki,
    pub(super) opts: SimOptions,
    pub(super) state: Mutex<SimState>,
    pub(super) enrollments: AtomicU64,
    pub(super) enroll_calls: AtomicU64,
    pub(super) token_calls: AtomicU64,
}

impl Shared {
    pub(super) fn issue(&self, st: &mut SimState, a: &Approval) -> Result<Vec<u8>, (u16, Value)> {
        let ca =
            self.pki.ca(&a.ca).ok_or_else(|| ejbca_error(400, &format!("CA with name \"{}\" doesn't exist", a.ca)))?;
        let der = ca.sign(&a.csr, a.validity).map_err(|e| ejbca_error(400, &sign_error_message(e)))?;
        let serial = x509_parser::parse_x509_certificate(&der)
            .map(|(_, x)| x.raw_serial_as_string().replace(':', "").to_uppercase())
            .unwrap_or_default();
        st.issued.push(IssuedCert {
            username: a.username.clone(),
            ca: a.ca.clone(),
            certificate_profile: a.certificate_profile.clone(),
            end_entity_profile: a.end_entity_profile.clone(),
            der: der.clone(),
            serial,
            issued_at: jiff::Timestamp::now(),
        });
        self.enrollments.fetch_add(1, Ordering::SeqCst);
        Ok(der)
    }
}

/// EJBCA's wording of a signing failure.
pub(super) fn sign_error_message(e: certbridge::testing::SimSignError) -> String {
    use certbridge::testing::SimSignError;
    match e {
        SimSignError::InvalidCsr(e) => format!("Invalid certificate request: {e}"),
        SimSignError::Template(e) => e,
        SimSignError::Signing(e) => format!("General failure: {e}"),
    }
}
