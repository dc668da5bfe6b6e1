//! A Venafi simulator serving TPP's WebSDK and TLS Protect Cloud on one HTTPS port (test
//! equipment; `ca-protocols.md` §3 and §7.2 are its specification).
//!
//! * HTTPS (rustls), HTTP/1.1 only, so that answers can carry TPP's custom reason phrases on the
//!   status line (`Certificate \VED\…\x being processed, Status: Post CSR, Stage: 500.`).
//! * TPP: `vedauth/authorize/{oauth,token,verify}` with expiring access tokens and refresh tokens
//!   that rotate on use (the old one dies) and expire; `vedsdk/certificates/{checkpolicy,request,
//!   retrieve,reset,revoke}` with zones, request answers 200/201/202, pending → issued after a delay or
//!   an approval, the "click Retry" error state cleared by reset, and TPP's error texts verbatim.
//! * Cloud: `tppl-api-key` and service-account tokens (`v1/oauth2/v2.0/<tenant>/token`),
//!   `v1/useraccounts`, application lookup, certificate requests, status, contents (409 pending).
//! * Every JSON body is checked against the field set of its route (§3): an unknown or misspelled
//!   field, a missing required one or a wrong type is a 400 and is recorded in [`VenafiSim::violations`].
//! * Fault hooks ([`VenafiSim::push_fault`]), latency, and counters of logins, refreshes,
//!   requests and retrieves per CSR.

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

mod revoke;

/// A Cloud application: (name, id, [(issuing template alias, template id)]).
pub type App = (String, String, Vec<(String, String)>);

/// What the simulator accepts.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// TPP user.
    pub username: String,
    /// TPP password.
    pub password: String,
    /// OAuth client ids accepted.
    pub client_ids: Vec<String>,
    /// TPP zones (policy folders below `\VED\Policy\`) and the CA each names.
    pub zones: Vec<(String, String)>,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// Cloud API key.
    pub api_key: String,
    /// Cloud tenant id for service accounts.
    pub tenant: String,
    /// The service-account JWT accepted.
    pub jwt: String,
    /// Cloud applications: (name, id, [(alias, template id)]).
    pub apps: Vec<App>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            username: "tppadmin".into(),
            password: "sim-password-8c1e".into(),
            client_ids: vec!["cert-manager.io".into(), "certbridge".into()],
            zones: vec![
                ("Certificates\\Kubernetes".into(), "\\VED\\Policy\\Certificate Authorities\\Sim Issuing CA".into()),
                ("Certificates\\Slow".into(), "\\VED\\Policy\\Certificate Authorities\\Sim Issuing CA".into()),
            ],
            access_ttl: Duration::from_secs(3600),
            refresh_ttl: Duration::from_secs(90 * 86400),
            api_key: "0f9b3c52-sim-api-key-7d21".into(),
            tenant: "sim-tenant-01".into(),
            jwt: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzaW0ifQ.c2ln".into(),
            apps: vec![(
                "Kubernetes".into(),
                "4a1b2c3d-0000-1111-2222-333344445555".into(),
                vec![("Default".into(), "9e8d7c6b-aaaa-bbbb-cccc-ddddeeeeffff".into())],
            )],
        }
    }
}

/// How the simulator answers `certificates/request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestAnswer {
    /// 200 `{CertificateDN, Guid}`.
    Ok200,
    /// 201 `{CertificateDN, Guid}`.
    Created201,
    /// 202 `{CertificateDN, Guid, Error: "...WorkToDoTimeout..."}` (vcert PR #539).
    Accepted202,
}

/// When requested certificates are issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuance {
    /// At once (the first retrieve finds it).
    Immediate,
    /// After this long.
    After(Duration),
    /// Only after [`VenafiSim::approve_all`].
    Approval,
}

/// A fault injected into the next call of an operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer this status, reason phrase and JSON body.
    Status(u16, String, Value),
    /// Close the connection without an answer.
    Reset,
    /// (`request`) the certificate object ends up in TPP's error state: retrieve answers
    /// "…click Retry." until `certificates/reset`.
    ClickRetry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ObjState {
    Pending { since: Instant, approved: bool },
    Error(String),
    Issued(String),
    Rejected(String),
}

#[derive(Debug, Clone)]
struct CertObject {
    csr: String,
    validity: Duration,
    state: ObjState,
}

struct SimState {
    access: HashMap<String, Instant>,
    refresh: HashMap<String, Instant>,
    cloud_tokens: HashMap<String, Instant>,
    objects: BTreeMap<String, CertObject>,
    cloud_requests: BTreeMap<String, CertObject>,
    faults: VecDeque<(String, Fault)>,
    latency: Duration,
    answer: RequestAnswer,
    issuance: Issuance,
    access_ttl: Duration,
    forbid_key_reuse: bool,
    keys_seen: Vec<Vec<u8>>,
    requests_per_csr: HashMap<String, u64>,
    retrieves_per_csr: HashMap<String, u64>,
    issued_per_csr: HashMap<String, u64>,
    /// Every leaf issued (DER), in order: the CA's database for the chaos harness.
    issued_leaves: Vec<Vec<u8>>,
    ops: HashMap<String, u64>,
    violations: Vec<String>,
    bodies: Vec<(String, Value)>,
    next_id: u64,
    revoked: revoke::Revoked,
}

