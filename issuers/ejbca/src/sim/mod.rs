//! An EJBCA REST simulator: test equipment that follows EJBCA's wire protocol and checks what it
//! receives against EJBCA's OpenAPI spec ([`openapi`]).
//!
//! * HTTPS only (rustls), under `/ejbca/ejbca-rest-api`, with optional client-certificate
//!   verification: a client certificate chaining to the simulator's root authenticates; so does a
//!   bearer token from the simulator's OAuth 2.0 token endpoint (`/oauth/token`, client
//!   credentials, expiring tokens). Neither → `403` with EJBCA's message.
//! * Every request is routed through the spec (unknown path → 404, wrong method → 405, bad
//!   path parameter, body type, enum or unknown property → 400) and every JSON answer is checked
//!   against the documented response; mismatches are recorded in [`EjbcaSim::violations`].
//! * Real certificates: a root and issuing CAs (rcgen); chains are real and verify with openssl.
//! * CAs, certificate profiles and end-entity profiles are configured; unknown ones are answered
//!   as EJBCA's `convertToEndEntityInformation` does (400 with its message).
//! * Fault modes: latency, any status, garbage bodies, connection resets (before or after the
//!   certificate was issued), approval required (202, then approve / reject), and a CA outage
//!   ([`EjbcaSim::set_ca_offline`]: 503 until switched back).
//! * Counters: successful enrollments, enroll calls, token calls — so tests can prove that a
//!   request was never enrolled twice.

pub mod openapi;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use certbridge::testing::SimPki;
use openapi::{OpenApi, Route};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The message of a 503 while the CA is offline.
const CA_OFFLINE: &str = "CA is offline: the CA's crypto token is not active.";

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

#[derive(Debug, Clone)]
struct IssuedCert {
    username: String,
    ca: String,
    certificate_profile: String,
    end_entity_profile: String,
    der: Vec<u8>,
    serial: String,
    issued_at: jiff::Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ApprovalStatus {
    Waiting,
    Approved,
    Rejected,
    Finalized,
}

#[derive(Debug, Clone)]
struct Approval {
    username: String,
    ca: String,
    certificate_profile: String,
    end_entity_profile: String,
    csr: String,
    validity: Duration,
    status: ApprovalStatus,
}

struct SimState {
    issued: Vec<IssuedCert>,
    approvals: BTreeMap<i32, Approval>,
    next_approval: i32,
    tokens: HashMap<String, Instant>,
    faults: VecDeque<(String, Fault)>,
    latency: Duration,
    approval: ApprovalMode,
    bad_token_status: u16,
    token_ttl: Duration,
    ca_offline: bool,
    requests: Vec<Logged>,
    violations: Vec<String>,
}

struct Shared {
    api: OpenApi,
    pki: SimPki,
    opts: SimOptions,
    state: Mutex<SimState>,
    enrollments: AtomicU64,
    enroll_calls: AtomicU64,
    token_calls: AtomicU64,
}

/// A running simulator; stops when dropped.
pub struct EjbcaSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
    client_identity: (String, String),
}

impl Drop for EjbcaSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: u16, body: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn ejbca_error(status: u16, message: &str) -> (u16, Value) {
    (status, json!({ "error_code": status, "error_message": message }))
}

