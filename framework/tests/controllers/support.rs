//! The test signer and a per-test environment (API server + controllers).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certbridge::runtime::{ControllerHandle, Options};
use certbridge::testing::TestCa;
use certbridge::{
    Issued, Issuer, IssuerScope, IssuerSpec, KeyKind, Ready, Resources, SignContext, SignError, SignRequest, Signer,
};
use certbridge_testkit::KubeSim;
use kube::api::Api;
use serde::{Deserialize, Serialize};

pub const NS: &str = "team";
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The test issuer's spec.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestSpec {
    /// A Secret with key `token`; the check passes only when it is `good-s3cr3t` (with a message
    /// naming the Secret), and `expired-s3cr3t` fails with reason `AuthFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Rejected by `validate` when it contains a space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl IssuerSpec for TestSpec {
    const GROUP: &'static str = "test.certbridge.io";
    const NAME: &'static str = "Test";

    fn validate(&self) -> Result<(), String> {
        match &self.profile {
            Some(p) if p.contains(' ') => Err(format!("spec.profile {p:?} must not contain spaces")),
            _ => Ok(()),
        }
    }
}

/// What the next `sign` call does.
#[derive(Clone, Debug)]
pub enum Step {
    /// Issue with the test CA.
    Ok,
    /// Issue a certificate for a different key.
    WrongKey,
    /// Submit to the "CA" (once per request, remembered in the state map) and answer pending;
    /// a later call with the state issues.
    AsyncSubmit,
    Transient(&'static str),
    Permanent(&'static str),
    IssuerNotReady(&'static str),
    WithCondition(&'static str),
}

/// Shared between signer instances so a restarted controller sees the same "CA".
pub struct Ca {
    pub root: TestCa,
    /// Requests submitted to the CA (the async flow); must never be twice for one request.
    pub submissions: AtomicUsize,
}

impl Ca {
    pub fn new() -> Arc<Ca> {
        Arc::new(Ca { root: TestCa::new(&KeyKind::EcP256).unwrap(), submissions: AtomicUsize::new(0) })
    }

    fn issue(&self, req: &SignRequest) -> Result<Issued, SignError> {
        let params = certbridge::pki::certificate_params(req, None)?;
        let leaf = params
            .signed_by(&certbridge::pki::subject_public_key(req)?, self.root.issuer())
            .map_err(|e| SignError::permanent(e.to_string()))?;
        Issued::from_pem_bundle(&format!("{}{}", leaf.pem(), self.root.cert_pem())).map_err(SignError::permanent)
    }
}

#[derive(Default)]
pub struct Script {
    pub steps: Mutex<VecDeque<Step>>,
    /// Used when `steps` is empty.
    pub default: Mutex<Option<Step>>,
    pub sign_calls: AtomicUsize,
    pub check_calls: AtomicUsize,
    /// The state map each sign call saw.
    pub seen_state: Mutex<Vec<BTreeMap<String, String>>>,
    /// What the next `revoke` calls answer before they succeed.
    pub revoke_failures: Mutex<VecDeque<SignError>>,
    pub revoke_calls: AtomicUsize,
    /// The certificates revoked, in order.
    pub revoked: Mutex<Vec<String>>,
}

#[derive(Clone)]
pub struct TestSigner {
    pub ca: Arc<Ca>,
    pub script: Arc<Script>,
}

impl TestSigner {
    pub fn new(ca: Arc<Ca>) -> Self {
        TestSigner { ca, script: Arc::default() }
    }

    pub fn push(&self, steps: impl IntoIterator<Item = Step>) {
        self.script.steps.lock().unwrap().extend(steps);
    }

    pub fn set_default(&self, step: Step) {
        *self.script.default.lock().unwrap() = Some(step);
    }

    pub fn sign_calls(&self) -> usize {
        self.script.sign_calls.load(Ordering::SeqCst)
    }

    pub fn check_calls(&self) -> usize {
        self.script.check_calls.load(Ordering::SeqCst)
    }

    pub fn revoke_calls(&self) -> usize {
        self.script.revoke_calls.load(Ordering::SeqCst)
    }
}

#[certbridge::async_trait]
impl Signer for TestSigner {
    type Spec = TestSpec;

    async fn sign(
        &self,
        request: &SignRequest,
        _issuer: &Issuer<TestSpec>,
        ctx: &mut SignContext,
    ) -> Result<Issued, SignError> {
        self.script.sign_calls.fetch_add(1, Ordering::SeqCst);
        // What an adapter logs: tests/controllers/logs.rs checks it inherits the request's fields.
        tracing::info!(profile = ?_issuer.spec.profile, "test signer: signing");
        self.script.seen_state.lock().unwrap().push(ctx.state_map().clone());
        let step = self
            .script
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .or_else(|| self.script.default.lock().unwrap().clone())
            .unwrap_or(Step::Ok);
        match step {
            Step::Ok => self.ca.issue(request),
            Step::WrongKey => {
                let (leaf, _) = self.ca.root.leaf(&KeyKind::EcP256, &["other.example.com"]).unwrap();
                Issued::from_pem_bundle(&format!("{leaf}{}", self.ca.root.cert_pem())).map_err(SignError::permanent)
            }
            Step::AsyncSubmit => match ctx.state("order") {
                Some(_) => self.ca.issue(request),
                None => {
                    let n = self.ca.submissions.fetch_add(1, Ordering::SeqCst) + 1;
                    ctx.set_state("order", format!("o-{n}"));
                    ctx.save_state().await?;
                    Err(SignError::pending("the CA is processing order", Duration::from_secs(3600)))
                }
            },
            Step::Transient(m) => Err(SignError::transient(m)),
            Step::Permanent(m) => Err(SignError::permanent(m)),
            Step::IssuerNotReady(m) => Err(SignError::issuer_not_ready(m)),
            Step::WithCondition(m) => {
                Err(SignError::pending(m, Duration::from_secs(3600)).with_condition("CAQueue", "True", "Queued"))
            }
        }
    }

    async fn check(&self, issuer: &Issuer<TestSpec>, resources: &Resources) -> Result<Ready, SignError> {
        self.script.check_calls.fetch_add(1, Ordering::SeqCst);
        let Some(name) = &issuer.spec.secret_name else { return Ok(Ready::default()) };
        let token = resources.secret_string(name, "token").await?;
        match token.as_str() {
            "good-s3cr3t" => Ok(Ready::message(format!("the CA accepted the token in Secret {name:?}"))),
            "expired-s3cr3t" => Err(SignError::issuer_not_ready("the CA refused the token").with_reason("AuthFailed")),
            // Only a change of the Secret (or the spec) should make us look again.
            _ => Err(SignError::pending("the CA rejected the credentials", Duration::from_secs(3600))),
        }
    }

    fn revokes(&self, _issuer: &Issuer<TestSpec>) -> bool {
        true
    }

    async fn revoke(
        &self,
        certificate_pem: &str,
        _request: &certbridge::RequestObject,
        _issuer: &Issuer<TestSpec>,
        _resources: &Resources,
    ) -> Result<(), SignError> {
        self.script.revoke_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.script.revoke_failures.lock().unwrap().pop_front() {
            return Err(e);
        }
        self.script.revoked.lock().unwrap().push(certificate_pem.to_owned());
        Ok(())
    }
}

/// An API server with cert-manager's and the test issuer's CRDs, and running controllers.
pub struct Env {
    pub sim: KubeSim,
    pub client: kube::Client,
    pub signer: TestSigner,
    pub handle: Option<ControllerHandle>,
}

pub fn options() -> Options {
    Options { max_retry_duration: Duration::from_secs(180), ..Options::default() }
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(TestSigner::new(Ca::new()), options()).await
    }

    pub async fn start_with(signer: TestSigner, opts: Options) -> Env {
        let sim = KubeSim::start().await.unwrap();
        sim.install_cert_manager_crds().await.unwrap();
        let client = sim.client();
        certbridge::testing::install_crds::<TestSpec>(&client).await.unwrap();
        certbridge::testing::create_namespace(&client, NS).await.unwrap();
        let handle = certbridge::runtime::start(signer.clone(), client.clone(), opts).await.unwrap();
        let mut env = Env { sim, client, signer, handle: Some(handle) };
        env.wait_ready().await;
        env
    }

    pub async fn wait_ready(&mut self) {
        let mut ready = self.handle.as_ref().unwrap().ready();
        let synced = tokio::time::timeout(TIMEOUT, ready.wait_for(|ready| *ready)).await;
        assert!(matches!(synced, Ok(Ok(_))), "controller caches did not sync");
    }

    pub async fn restart(&mut self, signer: TestSigner, opts: Options) {
        self.handle.take().unwrap().shutdown().await;
        self.signer = signer.clone();
        self.handle = Some(certbridge::runtime::start(signer, self.client.clone(), opts).await.unwrap());
        self.wait_ready().await;
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        self.sim.shutdown().await;
    }

    /// A ready issuer of `scope` named `name`.
    pub async fn ready_issuer(&self, scope: IssuerScope, name: &str, spec: TestSpec) {
        certbridge::testing::create_issuer(&self.client, scope, NS, name, &spec).await.unwrap();
        certbridge::testing::wait_issuer_ready::<TestSpec>(&self.client, scope, NS, name, TIMEOUT).await.unwrap();
    }

    /// Events in `namespace` as (reason, note), once the controllers have created the final
    /// events of every request finished so far (they are written in the background).
    pub async fn events(&self, namespace: &str) -> Vec<(String, String)> {
        if let Some(h) = &self.handle {
            h.flush_events().await;
        }
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), namespace);
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }
}

/// A CSR for a fresh P-256 key: (csr_pem, public key DER).
pub fn csr(dns: &str) -> (String, Vec<u8>) {
    let (pem, _key) = certbridge::testing::generate_csr(&KeyKind::EcP256, &[dns]).unwrap();
    let spki = certbridge::Csr::from_pem(&pem).unwrap().public_key_der;
    (pem, spki)
}

/// The leaf public key of a PEM chain.
pub fn leaf_key(chain_pem: &[u8]) -> Vec<u8> {
    Issued { chain_pem: String::from_utf8(chain_pem.to_vec()).unwrap(), ca_pem: None }.leaf_public_key_der().unwrap()
}