struct Shared {
    pki: SimPki,
    opts: SimOptions,
    state: Mutex<SimState>,
    logins: AtomicU64,
    refreshes: AtomicU64,
}

/// A running simulator; stops when dropped.
pub struct VenafiSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for VenafiSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Resp = Response<Full<Bytes>>;

/// The name of the simulator's issuing CA.
pub const CA_NAME: &str = "Sim Issuing CA";

fn resp(status: u16, reason: Option<&str>, content_type: &str, body: Bytes) -> Resp {
    let mut r = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r.replace(['\r', '\n'], " ")).ok()) {
        r.extensions_mut().insert(reason);
    }
    r
}

fn json_resp(status: u16, reason: Option<&str>, body: &Value) -> Resp {
    resp(status, reason, "application/json; charset=utf-8", Bytes::from(body.to_string()))
}

fn tpp_error(status: u16, message: &str) -> Resp {
    json_resp(status, None, &json!({ "Error": message }))
}

fn cloud_error(status: u16, code: u32, message: &str) -> Resp {
    json_resp(status, None, &json!({ "errors": [{ "code": code, "message": message, "args": [] }] }))
}

/// JSON types of the field sets.
#[derive(Clone, Copy)]
enum T {
    Str,
    Int,
    Bool,
    Any,
    Obj(&'static [(&'static str, T, bool)]),
    List(&'static T),
}

const SAN: T = T::Obj(&[("Type", T::Int, true), ("Name", T::Str, true)]);
const NAME_VALUE: T = T::Obj(&[("Name", T::Str, true), ("Value", T::Str, true)]);
const CUSTOM_FIELD: T = T::Obj(&[("Name", T::Str, true), ("Values", T::List(&T::Str), true)]);

/// `certificates/request` (vcert `certificateRequest`).
const TPP_REQUEST: &[(&str, T, bool)] = &[
    ("PolicyDN", T::Str, true),
    ("CADN", T::Str, false),
    ("ObjectName", T::Str, false),
    ("Subject", T::Str, false),
    ("OrganizationalUnit", T::Str, false),
    ("Organization", T::Str, false),
    ("City", T::Str, false),
    ("State", T::Str, false),
    ("Country", T::Str, false),
    ("SubjectAltNames", T::List(&SAN), false),
    ("Contacts", T::Any, false),
    ("CASpecificAttributes", T::List(&NAME_VALUE), false),
    ("Origin", T::Str, false),
    ("PKCS10", T::Str, false),
    ("KeyAlgorithm", T::Str, false),
    ("KeyBitSize", T::Int, false),
    ("EllipticCurve", T::Str, false),
    ("DisableAutomaticRenewal", T::Bool, false),
    ("CustomFields", T::List(&CUSTOM_FIELD), false),
    ("Devices", T::Any, false),
    ("CertificateType", T::Str, false),
    ("Reenable", T::Bool, false),
    ("WorkToDoTimeout", T::Str, false),
];
const TPP_RETRIEVE: &[(&str, T, bool)] = &[
    ("CertificateDN", T::Str, true),
    ("Format", T::Str, true),
    ("Password", T::Str, false),
    ("IncludePrivateKey", T::Bool, false),
    ("IncludeChain", T::Bool, false),
    ("FriendlyName", T::Str, false),
    ("RootFirstOrder", T::Bool, false),
    ("KeystorePassword", T::Str, false),
];
const TPP_RESET: &[(&str, T, bool)] = &[("CertificateDN", T::Str, true), ("Restart", T::Bool, false)];
const TPP_CHECKPOLICY: &[(&str, T, bool)] = &[("PolicyDN", T::Str, true)];
const OAUTH: &[(&str, T, bool)] =
    &[("client_id", T::Str, true), ("username", T::Str, true), ("password", T::Str, true), ("scope", T::Str, true)];
const REFRESH: &[(&str, T, bool)] = &[("client_id", T::Str, true), ("refresh_token", T::Str, true)];
const API_CLIENT: T = T::Obj(&[("type", T::Str, false), ("identifier", T::Str, false)]);
const CLOUD_REQUEST: &[(&str, T, bool)] = &[
    ("certificateSigningRequest", T::Str, false),
    ("applicationId", T::Str, true),
    ("certificateIssuingTemplateId", T::Str, true),
    ("apiClientInformation", API_CLIENT, false),
    ("validityPeriod", T::Str, false),
    ("tags", T::Any, false),
    ("certificateOwnerUserId", T::Str, false),
    ("existingCertificateId", T::Str, false),
    ("certificateUsageMetadata", T::Any, false),
    ("reuseCSR", T::Bool, false),
    ("isVaaSGenerated", T::Bool, false),
    ("csrAttributes", T::Any, false),
];