impl EjbcaSim {
    /// Starts a simulator with `opts`.
    pub async fn start(opts: SimOptions) -> Result<EjbcaSim, String> {
        certbridge::runtime::install_crypto_provider();
        let api = OpenApi::load()?;
        let names: Vec<&str> = opts.cas.iter().map(String::as_str).collect();
        let pki = SimPki::generate(&names).map_err(|e| format!("simulator PKI: {e}"))?;
        let (cert_der, key_der) =
            pki.server_cert("ejbca-sim").map_err(|e| format!("simulator server certificate: {e}"))?;
        let client_identity = pki.client_cert("certbridge-ra-admin").map_err(|e| format!("client certificate: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.root_der().to_vec().into()).map_err(|e| format!("client CA: {e}"))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert_der.into()], rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()))
            .map_err(|e| format!("TLS: {e}"))?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind(opts.addr).await.map_err(|e| format!("bind {}: {e}", opts.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            api,
            pki,
            state: Mutex::new(SimState {
                issued: vec![],
                approvals: BTreeMap::new(),
                next_approval: 1001,
                tokens: HashMap::new(),
                faults: VecDeque::new(),
                latency: Duration::ZERO,
                approval: ApprovalMode::Off,
                bad_token_status: 403,
                token_ttl: opts.token_ttl,
                ca_offline: false,
                requests: vec![],
                violations: vec![],
            }),
            opts,
            enrollments: AtomicU64::new(0),
            enroll_calls: AtomicU64::new(0),
            token_calls: AtomicU64::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let s = s.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
                    let svc = hyper::service::service_fn(move |req| handle(s.clone(), peer.is_some(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ok(EjbcaSim { shared, addr, task, client_identity })
    }

    /// `127.0.0.1:<port>` (what `spec.hostname` takes).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The OAuth token endpoint URL.
    pub fn token_url(&self) -> String {
        format!("https://{}{TOKEN_PATH}", self.addr)
    }

    /// The OAuth client id and secret the token endpoint accepts.
    pub fn oauth_client(&self) -> (String, String) {
        (self.shared.opts.client_id.clone(), self.shared.opts.client_secret.clone())
    }

    /// The root CA (PEM): trust anchor for the HTTPS server and for issued chains.
    pub fn root_pem(&self) -> String {
        self.shared.pki.root_pem.clone()
    }

    /// An mTLS client identity EJBCA accepts: (certificate PEM, key PEM).
    pub fn client_identity(&self) -> (String, String) {
        self.client_identity.clone()
    }

    /// The DER chain (CA first, root last) of CA `name`.
    pub fn ca_chain_der(&self, name: &str) -> Option<Vec<Vec<u8>>> {
        self.shared.pki.ca(name).map(|c| c.chain_der.clone())
    }

    /// Certificates issued so far (pkcs10enroll, executed approvals, finalize).
    pub fn enrollments(&self) -> u64 {
        self.shared.enrollments.load(Ordering::SeqCst)
    }

    /// DER of every certificate issued so far, in issue order (the chaos harness counts them per key).
    pub fn issued_certificates(&self) -> Vec<Vec<u8>> {
        self.state().issued.iter().map(|c| c.der.clone()).collect()
    }

    /// pkcs10enroll calls received (whatever the outcome).
    pub fn enroll_calls(&self) -> u64 {
        self.shared.enroll_calls.load(Ordering::SeqCst)
    }

    /// Token endpoint calls received.
    pub fn token_calls(&self) -> u64 {
        self.shared.token_calls.load(Ordering::SeqCst)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.state().requests.clone()
    }

    /// Requests that broke the spec, and answers of the simulator that did.
    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// Delay every answer by `d`.
    pub fn set_latency(&self, d: Duration) {
        self.state().latency = d;
    }

    /// Injects `fault` into the next request for `operation` (an `operationId`, `token`, or `*`).
    pub fn push_fault(&self, operation: &str, fault: Fault) {
        self.state().faults.push_back((operation.to_owned(), fault));
    }

    /// Takes the CA offline (`true`) or back online. While offline, every REST call (after
    /// authentication and validation, so it is logged and counted) answers `503` with the message
    /// of EJBCA's `CAOfflineException`, which its `ExceptionHandler` maps to 503; the token
    /// endpoint (a separate identity provider) keeps working. This models an EJBCA whose REST
    /// resources all report the outage; a real EJBCA may still answer `status` and the CA list
    /// while only the CA's crypto token is offline (then only enrollments fail).
    pub fn set_ca_offline(&self, offline: bool) {
        self.state().ca_offline = offline;
    }

    /// Switches approvals on or off for new enrollments.
    pub fn set_approval(&self, mode: ApprovalMode) {
        self.state().approval = mode;
    }

    /// Approves every waiting request; in [`ApprovalMode::Execute`] this issues the certificates.
    pub fn approve_all(&self) {
        let mut st = self.state();
        let execute = st.approval == ApprovalMode::Execute;
        let ids: Vec<i32> =
            st.approvals.iter().filter(|(_, a)| a.status == ApprovalStatus::Waiting).map(|(i, _)| *i).collect();
        for id in ids {
            if execute {
                let a = st.approvals[&id].clone();
                if let Ok(cert) = self.shared.issue(&mut st, &a) {
                    drop(cert);
                    if let Some(a) = st.approvals.get_mut(&id) {
                        a.status = ApprovalStatus::Finalized;
                    }
                }
            } else if let Some(a) = st.approvals.get_mut(&id) {
                a.status = ApprovalStatus::Approved;
            }
        }
    }

    /// Rejects every waiting request.
    pub fn reject_all(&self) {
        for a in self.state().approvals.values_mut().filter(|a| a.status == ApprovalStatus::Waiting) {
            a.status = ApprovalStatus::Rejected;
        }
    }

    /// Approval requests waiting.
    pub fn waiting_approvals(&self) -> usize {
        self.state().approvals.values().filter(|a| a.status == ApprovalStatus::Waiting).count()
    }

    /// Token lifetime for tokens issued from now on.
    pub fn set_token_ttl(&self, d: Duration) {
        self.state().token_ttl = d;
    }

    /// Revokes every token issued so far (the next call with one fails authentication).
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    /// The status EJBCA answers for an unknown or expired token (403 as EJBCA's exception
    /// mapper does; 401 as OAuth resource servers usually do).
    pub fn set_bad_token_status(&self, status: u16) {
        self.state().bad_token_status = status;
    }
}

impl Shared {
    fn issue(&self, st: &mut SimState, a: &Approval) -> Result<Vec<u8>, (u16, Value)> {
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

async fn handle(
    s: Arc<Shared>,
    client_cert: bool,
    req: Request<hyper::body::Incoming>,
) -> Result<Resp, std::io::Error> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let authorization = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let latency = s.state.lock().map(|st| st.latency).unwrap_or_default();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if path == TOKEN_PATH {
        return Ok(token_endpoint(&s, &method, content_type.as_deref(), authorization.as_deref(), &body));
    }
    let route = match s.api.route(&method, &path) {
        Ok(r) => r,
        Err((status, m)) => {
            let (st, b) = ejbca_error(status, &m);
            return Ok(json_response(st, &b));
        }
    };
    let mut st = s.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Authentication, as EJBCA's BaseRestResource.getAdmin: client certificate or bearer token.
    let auth = match authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")) {
        Some(token) => match st.tokens.get(token) {
            Some(exp) if Instant::now() < *exp => "bearer",
            _ => {
                let code = st.bad_token_status;
                st.requests.push(Logged { operation: route.operation_id.clone(), body: None, auth: "bearer" });
                let (c, b) = ejbca_error(
                    code,
                    "Authentication failed using OAuth Bearer Token: the token is expired or unknown.",
                );
                return Ok(json_response(c, &b));
            }
        },
        None if client_cert => "mtls",
        None => {
            st.requests.push(Logged { operation: route.operation_id.clone(), body: None, auth: "none" });
            let (c, b) = ejbca_error(403, "Error no client certificate or OAuth token received for authentication.");
            return Ok(json_response(c, &b));
        }
    };
    let parsed = s.api.check_request(&route, content_type.as_deref(), &body);
    st.requests.push(Logged {
        operation: route.operation_id.clone(),
        body: parsed.as_ref().ok().cloned().flatten(),
        auth,
    });
    if route.operation_id == "enrollPkcs10Certificate" {
        s.enroll_calls.fetch_add(1, Ordering::SeqCst);
    }
    let body = match parsed {
        Ok(b) => b,
        Err(m) => {
            st.violations.push(format!("{} {}: {m}", method, route.template));
            let (c, b) = ejbca_error(400, &format!("Invalid input (simulator: {m})"));
            return Ok(json_response(c, &b));
        }
    };
    if st.ca_offline {
        let (c, b) = ejbca_error(503, CA_OFFLINE);
        return Ok(json_response(c, &b));
    }
    let fault = st
        .faults
        .iter()
        .position(|(op, _)| op == "*" || *op == route.operation_id)
        .and_then(|i| st.faults.remove(i))
        .map(|(_, f)| f);
    match &fault {
        Some(Fault::Status(code)) => {
            let msg = match code {
                500 => "General failure.",
                503 => CA_OFFLINE,
                _ => "Simulated failure.",
            };
            let (c, b) = ejbca_error(*code, msg);
            return Ok(json_response(c, &b));
        }
        Some(Fault::Garbage) => {
            return Ok(Response::builder()
                .status(if route.operation_id == "enrollPkcs10Certificate" { 201 } else { 200 })
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"<html><body>Proxy error \x00\x01 {\"certificate\":")))
                .unwrap_or_default());
        }
        Some(Fault::Reset) => return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated reset")),
        _ => {}
    }
    let (status, answer) = match dispatch(&s, &mut st, &route, body.as_ref()) {
        Ok(Answer::Json(status, v)) => (status, Some(v)),
        Ok(Answer::Pem(text)) => {
            return Ok(Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .body(Full::new(Bytes::from(text)))
                .unwrap_or_default());
        }
        Err((status, v)) => (status, Some(v)),
    };
    match fault {
        Some(Fault::GarbageAfterIssue) => {
            return Ok(Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{\"certificate\": \"MII")))
                .unwrap_or_default());
        }
        Some(Fault::ResetAfterIssue) => {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated reset after issuing"));
        }
        _ => {}
    }
    let answer = answer.unwrap_or(Value::Null);
    if let Err(m) = s.api.check_response(&route, status, &answer) {
        st.violations.push(format!("simulator answer to {} {} broke the spec: {m}", method, route.template));
    }
    Ok(json_response(status, &answer))
}

enum Answer {
    Json(u16, Value),
    Pem(String),
}

type Handled = Result<Answer, (u16, Value)>;

fn str_field<'a>(body: Option<&'a Value>, key: &str) -> &'a str {
    body.and_then(|b| b.get(key)).and_then(Value::as_str).unwrap_or_default()
}

