//! What the simulator is configured with and what tests can switch: options, faults, approval
//! modes, and the log entry of a received request.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// Path of the simulator's OAuth 2.0 token endpoint.
pub const TOKEN_PATH: &str = "/oauth/token";

/// What the simulator knows and who may call it.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Address to listen on (`127.0.0.1:0` picks a port).
    pub addr: SocketAddr,
    /// Issuing CA names (all under one root).
    pub cas: Vec<String>,
    /// Certificate profile names.
    pub certificate_profiles: Vec<String>,
    /// End-entity profile names.
    pub end_entity_profiles: Vec<String>,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: String,
    /// Access token lifetime.
    pub token_ttl: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cas: vec!["IssuingCA".into(), "OtherCA".into()],
            certificate_profiles: vec!["ENDUSER".into(), "SERVER".into()],
            end_entity_profiles: vec!["EMPTY".into(), "K8S".into()],
            client_id: "certbridge".into(),
            client_secret: "sim-client-secret-3f9a".into(),
            token_ttl: Duration::from_secs(300),
        }
    }
}

/// A fault injected into the next matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and an EJBCA error body.
    Status(u16),
    /// Answer 200/201 with a body that is not JSON, before doing anything.
    Garbage,
    /// Do the work (issue the certificate), then answer with a garbage body.
    GarbageAfterIssue,
    /// Close the connection without an answer, before doing anything.
    Reset,
    /// Do the work (issue the certificate), then close the connection without an answer.
    ResetAfterIssue,
    /// A CA slower than the client: the work is done (the certificate issued) only after this
    /// long, whether or not the client is still waiting, then answered normally. Before that a
    /// search finds nothing.
    IssueLate(Duration),
    /// Do the work (issue the certificate), then answer `201` with a certificate for *another*
    /// key (signed by the same CA, not recorded as issued): a CA or proxy glitch.
    OtherKeyAfterIssue,
    /// Answer `429 Too Many Requests` with this `Retry-After` value (seconds or an HTTP date),
    /// before doing anything.
    RateLimited(String),
}

/// Whether enrollments wait for an administrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    /// Enroll immediately.
    Off,
    /// Answer `202`; approving issues the certificate (the approval executes the enrollment),
    /// and the `info_message` does not name the approval id.
    Execute,
    /// Answer `202` naming the approval id (`Id 'N'`); after approval the client finalizes
    /// with `POST /v1/certificate/{id}/finalize`.
    Finalize,
}

/// One request the simulator received.
#[derive(Debug, Clone)]
pub struct Logged {
    /// `operationId`, or `token` for the token endpoint.
    pub operation: String,
    /// The JSON body (token endpoint: the form fields, secrets included — it is the CA).
    pub body: Option<Value>,
    /// `mtls`, `bearer` or `none`.
    pub auth: &'static str,
}