fn check_type(path: &str, v: &Value, t: T) -> Result<(), String> {
    match (t, v) {
        (T::Any, _) | (_, Value::Null) => Ok(()),
        (T::Str, Value::String(_)) | (T::Bool, Value::Bool(_)) => Ok(()),
        (T::Int, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(()),
        (T::List(inner), Value::Array(items)) => {
            items.iter().enumerate().try_for_each(|(i, x)| check_type(&format!("{path}[{i}]"), x, *inner))
        }
        (T::Obj(fields), Value::Object(_)) => check_fields(path, v, fields),
        _ => Err(format!("field {path} has the wrong type")),
    }
}

/// Checks `body` against a field set: unknown fields, missing required fields, wrong types.
fn check_fields(path: &str, body: &Value, fields: &[(&str, T, bool)]) -> Result<(), String> {
    let Some(obj) = body.as_object() else {
        return Err(format!("{} is not a JSON object", if path.is_empty() { "the body" } else { path }));
    };
    for k in obj.keys() {
        if !fields.iter().any(|(f, _, _)| f == k) {
            let at = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            return Err(format!("unknown field {at:?}"));
        }
    }
    for (f, t, required) in fields {
        let at = if path.is_empty() { (*f).to_owned() } else { format!("{path}.{f}") };
        match obj.get(*f) {
            None if *required => return Err(format!("missing required field {at:?}")),
            None => {}
            Some(v) => check_type(&at, v, *t)?,
        }
    }
    Ok(())
}

fn token() -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect()
}

