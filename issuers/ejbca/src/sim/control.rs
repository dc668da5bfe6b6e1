//! The handle tests drive: start, addresses and identities, counters, the request log, and the
//! switches (latency, faults, CA outage, approvals, tokens).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use certbridge::testing::SimPki;

use super::front;
use super::openapi::OpenApi;
use super::options::{ApprovalMode, Fault, Logged, SimOptions, TOKEN_PATH};
use super::state::{ApprovalStatus, Shared, SimState};

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

impl EjbcaSim {
    /// Starts a simulator with `opts`.
    pub async fn start(opts: SimOptions) -> Result<EjbcaSim, String> {
        certbridge::runtime::install_crypto_provider();
        let api = OpenApi::load()?;
        let names: Vec<&str> = opts.cas.iter().map(String::as_str).collect();
        let pki = SimPki::generate(&names).map_err(|e| format!("simulator PKI: {e}"))?;
        let client_identity = pki.client_cert("certbridge-ra-admin").map_err(|e| format!("client certificate: {e}"))?;
        let acceptor = front::tls_acceptor(&pki)?;
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
                denied: Default::default(),
                requests: vec![],
                violations: vec![],
            }),
            opts,
            enrollments: AtomicU64::new(0),
            enroll_calls: AtomicU64::new(0),
            token_calls: AtomicU64::new(0),
        });
        let task = front::serve(listener, acceptor, shared.clone());
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

    /// A least-privilege role: the credentials lose (`true`) or regain the access rules of
    /// `operation` (an `operationId`, e.g. `searchCertificates`). Denied calls are authenticated,
    /// logged and validated, then answered `403` with an authorization-denied message, as EJBCA's
    /// `ExceptionHandler` maps `AuthorizationDeniedException`.
    pub fn deny(&self, operation: &str, denied: bool) {
        let mut st = self.state();
        if denied {
            st.denied.insert(operation.to_owned());
        } else {
            st.denied.remove(operation);
        }
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