fn dispatch(s: &Shared, st: &mut SimState, route: &Route, body: Option<&Value>) -> Handled {
    match route.operation_id.as_str() {
        "status_2" | "status" | "status_1" | "status_3" => Ok(Answer::Json(
            200,
            json!({ "status": "OK", "version": "1.0", "revision": "EJBCA 9.1.1 Community (certbridge simulator)" }),
        )),
        "listCas" => Ok(Answer::Json(
            200,
            json!({ "certificate_authorities": s.pki.cas.iter().enumerate().map(|(i, c)| json!({
                "id": 1000 + i as i64,
                "name": c.name,
                "subject_dn": c.subject_dn,
                "issuer_dn": "CN=certbridge Sim Root CA,O=certbridge sim",
                "expiration_date": "2036-01-01T00:00:00Z",
            })).collect::<Vec<_>>() }),
        )),
        "getCertificateAsPem" => {
            let dn = &route.params["subject_dn"];
            let ca = s
                .pki
                .cas
                .iter()
                .find(|c| &c.subject_dn == dn)
                .ok_or_else(|| ejbca_error(404, &format!("CA with DN {dn} doesn't exist.")))?;
            Ok(Answer::Pem(ca.chain_der.iter().map(|d| certbridge::pki::to_pem(d)).collect()))
        }
        "enrollPkcs10Certificate" => enroll(s, st, body),
        "searchCertificates" => search(st, body),
        "finalizeEnrollment" => finalize(s, st, route, body),
        other => Err(ejbca_error(501, &format!("the simulator does not implement {other}"))),
    }
}