impl VenafiSim {
    /// Starts a simulator.
    pub async fn start(opts: SimOptions) -> Result<VenafiSim, String> {
        crate::http::install_crypto_provider();
        let pki = SimPki::generate(&[CA_NAME]).map_err(|e| format!("simulator PKI: {e}"))?;
        let (cert_der, key_der) = pki.server_cert("venafi-sim").map_err(|e| format!("server certificate: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(vec![cert_der.into()], rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()))
            .map_err(|e| format!("TLS: {e}"))?;
        // HTTP/1.1 only: HTTP/2 has no reason phrases, and TPP's detail lives there.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind(opts.addr).await.map_err(|e| format!("bind {}: {e}", opts.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            pki,
            state: Mutex::new(SimState {
                access: HashMap::new(),
                refresh: HashMap::new(),
                cloud_tokens: HashMap::new(),
                objects: BTreeMap::new(),
                cloud_requests: BTreeMap::new(),
                faults: VecDeque::new(),
                latency: Duration::ZERO,
                answer: RequestAnswer::Ok200,
                issuance: Issuance::Immediate,
                access_ttl: opts.access_ttl,
                forbid_key_reuse: false,
                keys_seen: vec![],
                requests_per_csr: HashMap::new(),
                retrieves_per_csr: HashMap::new(),
                issued_per_csr: HashMap::new(),
                issued_leaves: vec![],
                ops: HashMap::new(),
                violations: vec![],
                bodies: vec![],
                next_id: 1,
                revoked: Default::default(),
            }),
            opts,
            logins: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let s = s.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(move |req| handle(s.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ok(VenafiSim { shared, addr, task })
    }

    /// `https://127.0.0.1:<port>/vedsdk` (what `spec.tpp.url` takes).
    pub fn tpp_url(&self) -> String {
        format!("https://{}/vedsdk", self.addr)
    }

    /// `https://127.0.0.1:<port>/` (what `spec.cloud.url` takes).
    pub fn cloud_url(&self) -> String {
        format!("https://{}/", self.addr)
    }

    /// The options it runs with (credentials, zones, apps).
    pub fn options(&self) -> &SimOptions {
        &self.shared.opts
    }

    /// The root CA (PEM): trust anchor of the HTTPS server and of issued chains.
    pub fn root_pem(&self) -> String {
        self.shared.pki.root_pem.clone()
    }

    /// The issuing CA's certificate (DER).
    pub fn ca_der(&self) -> Vec<u8> {
        self.shared.pki.ca(CA_NAME).map(|c| c.chain_der[0].clone()).unwrap_or_default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh access token + refresh token pair, as if issued by a login (for Secrets).
    pub fn mint_tokens(&self) -> (String, String) {
        let (a, r) = (token(), token());
        let mut st = self.state();
        let ttl = st.access_ttl;
        st.access.insert(a.clone(), Instant::now() + ttl);
        st.refresh.insert(r.clone(), Instant::now() + self.shared.opts.refresh_ttl);
        (a, r)
    }

    /// `vedauth/authorize/oauth` calls that issued a token.
    pub fn logins(&self) -> u64 {
        self.shared.logins.load(Ordering::SeqCst)
    }

    /// `vedauth/authorize/token` calls that issued a token.
    pub fn refreshes(&self) -> u64 {
        self.shared.refreshes.load(Ordering::SeqCst)
    }

    /// Calls of an operation (`oauth`, `token`, `verify`, `checkpolicy`, `request`, `retrieve`,
    /// `reset`, `useraccounts`, `cloud-token`, `application`, `cloud-request`, `cloud-status`,
    /// `cloud-contents`).
    pub fn calls(&self, op: &str) -> u64 {
        self.state().ops.get(op).copied().unwrap_or(0)
    }

    /// `certificates/request` (TPP) or `certificaterequests` (Cloud) calls for this CSR.
    pub fn requests_for(&self, csr: &str) -> u64 {
        self.state().requests_per_csr.get(csr.trim()).copied().unwrap_or(0)
    }

    /// `certificates/retrieve` calls for this CSR.
    pub fn retrieves_for(&self, csr: &str) -> u64 {
        self.state().retrieves_per_csr.get(csr.trim()).copied().unwrap_or(0)
    }

    /// Certificates issued for this CSR.
    pub fn issued_for(&self, csr: &str) -> u64 {
        self.state().issued_per_csr.get(csr.trim()).copied().unwrap_or(0)
    }

    /// Certificates issued in total.
    pub fn issued_total(&self) -> u64 {
        self.state().issued_per_csr.values().sum()
    }

    /// The DER of every leaf certificate issued so far (TPP and Cloud), in issue order.
    pub fn issued_certificates(&self) -> Vec<Vec<u8>> {
        self.state().issued_leaves.clone()
    }

    /// Bodies that broke the field sets.
    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// The JSON bodies received for `op` (valid ones only; secrets included — it is the CA).
    pub fn bodies(&self, op: &str) -> Vec<Value> {
        self.state().bodies.iter().filter(|(o, _)| o == op).map(|(_, b)| b.clone()).collect()
    }

    /// Delay every answer by `d`.
    pub fn set_latency(&self, d: Duration) {
        self.state().latency = d;
    }

    /// How `certificates/request` answers.
    pub fn set_request_answer(&self, a: RequestAnswer) {
        self.state().answer = a;
    }

    /// When new requests are issued.
    pub fn set_issuance(&self, i: Issuance) {
        self.state().issuance = i;
    }

    /// Lifetime of access tokens issued from now on.
    pub fn set_access_ttl(&self, d: Duration) {
        self.state().access_ttl = d;
    }

    /// Refuse CSRs whose key was seen before (TPP's "Private key reuse has not been allowed").
    pub fn set_forbid_key_reuse(&self, on: bool) {
        self.state().forbid_key_reuse = on;
    }

    /// Injects `fault` into the next call of `op` (see [`VenafiSim::calls`]).
    pub fn push_fault(&self, op: &str, fault: Fault) {
        self.state().faults.push_back((op.to_owned(), fault));
    }

    /// Expires every access token issued so far (refresh tokens stay valid).
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for t in self.state().access.values_mut() {
            *t = now;
        }
    }

    /// Approves every pending certificate (TPP objects and Cloud requests) and issues it at once,
    /// as the CA would, whether or not anyone asks for it again (an orphaned request is issued too).
    pub fn approve_all(&self) {
        let mut st = self.state();
        let st = &mut *st;
        let now = Instant::now();
        for o in st.objects.values_mut().chain(st.cloud_requests.values_mut()) {
            if let ObjState::Pending { approved, .. } = &mut o.state {
                *approved = true;
                let _ =
                    advance(&self.shared, o, Issuance::Approval, now, &mut st.issued_per_csr, &mut st.issued_leaves);
            }
        }
    }

    /// Rejects every pending Cloud request.
    pub fn reject_cloud(&self, message: &str) {
        for o in self.state().cloud_requests.values_mut() {
            if matches!(o.state, ObjState::Pending { .. }) {
                o.state = ObjState::Rejected(message.to_owned());
            }
        }
    }
}

struct Incoming {
    method: String,
    path: String,
    query: String,
    bearer: Option<String>,
    api_key: Option<String>,
    content_type: String,
    body: Bytes,
}

async fn handle(s: Arc<Shared>, req: Request<hyper::body::Incoming>) -> Result<Resp, std::io::Error> {
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bearer = h("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned));
    let api_key = h("tppl-api-key");
    let content_type = h("content-type").unwrap_or_default();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    // A client killed while sending (the chaos harness) leaves a truncated body: that is a dead
    // connection, not a malformed request, so it is dropped rather than recorded as a violation.
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(std::io::Error::other(format!("request body not received: {e}"))),
    };
    let inc = Incoming { method, path, query, bearer, api_key, content_type, body };
    let latency = s.state.lock().map(|st| st.latency).unwrap_or_default();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let op = operation(&inc.method, &inc.path);
    let fault = {
        let mut st = s.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *st.ops.entry(op.to_owned()).or_default() += 1;
        let at = st.faults.iter().position(|(o, _)| o == op || o == "*");
        at.and_then(|i| st.faults.remove(i)).map(|(_, f)| f)
    };
    match fault {
        Some(Fault::Reset) => return Err(std::io::Error::other("simulated connection reset")),
        Some(Fault::Status(status, reason, body)) => return Ok(json_resp(status, Some(&reason), &body)),
        _ => {}
    }
    let click_retry = fault == Some(Fault::ClickRetry);
    Ok(route(&s, op, &inc, click_retry))
}

fn operation(method: &str, path: &str) -> &'static str {
    let p = path.to_ascii_lowercase();
    match (method, p.as_str()) {
        ("POST", "/vedauth/authorize/oauth") => "oauth",
        ("POST", "/vedauth/authorize/token") => "token",
        ("GET", "/vedauth/authorize/verify") => "verify",
        ("POST", "/vedsdk/certificates/checkpolicy") => "checkpolicy",
        ("POST", "/vedsdk/certificates/request") => "request",
        ("POST", "/vedsdk/certificates/retrieve") => "retrieve",
        ("POST", "/vedsdk/certificates/reset") => "reset",
        ("POST", "/vedsdk/certificates/revoke") => "revoke",
        ("GET", "/v1/useraccounts") => "useraccounts",
        ("POST", p) if p.starts_with("/v1/oauth2/v2.0/") && p.ends_with("/token") => "cloud-token",
        ("GET", p) if p.starts_with("/outagedetection/v1/applications/name/") => "application",
        ("POST", "/outagedetection/v1/certificaterequests") => "cloud-request",
        ("GET", p) if p.starts_with("/outagedetection/v1/certificaterequests/") => "cloud-status",
        ("GET", p) if p.starts_with("/outagedetection/v1/certificates/") && p.ends_with("/contents") => {
            "cloud-contents"
        }
        _ => "unknown",
    }
}

fn pct_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn route(s: &Shared, op: &str, inc: &Incoming, click_retry: bool) -> Resp {
    let mut st = s.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let st = &mut *st;
    let now = Instant::now();
    // JSON body against its field set.
    let fields = match op {
        "oauth" => Some(OAUTH),
        "token" => Some(REFRESH),
        "checkpolicy" => Some(TPP_CHECKPOLICY),
        "request" => Some(TPP_REQUEST),
        "retrieve" => Some(TPP_RETRIEVE),
        "reset" => Some(TPP_RESET),
        "revoke" => Some(revoke::FIELDS),
        "cloud-request" => Some(CLOUD_REQUEST),
        _ => None,
    };
    let body: Value = match fields {
        None => Value::Null,
        Some(fields) => {
            let parsed = if inc.content_type.starts_with("application/json") {
                serde_json::from_slice::<Value>(&inc.body).map_err(|e| format!("the body is not JSON: {e}"))
            } else {
                Err(format!("content-type {:?} is not application/json", inc.content_type))
            };
            match parsed.and_then(|v| check_fields("", &v, fields).map(|_| v)) {
                Ok(v) => {
                    st.bodies.push((op.to_owned(), v.clone()));
                    v
                }
                Err(m) => {
                    st.violations.push(format!("{op}: {m}"));
                    return if op.starts_with("cloud") {
                        cloud_error(400, 10001, &m)
                    } else if matches!(op, "oauth" | "token") {
                        json_resp(400, None, &json!({"error": "invalid_request", "error_description": m}))
                    } else {
                        tpp_error(400, &m)
                    };
                }
            }
        }
    };
    let str_of = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    // `Some(answer)` refuses the call.
    let tpp_authed = || match &inc.bearer {
        Some(t) => match st.access.get(t) {
            Some(exp) if *exp > now => None,
            Some(_) => Some(json_resp(
                401,
                None,
                &json!({"error": "expired_token", "error_description": "Access token has expired"}),
            )),
            None => Some(json_resp(
                401,
                None,
                &json!({"error": "invalid_token", "error_description": "Invalid token format"}),
            )),
        },
        None => Some(json_resp(
            401,
            None,
            &json!({"error": "invalid_request", "error_description": "Missing bearer token"}),
        )),
    };
    let cloud_authed = || match (&inc.api_key, &inc.bearer) {
        (Some(k), _) if *k == s.opts.api_key => None,
        (None, Some(t)) if st.cloud_tokens.get(t).is_some_and(|e| *e > now) => None,
        _ => Some(cloud_error(401, 10501, "Invalid or missing credentials")),
    };
    let issue_token = |st: &mut SimState| {
        let (a, r) = (token(), token());
        st.access.insert(a.clone(), now + st.access_ttl);
        st.refresh.insert(r.clone(), now + s.opts.refresh_ttl);
        let unix = jiff::Timestamp::now().as_second();
        json_resp(
            200,
            None,
            &json!({
                "access_token": a, "refresh_token": r, "expires": unix + st.access_ttl.as_secs() as i64,
                "expires_in": st.access_ttl.as_secs(), "identity": format!("local:{}", s.opts.username),
                "refresh_until": unix + s.opts.refresh_ttl.as_secs() as i64, "scope": "certificate:manage",
                "token_type": "Bearer",
            }),
        )
    };
    match op {
        "oauth" => {
            if !s.opts.client_ids.contains(&str_of("client_id")) {
                return json_resp(
                    400,
                    None,
                    &json!({"error": "invalid_client", "error_description": "The client_id is not registered"}),
                );
            }
            if str_of("username") != s.opts.username || str_of("password") != s.opts.password {
                return json_resp(
                    400,
                    None,
                    &json!({"error": "invalid_grant", "error_description": "Username/password combination not valid"}),
                );
            }
            if !str_of("scope").split(';').any(|x| x.starts_with("certificate")) {
                return json_resp(
                    400,
                    None,
                    &json!({"error": "invalid_scope", "error_description": "Grant rejected scope"}),
                );
            }
            s.logins.fetch_add(1, Ordering::SeqCst);
            issue_token(st)
        }
        "token" => {
            let r = str_of("refresh_token");
            match st.refresh.remove(&r) {
                Some(exp) if exp > now && s.opts.client_ids.contains(&str_of("client_id")) => {
                    s.refreshes.fetch_add(1, Ordering::SeqCst);
                    issue_token(st)
                }
                _ => json_resp(
                    400,
                    None,
                    &json!({"error": "invalid_grant", "error_description": "Refresh token is expired or revoked"}),
                ),
            }
        }
        "verify" => {
            if let Some(r) = tpp_authed() {
                return r;
            }
            let exp = st.access[inc.bearer.as_deref().unwrap_or_default()];
            let left = exp.saturating_duration_since(now).as_secs();
            let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(left as i64);
            json_resp(
                200,
                None,
                &json!({
                    "access_issued_on_ISO8601": jiff::Timestamp::now().to_string(), "application": "cert-manager.io",
                    "expires_ISO8601": expires.to_string(), "grant_issued_on_ISO8601": jiff::Timestamp::now().to_string(),
                    "identity": format!("local:{}", s.opts.username), "scope": "certificate:manage", "valid_for": left,
                }),
            )
        }
        "checkpolicy" => {
            if let Some(r) = tpp_authed() {
                return r;
            }
            let dn = str_of("PolicyDN");
            match zone_of(s, &dn) {
                Some((_, ca)) => {
                    let lv = |v: Value| json!({"Locked": false, "Value": v});
                    json_resp(
                        200,
                        None,
                        &json!({"Error": null, "Policy": {
                            "CertificateAuthority": lv(json!(ca)), "CsrGeneration": lv(json!("UserProvided")),
                            "KeyGeneration": lv(json!("Central")), "ManagementType": lv(json!("Enrollment")),
                            "KeyPair": {"KeyAlgorithm": lv(json!("RSA")), "KeySize": lv(json!(2048)), "EllipticCurve": lv(json!("P256"))},
                            "PrivateKeyReuseAllowed": !st.forbid_key_reuse, "SubjAltNameDnsAllowed": true, "SubjAltNameEmailAllowed": true,
                            "SubjAltNameIpAllowed": true, "SubjAltNameUpnAllowed": true, "SubjAltNameUriAllowed": true,
                            "Subject": {"City": lv(json!("")), "Country": lv(json!("")), "Organization": lv(json!("")), "State": lv(json!("")),
                                        "OrganizationalUnit": {"Locked": false, "Values": []}},
                            "UniqueSubjectEnforced": false, "WhitelistedDomains": [], "WildcardsAllowed": true,
                        }}),
                    )
                }
                None => tpp_error(400, &format!("PolicyDN: {dn} does not exist")),
            }
        }
        "request" => {
            if let Some(r) = tpp_authed() {
                return r;
            }
            let policy = str_of("PolicyDN");
            if zone_of(s, &policy).is_none() {
                return tpp_error(400, &format!("PolicyDN: {policy} does not exist"));
            }
            let csr = str_of("PKCS10");
            let parsed = match certbridge::Csr::from_pem(&csr) {
                Ok(c) => c,
                Err(e) => {
                    return tpp_error(
                        400,
                        &format!("WebSDK CertRequest Module Requested Certificate: PKCS10 is invalid: {e}"),
                    );
                }
            };
            let name = str_of("ObjectName");
            if name.is_empty() {
                return tpp_error(500, "WebSDK CertRequest Module Requested Certificate: Request DN is empty");
            }
            *st.requests_per_csr.entry(csr.trim().to_owned()).or_default() += 1;
            if st.forbid_key_reuse && st.keys_seen.contains(&parsed.public_key_der) {
                return tpp_error(
                    400,
                    "This CSR appears to reuse a private key.  Private key reuse has not been allowed.",
                );
            }
            st.keys_seen.push(parsed.public_key_der.clone());
            let dn = format!("{}\\{}", policy.trim_end_matches('\\'), name);
            if let Some(ObjState::Error(m)) = st.objects.get(&dn).map(|o| o.state.clone()) {
                return tpp_error(400, &m);
            }
            let validity = body
                .get("CASpecificAttributes")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| x["Name"] == "Specific End Date"))
                .and_then(|x| x["Value"].as_str())
                .and_then(|v| v.parse::<jiff::Timestamp>().ok())
                .map(|end| Duration::from_secs((end.as_second() - jiff::Timestamp::now().as_second()).max(3600) as u64))
                .unwrap_or(Duration::from_secs(90 * 86400));
            let state = if click_retry {
                ObjState::Error(
                    "Post CSR failed with error: This certificate cannot be processed while it is in an error state. Fix any errors, and then click Retry."
                        .into(),
                )
            } else {
                ObjState::Pending { since: now, approved: false }
            };
            st.objects.insert(dn.clone(), CertObject { csr: csr.trim().to_owned(), validity, state });
            let guid = format!("{{{:08x}-sim}}", st.next_id);
            st.next_id += 1;
            match st.answer {
                RequestAnswer::Ok200 => json_resp(200, None, &json!({"CertificateDN": dn, "Guid": guid})),
                RequestAnswer::Created201 => json_resp(201, None, &json!({"CertificateDN": dn, "Guid": guid})),
                RequestAnswer::Accepted202 => json_resp(
                    202,
                    None,
                    &json!({
                        "CertificateDN": dn, "Guid": guid, "Devices": [],
                        "Error": "Certificate processing took longer than WorkToDoTimeout. Call certificates/retrieve to get the certificate data",
                    }),
                ),
            }
        }
        "retrieve" => {
            if let Some(r) = tpp_authed() {
                return r;
            }
            let dn = str_of("CertificateDN");
            if str_of("Format") != "base64" {
                return tpp_error(400, "Format is not supported by this simulator (use base64)");
            }
            let issuance = st.issuance;
            let Some(obj) = st.objects.get_mut(&dn) else {
                return tpp_error(400, &format!("Certificate {dn} does not exist."));
            };
            let csr = obj.csr.clone();
            *st.retrieves_per_csr.entry(csr.clone()).or_default() += 1;
            let obj = st.objects.get_mut(&dn).expect("present");
            if let Err(r) = advance(s, obj, issuance, now, &mut st.issued_per_csr, &mut st.issued_leaves) {
                return *r;
            }
            match &obj.state {
                ObjState::Issued(bundle) => {
                    let data = base64::engine::general_purpose::STANDARD.encode(bundle.replace('\n', "\r\n"));
                    json_resp(200, None, &json!({"CertificateData": data, "Filename": "cert.cer", "Format": "base64"}))
                }
                ObjState::Pending { .. } => json_resp(
                    202,
                    Some(&format!("Certificate {dn} being processed, Status: Post CSR, Stage: 500.")),
                    &json!({"Stage": 500, "Status": "Post CSR"}),
                ),
                ObjState::Error(m) => json_resp(500, Some(m), &json!({"Stage": 500, "Status": m})),
                ObjState::Rejected(m) => tpp_error(400, m),
            }
        }
        "reset" => {
            if let Some(r) = tpp_authed() {
                return r;
            }
            let dn = str_of("CertificateDN");
            match st.objects.get_mut(&dn) {
                None => tpp_error(
                    400,
                    &format!("Certificate {dn} does not exist or you do not have sufficient rights to the object."),
                ),
                Some(o) if matches!(o.state, ObjState::Error(_)) => {
                    o.state = ObjState::Pending { since: now, approved: false };
                    json_resp(200, None, &json!({"ProcessingResetCompleted": true}))
                }
                Some(_) => tpp_error(400, "Reset is not completed. No reset is required for the certificate."),
            }
        }
        "revoke" => match tpp_authed() {
            Some(r) => r,
            None => revoke::answer(st, &body),
        },
        "useraccounts" => match cloud_authed() {
            Some(r) => r,
            None => json_resp(
                200,
                None,
                &json!({"user": {"username": "sim@example.com"}, "company": {"name": "Sim"}, "apiKey": {"apiType": "ALL"}}),
            ),
        },
        "cloud-token" => {
            let tenant = pct_decode(inc.path.trim_start_matches("/v1/oauth2/v2.0/").trim_end_matches("/token"));
            let form: HashMap<String, String> = form_urlencoded::parse(&inc.body).into_owned().collect();
            let known = ["grant_type", "client_assertion_type", "client_assertion"];
            if let Some(k) = form.keys().find(|k| !known.contains(&k.as_str())) {
                st.violations.push(format!("cloud-token: unknown form field {k:?}"));
                return json_resp(
                    400,
                    None,
                    &json!({"error": "invalid_request", "error_description": format!("unknown field {k}")}),
                );
            }
            if !inc.content_type.starts_with("application/x-www-form-urlencoded")
                || form.get("grant_type").map(String::as_str) != Some("client_credentials")
                || form.get("client_assertion_type").map(String::as_str)
                    != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            {
                st.violations.push("cloud-token: not a client_credentials JWT-bearer form".into());
                return json_resp(400, None, &json!({"error": "invalid_request", "error_description": "bad form"}));
            }
            if tenant != s.opts.tenant || form.get("client_assertion") != Some(&s.opts.jwt) {
                return json_resp(
                    401,
                    None,
                    &json!({"error": "invalid_client", "error_description": "client assertion rejected"}),
                );
            }
            let t = token();
            st.cloud_tokens.insert(t.clone(), now + st.access_ttl);
            json_resp(
                200,
                None,
                &json!({"access_token": t, "token_type": "Bearer", "expires_in": st.access_ttl.as_secs()}),
            )
        }
        "application" => {
            if let Some(r) = cloud_authed() {
                return r;
            }
            let name = pct_decode(inc.path.trim_start_matches("/outagedetection/v1/applications/name/"));
            match s.opts.apps.iter().find(|(n, _, _)| *n == name) {
                Some((n, id, aliases)) => {
                    let map: serde_json::Map<String, Value> =
                        aliases.iter().map(|(a, c)| (a.clone(), json!(c))).collect();
                    json_resp(200, None, &json!({"id": id, "name": n, "certificateIssuingTemplateAliasIdMap": map}))
                }
                None => cloud_error(404, 10051, &format!("Unable to find application for name {name}")),
            }
        }
        "cloud-request" => {
            if let Some(r) = cloud_authed() {
                return r;
            }
            let app = str_of("applicationId");
            let cit = str_of("certificateIssuingTemplateId");
            if !s.opts.apps.iter().any(|(_, id, a)| *id == app && a.iter().any(|(_, c)| *c == cit)) {
                return cloud_error(400, 10401, "Invalid application or certificate issuing template");
            }
            let csr = str_of("certificateSigningRequest");
            if certbridge::Csr::from_pem(&csr).is_err() {
                return cloud_error(400, 10402, "Invalid CSR");
            }
            let validity = parse_iso_days(&str_of("validityPeriod")).unwrap_or(Duration::from_secs(90 * 86400));
            *st.requests_per_csr.entry(csr.trim().to_owned()).or_default() += 1;
            let id = format!("{:08x}-cloud-req", st.next_id);
            st.next_id += 1;
            st.cloud_requests.insert(
                id.clone(),
                CertObject {
                    csr: csr.trim().to_owned(),
                    validity,
                    state: ObjState::Pending { since: now, approved: false },
                },
            );
            json_resp(
                201,
                None,
                &json!({"certificateRequests": [{"id": id, "status": "REQUESTED", "applicationId": app}]}),
            )
        }
        "cloud-status" => {
            if let Some(r) = cloud_authed() {
                return r;
            }
            let id = pct_decode(inc.path.trim_start_matches("/outagedetection/v1/certificaterequests/"));
            let issuance = st.issuance;
            let Some(obj) = st.cloud_requests.get_mut(&id) else {
                return cloud_error(404, 10404, &format!("Certificate request {id} not found"));
            };
            let _ = advance(s, obj, issuance, now, &mut st.issued_per_csr, &mut st.issued_leaves);
            let (status, ids, err) = match &obj.state {
                ObjState::Issued(_) => ("ISSUED", vec![format!("{id}-leaf"), format!("{id}-ca")], Value::Null),
                ObjState::Pending { approved: false, .. } if issuance == Issuance::Approval => {
                    ("PENDING_APPROVAL", vec![], Value::Null)
                }
                ObjState::Pending { .. } => ("PENDING", vec![], Value::Null),
                ObjState::Rejected(m) | ObjState::Error(m) => {
                    ("REJECTED_APPROVAL", vec![], json!({"type": "REJECTED", "code": 10600, "message": m, "args": []}))
                }
            };
            json_resp(200, None, &json!({"id": id, "status": status, "certificateIds": ids, "errorInformation": err}))
        }
        "cloud-contents" => {
            if let Some(r) = cloud_authed() {
                return r;
            }
            if inc.query != "chainOrder=EE_FIRST&format=PEM" {
                st.violations.push(format!("cloud-contents: query {:?}", inc.query));
                return cloud_error(400, 10001, "unsupported query");
            }
            let id = pct_decode(
                inc.path.trim_start_matches("/outagedetection/v1/certificates/").trim_end_matches("/contents"),
            );
            let req = id.trim_end_matches("-leaf").to_owned();
            match st.cloud_requests.get(&req).map(|o| o.state.clone()) {
                Some(ObjState::Issued(bundle)) => resp(200, None, "text/plain", Bytes::from(bundle)),
                Some(_) => cloud_error(409, 10409, "Certificate is not signed yet"),
                None => cloud_error(404, 10404, &format!("Certificate {id} not found")),
            }
        }
        _ => json_resp(
            404,
            Some("Not Found"),
            &json!({"Error": format!("no such resource {} {}", inc.method, inc.path)}),
        ),
    }
}

/// Moves a pending object along according to the issuance mode (issuing it when due).
fn advance(
    s: &Shared,
    obj: &mut CertObject,
    issuance: Issuance,
    now: Instant,
    issued: &mut HashMap<String, u64>,
    leaves: &mut Vec<Vec<u8>>,
) -> Result<(), Box<Resp>> {
    let ObjState::Pending { since, approved } = obj.state else { return Ok(()) };
    let due = match issuance {
        Issuance::Immediate => true,
        Issuance::After(d) => now >= since + d,
        Issuance::Approval => approved,
    } || approved;
    if !due {
        return Ok(());
    }
    let ca = s.pki.ca(CA_NAME).ok_or_else(|| Box::new(tpp_error(500, "no CA")))?;
    let der = ca.sign(&obj.csr, obj.validity).map_err(|e| Box::new(tpp_error(500, &sign_error_message(e))))?;
    let mut bundle = certbridge::pki::to_pem(&der);
    for c in &ca.chain_der {
        bundle.push_str(&certbridge::pki::to_pem(c));
    }
    obj.state = ObjState::Issued(bundle);
    *issued.entry(obj.csr.clone()).or_default() += 1;
    leaves.push(der);
    Ok(())
}

fn zone_of<'a>(s: &'a Shared, dn: &str) -> Option<&'a (String, String)> {
    let z = dn.trim_start_matches("\\VED\\Policy\\");
    s.opts.zones.iter().find(|(name, _)| name.eq_ignore_ascii_case(z))
}