/// EJBCA's `end_time` format; anything else is refused (EJBCA ignores it with a log line).
fn parse_end_time(v: &str) -> Result<jiff::Timestamp, String> {
    jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", v)
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp())
        .map_err(|_| format!("Invalid end_time {v:?}: use \"yyyy-MM-dd HH:mm:ss\" (UTC)"))
}

fn enroll(s: &Shared, st: &mut SimState, body: Option<&Value>) -> Handled {
    let format = str_field(body, "response_format");
    let format = if format.is_empty() { "DER".to_owned() } else { format.to_uppercase() };
    if format != "DER" && format != "PKCS7" {
        return Err(ejbca_error(400, "Invalid input. Response format can only be DER or PKCS7"));
    }
    if format == "PKCS7" {
        return Err(ejbca_error(501, "the simulator answers DER only"));
    }
    let ca_name = str_field(body, "certificate_authority_name");
    let ca = s.pki.ca(ca_name).ok_or_else(|| ejbca_error(400, &format!("CA with name \"{ca_name}\" doesn't exist")))?;
    let cp = str_field(body, "certificate_profile_name");
    if !s.opts.certificate_profiles.iter().any(|p| p == cp) {
        return Err(ejbca_error(400, &format!("Certificate profile with name \"{cp}\" doesn't exist")));
    }
    let eep = str_field(body, "end_entity_profile_name");
    if !s.opts.end_entity_profiles.iter().any(|p| p == eep) {
        return Err(ejbca_error(400, &format!("End entity profile with name \"{eep}\" doesn't exist")));
    }
    let csr = str_field(body, "certificate_request");
    if certbridge::Csr::from_pem(csr).is_err() {
        return Err(ejbca_error(400, "Invalid certificate request"));
    }
    let now = jiff::Timestamp::now();
    let validity = match body.and_then(|b| b.get("end_time")).and_then(Value::as_str) {
        Some(v) => {
            let end = parse_end_time(v).map_err(|m| ejbca_error(400, &m))?;
            let secs = end.as_second() - now.as_second();
            if secs <= 0 {
                return Err(ejbca_error(422, "The end time is in the past"));
            }
            Duration::from_secs(secs as u64)
        }
        None => Duration::from_secs(30 * 86400),
    };
    let username = str_field(body, "username");
    if username.is_empty() {
        return Err(ejbca_error(400, "Invalid input. Username must not be empty"));
    }
    let approval = Approval {
        username: username.to_owned(),
        ca: ca_name.to_owned(),
        certificate_profile: cp.to_owned(),
        end_entity_profile: eep.to_owned(),
        csr: csr.to_owned(),
        validity,
        status: ApprovalStatus::Waiting,
    };
    if st.approval != ApprovalMode::Off {
        let id = st.next_approval;
        st.next_approval += 1;
        st.approvals.insert(id, approval);
        let message = if st.approval == ApprovalMode::Finalize {
            format!("Request with Id '{id}' has been added for approval by authorized administrators.")
        } else {
            "Add End Entity Action has been added for approval by authorized administrators.".to_owned()
        };
        return Ok(Answer::Json(202, json!({ "status_code": 202, "info_message": message })));
    }
    let der = s.issue(st, &approval)?;
    let include_chain = body.and_then(|b| b.get("include_chain")).and_then(Value::as_bool).unwrap_or(false);
    let serial = st.issued.last().map(|c| c.serial.clone()).unwrap_or_default();
    let mut resp = json!({
        "certificate": B64.encode(&der),
        "serial_number": serial,
        "response_format": "DER",
        "certificate_profile": cp,
        "end_entity_profile": eep,
    });
    if include_chain {
        resp["certificate_chain"] = json!(ca.chain_der.iter().map(|d| B64.encode(d)).collect::<Vec<_>>());
    }
    Ok(Answer::Json(201, resp))
}

fn search(st: &mut SimState, body: Option<&Value>) -> Handled {
    let max = body.and_then(|b| b["max_number_of_results"].as_u64()).unwrap_or(0) as usize;
    let mut hits: Vec<&IssuedCert> = st.issued.iter().collect();
    for c in body.and_then(|b| b["criteria"].as_array()).into_iter().flatten() {
        let (prop, value, op) = (
            c["property"].as_str().unwrap_or_default(),
            c["value"].as_str().unwrap_or_default(),
            c["operation"].as_str().unwrap_or_default(),
        );
        match (prop, op) {
            ("QUERY", "EQUAL") => hits.retain(|h| h.username == value || h.serial == value),
            ("QUERY", "LIKE") => hits.retain(|h| h.username.contains(value)),
            ("CA", "EQUAL") => hits.retain(|h| h.ca == value),
            ("CERTIFICATE_PROFILE", "EQUAL") => hits.retain(|h| h.certificate_profile == value),
            ("END_ENTITY_PROFILE", "EQUAL") => hits.retain(|h| h.end_entity_profile == value),
            ("ISSUED_DATE", "AFTER" | "BEFORE") => {
                let t: jiff::Timestamp =
                    value.parse().map_err(|_| ejbca_error(400, &format!("Invalid ISO 8601 date {value:?}")))?;
                if op == "AFTER" {
                    hits.retain(|h| h.issued_at > t);
                } else {
                    hits.retain(|h| h.issued_at < t);
                }
            }
            _ => return Err(ejbca_error(400, &format!("Invalid search criteria {prop} {op}"))),
        }
    }
    let more = hits.len() > max;
    let certificates: Vec<Value> = hits
        .iter()
        .take(max)
        .map(|h| {
            json!({
                "certificate": B64.encode(&h.der),
                "serial_number": h.serial,
                "response_format": "DER",
                "certificate_profile": h.certificate_profile,
                "end_entity_profile": h.end_entity_profile,
            })
        })
        .collect();
    Ok(Answer::Json(200, json!({ "certificates": certificates, "more_results": more })))
}