fn parse_iso_days(p: &str) -> Option<Duration> {
    let p = p.strip_prefix('P')?;
    let (days, time) = p.split_once('T').unwrap_or((p, ""));
    let d: u64 = days.strip_suffix('D').map(|d| d.parse().ok()).unwrap_or(Some(0))?;
    let h: u64 = time.strip_suffix('H').map(|h| h.parse().ok()).unwrap_or(Some(0))?;
    Some(Duration::from_secs(d * 86400 + h * 3600)).filter(|d| !d.is_zero())
}

/// The simulator's wording of a signing failure.
fn sign_error_message(e: certbridge::testing::SimSignError) -> String {
    use certbridge::testing::SimSignError;
    match e {
        SimSignError::InvalidCsr(e) => format!("invalid CSR: {e}"),
        SimSignError::Template(e) => e,
        SimSignError::Signing(e) => format!("signing failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_sets_refuse_unknown_and_misspelled_fields() {
        let ok = json!({"CertificateDN": "\\VED\\Policy\\a\\b", "Format": "base64", "IncludeChain": true});
        check_fields("", &ok, TPP_RETRIEVE).unwrap();
        let typo = json!({"CertificateDn": "x", "Format": "base64"});
        assert!(check_fields("", &typo, TPP_RETRIEVE).unwrap_err().contains("unknown field \"CertificateDn\""));
        let nested = json!({"PolicyDN": "p", "SubjectAltNames": [{"Type": 2, "Nmae": "a"}]});
        assert!(check_fields("", &nested, TPP_REQUEST).unwrap_err().contains("SubjectAltNames[0].Nmae"));
        let wrong = json!({"PolicyDN": "p", "KeyBitSize": "2048"});
        assert!(check_fields("", &wrong, TPP_REQUEST).unwrap_err().contains("wrong type"));
        assert!(check_fields("", &json!({}), TPP_RESET).unwrap_err().contains("missing required"));
        assert_eq!(parse_iso_days("P90D"), Some(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_iso_days("PT5H"), Some(Duration::from_secs(5 * 3600)));
    }
}