fn finalize(s: &Shared, st: &mut SimState, route: &Route, body: Option<&Value>) -> Handled {
    let id: i32 = route.params["request_id"].parse().map_err(|_| ejbca_error(404, "bad request id"))?;
    let format = str_field(body, "response_format");
    let a = st
        .approvals
        .get(&id)
        .cloned()
        .ok_or_else(|| ejbca_error(400, &format!("Could not find request with Id '{id}'")))?;
    match a.status {
        ApprovalStatus::Waiting => {
            return Ok(Answer::Json(
                202,
                json!({ "status_code": 202, "info_message": format!("Request with Id '{id}' is still waiting for approval") }),
            ));
        }
        ApprovalStatus::Rejected => return Err(ejbca_error(400, &format!("Request with Id '{id}' has been rejected"))),
        ApprovalStatus::Finalized => {
            return Err(ejbca_error(400, &format!("Enrollment with Id '{id}' has already been finalized")));
        }
        ApprovalStatus::Approved => {}
    }
    if format != "DER" {
        return Err(ejbca_error(
            400,
            "Invalid response format. Cannot create keystore for certificate request  with user generated keys",
        ));
    }
    let der = s.issue(st, &a)?;
    if let Some(x) = st.approvals.get_mut(&id) {
        x.status = ApprovalStatus::Finalized;
    }
    let serial = st.issued.last().map(|c| c.serial.clone()).unwrap_or_default();
    Ok(Answer::Json(201, json!({ "certificate": B64.encode(&der), "serial_number": serial, "response_format": "DER" })))
}

fn token_endpoint(
    s: &Shared,
    method: &str,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> Resp {
    s.token_calls.fetch_add(1, Ordering::SeqCst);
    let mut st = s.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let form: BTreeMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    st.requests.push(Logged { operation: "token".into(), body: Some(json!(form)), auth: "none" });
    if let Some(i) = st.faults.iter().position(|(op, _)| op == "token")
        && let Some((_, Fault::Status(code))) = st.faults.remove(i)
    {
        return json_response(code, &json!({ "error": "server_error" }));
    }
    if method != "POST" || !content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
        return json_response(400, &json!({ "error": "invalid_request", "error_description": "POST a form" }));
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return json_response(400, &json!({ "error": "unsupported_grant_type" }));
    }
    let basic = authorization.and_then(|a| a.strip_prefix("Basic ")).and_then(|b| B64.decode(b).ok()).and_then(|d| {
        let text = String::from_utf8(d).ok()?;
        let (id, secret) = text.split_once(':')?;
        let dec = |v: &str| form_urlencoded::parse(format!("v={v}").as_bytes()).next().map(|(_, v)| v.into_owned());
        Some((dec(id)?, dec(secret)?))
    });
    let (id, secret) = basic.unwrap_or_else(|| {
        (form.get("client_id").cloned().unwrap_or_default(), form.get("client_secret").cloned().unwrap_or_default())
    });
    if id != s.opts.client_id || secret != s.opts.client_secret {
        return json_response(
            401,
            &json!({ "error": "invalid_client", "error_description": "Invalid client or Invalid client credentials" }),
        );
    }
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let ttl = st.token_ttl;
    st.tokens.insert(token.clone(), Instant::now() + ttl);
    json_response(200, &json!({ "access_token": token, "token_type": "Bearer", "expires_in": ttl.as_secs() }))
}

/// EJBCA's wording of a signing failure.
fn sign_error_message(e: certbridge::testing::SimSignError) -> String {
    use certbridge::testing::SimSignError;
    match e {
        SimSignError::InvalidCsr(e) => format!("Invalid certificate request: {e}"),
        SimSignError::Template(e) => e,
        SimSignError::Signing(e) => format!("General failure: {e}"),
    }
}
