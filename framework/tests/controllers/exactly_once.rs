//! The framework's side of exactly-once and trusted state (issues 11 and 12), through the real
//! controllers on kube-sim with an EJBCA-like signer: it writes an "enroll started" marker before
//! enrolling, searches instead of enrolling when it finds one, keeps an `approval-id` while the
//! CA waits for an approval, and its `check` fails while the CA is down.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certbridge::api::CertificateRequest;
use certbridge::runtime::{ControllerHandle, Options};
use certbridge::state_auth::{StateKey, StateOwner, mac_annotation};
use certbridge::testing::{
    TestCa, approve, certificate_request, create_certificate_request, wait_condition, wait_ready,
};
use certbridge::{
    Issued, Issuer, IssuerScope, IssuerSpec, KeyKind, Resources, SignContext, SignError, SignRequest, Signer,
};
use certbridge_testkit::{FaultRule, Faults, KubeSim, Verb};
use kube::api::{Api, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use crate::support::{NS, TIMEOUT, csr, leaf_key};

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LikeSpec {}

impl IssuerSpec for LikeSpec {
    const GROUP: &'static str = "like.certbridge.io";
    const NAME: &'static str = "Like";
}

const STATE: &str = "state.like.certbridge.io/";

/// How the "CA" answers an enrollment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Issues at once.
    Issue,
    /// The first enrollment reaches the CA but its answer is lost (a timeout); the watch of
    /// CertificateRequests stops delivering (and cannot re-list) from just before the marker is
    /// saved until the next sign call.
    TimeoutWhileTheWatchLags,
    /// Every enrollment waits for an approval that never comes.
    ApprovalNeverComes,
    /// A CA without search (AD CS): its order id is the only way back to an order, and the
    /// first order's id arrives while the API server refuses every state save of that pass.
    NoSearchSaveFails,
}

struct Ca {
    root: TestCa,
    mode: Mutex<Mode>,
    /// Enrollments per CSR public key.
    enrolled: Mutex<Vec<Vec<u8>>>,
    down: AtomicBool,
    sign_calls: AtomicUsize,
    check_calls: AtomicUsize,
    seen: Mutex<Vec<BTreeMap<String, String>>>,
    /// Approval ids the signer collected a certificate for (a forged one would show here).
    approvals_used: Mutex<Vec<String>>,
    faults: Mutex<Option<(Faults, Vec<certbridge_testkit::FaultId>)>>,
}

#[derive(Clone)]
struct LikeSigner(Arc<Ca>);

impl LikeSigner {
    fn new(mode: Mode) -> Self {
        LikeSigner(Arc::new(Ca {
            root: TestCa::new(&KeyKind::EcP256).unwrap(),
            mode: Mutex::new(mode),
            enrolled: Mutex::default(),
            down: AtomicBool::new(false),
            sign_calls: AtomicUsize::new(0),
            check_calls: AtomicUsize::new(0),
            seen: Mutex::default(),
            approvals_used: Mutex::default(),
            faults: Mutex::default(),
        }))
    }

    fn enrollments(&self) -> usize {
        self.0.enrolled.lock().unwrap().len()
    }

    fn issue(&self, req: &SignRequest) -> Result<Issued, SignError> {
        let params = certbridge::pki::certificate_params(req, None)?;
        let leaf = params
            .signed_by(&certbridge::pki::subject_public_key(req)?, self.0.root.issuer())
            .map_err(|e| SignError::permanent(e.to_string()))?;
        Issued::from_pem_bundle(&format!("{}{}", leaf.pem(), self.0.root.cert_pem())).map_err(SignError::permanent)
    }

    /// The watch of CertificateRequests lags: open watches close, and re-watching or re-listing
    /// fails until [`LikeSigner::watch_catches_up`].
    fn watch_lags(&self) {
        let mut f = self.0.faults.lock().unwrap();
        let (faults, ids) = f.as_mut().expect("faults handle set");
        for verb in [Verb::Watch, Verb::List] {
            ids.push(faults.inject(
                FaultRule::error(500, "InternalError", "the watch lags").verb(verb).resource("certificaterequests"),
            ));
        }
        faults.drop_watches();
    }

    /// The next `n` patches of CertificateRequests fail (the pass's state saves come before its
    /// status write).
    fn state_saves_fail(&self, n: u32) {
        let mut f = self.0.faults.lock().unwrap();
        let (faults, _) = f.as_mut().expect("faults handle set");
        faults.inject(
            // 500, not 503: kube's client retries a 503 by itself.
            FaultRule::error(500, "InternalError", "the API server is away")
                .verb(Verb::Patch)
                .resource("certificaterequests")
                .times(n),
        );
    }

    fn watch_catches_up(&self) {
        if let Some((faults, ids)) = self.0.faults.lock().unwrap().as_mut() {
            for id in ids.drain(..) {
                faults.remove(id);
            }
        }
    }
}

#[certbridge::async_trait]
impl Signer for LikeSigner {
    type Spec = LikeSpec;

    async fn sign(&self, req: &SignRequest, _: &Issuer<LikeSpec>, ctx: &mut SignContext) -> Result<Issued, SignError> {
        let call = self.0.sign_calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.seen.lock().unwrap().push(ctx.state_map().clone());
        let mode = *self.0.mode.lock().unwrap();
        if call >= 2 && mode == Mode::TimeoutWhileTheWatchLags {
            self.watch_catches_up();
        }
        if self.0.down.load(Ordering::SeqCst) {
            return Err(SignError::transient("connection refused by the CA"));
        }
        if mode == Mode::NoSearchSaveFails {
            if ctx.state("order-id").is_some() {
                return self.issue(req);
            }
            // No search: without the id, ordering again is all the signer can do.
            self.0.enrolled.lock().unwrap().push(req.csr.public_key_der.clone());
            ctx.set_state("order-id", format!("o-{call}"));
            if call == 1 {
                self.state_saves_fail(2);
            }
            ctx.save_state().await?;
            return Err(SignError::pending("the CA is processing the order", Duration::from_millis(300)));
        }
        if let Some(id) = ctx.state("approval-id").map(str::to_owned) {
            // Collect the approved certificate: with a forged id, someone else's.
            self.0.approvals_used.lock().unwrap().push(id.clone());
            return Err(SignError::pending(format!("waiting for approval {id}"), Duration::from_millis(300)));
        }
        if ctx.state("marker").is_some() {
            // An enrollment may have reached the CA: search for it, never enroll again.
            let key = &req.csr.public_key_der;
            if self.0.enrolled.lock().unwrap().iter().any(|k| k == key) {
                return self.issue(req);
            }
            return Err(SignError::transient("enrolled but not found by search yet"));
        }
        if mode == Mode::TimeoutWhileTheWatchLags && call == 1 {
            self.watch_lags();
        }
        ctx.set_state("marker", format!("enroll-{call}"));
        ctx.save_state().await?;
        self.0.enrolled.lock().unwrap().push(req.csr.public_key_der.clone());
        match mode {
            Mode::Issue | Mode::NoSearchSaveFails => self.issue(req),
            Mode::TimeoutWhileTheWatchLags if call == 1 => Err(SignError::transient("enroll timed out")),
            Mode::TimeoutWhileTheWatchLags => self.issue(req),
            Mode::ApprovalNeverComes => {
                let id = format!("own-{call}");
                ctx.set_state("approval-id", id.clone());
                Err(SignError::pending(format!("waiting for approval {id}"), Duration::from_millis(300)))
            }
        }
    }

    async fn check(&self, _: &Issuer<LikeSpec>, _: &Resources) -> Result<certbridge::Ready, SignError> {
        self.0.check_calls.fetch_add(1, Ordering::SeqCst);
        if self.0.down.load(Ordering::SeqCst) {
            return Err(SignError::transient("the CA is unreachable: connection refused"));
        }
        Ok(certbridge::Ready::default())
    }
}

struct LikeEnv {
    sim: KubeSim,
    client: kube::Client,
    signer: LikeSigner,
    handle: ControllerHandle,
}

impl LikeEnv {
    async fn start(signer: LikeSigner, opts: Options) -> LikeEnv {
        let sim = KubeSim::start().await.unwrap();
        sim.install_cert_manager_crds().await.unwrap();
        let client = sim.client();
        certbridge::testing::install_crds::<LikeSpec>(&client).await.unwrap();
        certbridge::testing::create_namespace(&client, NS).await.unwrap();
        *signer.0.faults.lock().unwrap() = Some((sim.faults(), vec![]));
        let handle = certbridge::runtime::start(signer.clone(), client.clone(), opts).await.unwrap();
        let mut ready = handle.ready();
        assert!(matches!(tokio::time::timeout(TIMEOUT, ready.wait_for(|r| *r)).await, Ok(Ok(_))));
        certbridge::testing::create_issuer(&client, IssuerScope::Namespaced, NS, "ca", &LikeSpec {}).await.unwrap();
        certbridge::testing::wait_issuer_ready::<LikeSpec>(&client, IssuerScope::Namespaced, NS, "ca", TIMEOUT)
            .await
            .unwrap();
        LikeEnv { sim, client, signer, handle }
    }

    async fn stop(self) {
        self.signer.watch_catches_up();
        self.handle.shutdown().await;
        self.sim.shutdown().await;
    }

    fn request(name: &str) -> (CertificateRequest, Vec<u8>) {
        let (pem, key) = csr(&format!("{name}.example.com"));
        (certificate_request::<LikeSpec>(NS, name, &pem, IssuerScope::Namespaced, "ca"), key)
    }

    async fn events(&self) -> Vec<(String, String)> {
        self.handle.flush_events().await;
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), NS);
        let list = api.list(&Default::default()).await.unwrap().items;
        list.into_iter().map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default())).collect()
    }
}

fn options() -> Options {
    Options { max_retry_duration: Duration::from_secs(180), ..Options::default() }
}

/// A CA's order id that arrived while the API server refused the state save is kept in memory
/// and handed to the next `sign`: a CA without search is not asked twice (AD CS's "ID could not
/// be saved" window, found by its chaos run).
#[tokio::test]
async fn state_a_failed_save_could_not_write_reaches_the_next_sign() {
    let env = LikeEnv::start(LikeSigner::new(Mode::NoSearchSaveFails), options()).await;
    let (req, key) = LikeEnv::request("unsaved");
    create_certificate_request(&env.client, &req).await.unwrap();
    approve(&env.client, NS, "unsaved").await.unwrap();
    let done = wait_ready(&env.client, NS, "unsaved", TIMEOUT).await.unwrap();
    assert_eq!(leaf_key(&done.status.unwrap().certificate.unwrap().0), key);
    let seen = env.signer.0.seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    assert_eq!(seen[1].get("order-id").map(String::as_str), Some("o-1"), "{seen:?}");
    assert_eq!(env.signer.enrollments(), 1, "ordered again: {seen:?}");
    // Written once the API server answered again.
    let annotations = done.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get(&format!("{STATE}order-id")).map(String::as_str), Some("o-1"));
    env.stop().await;
}

/// Issue 12, "stale cache": the enrollment's answer is lost and the request watch lags, so the
/// informer still holds the request as it was before the marker was saved when the retry comes.
/// The framework must hand `sign` the marker it saved (it reads the request afresh), so the
/// signer searches instead of enrolling a second time.
#[tokio::test]
async fn a_lagging_watch_never_hands_sign_older_state_than_the_controller_saved() {
    let env = LikeEnv::start(LikeSigner::new(Mode::TimeoutWhileTheWatchLags), options()).await;
    let (req, key) = LikeEnv::request("lagging");
    create_certificate_request(&env.client, &req).await.unwrap();
    approve(&env.client, NS, "lagging").await.unwrap();
    let done = wait_ready(&env.client, NS, "lagging", TIMEOUT).await.unwrap();
    assert_eq!(leaf_key(&done.status.unwrap().certificate.unwrap().0), key);
    let seen = env.signer.0.seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    assert_eq!(seen[1].get("marker").map(String::as_str), Some("enroll-1"), "the retry saw the saved marker: {seen:?}");
    assert_eq!(env.signer.enrollments(), 1, "the CA was asked to enroll once");
    env.stop().await;
}

/// Issue 11, "trusted state": a requester who can patch the CertificateRequest writes an
/// `approval-id` (another team's approval) and an enrollment marker, without a MAC or with a MAC
/// made with a key of their own. Neither reaches the signer: it starts from empty state, enrolls
/// its own request, and never collects the forged approval; a Warning event names the keys (not
/// the values), and the signer's first save replaces the forged annotations.
#[tokio::test]
async fn forged_approval_id_and_marker_are_never_used() {
    let env = LikeEnv::start(LikeSigner::new(Mode::Issue), options()).await;
    let api: Api<CertificateRequest> = Api::namespaced(env.client.clone(), NS);
    let forged = BTreeMap::from([
        ("approval-id".to_owned(), "victim-approval-7".to_owned()),
        ("marker".to_owned(), "forged-marker".to_owned()),
    ]);
    for (name, with_mac) in [("no-mac", false), ("wrong-key-mac", true)] {
        let (req, _) = LikeEnv::request(name);
        let created = create_certificate_request(&env.client, &req).await.unwrap();
        let uid = created.metadata.uid.clone().unwrap();
        let mut annotations: serde_json::Map<String, serde_json::Value> =
            forged.iter().map(|(k, v)| (format!("{STATE}{k}"), v.clone().into())).collect();
        if with_mac {
            let (tenant_key, _) = StateKey::generate();
            let owner = StateOwner { kind: "CertificateRequest", namespace: NS, name, uid: &uid };
            annotations.insert(mac_annotation(LikeSpec::GROUP), tenant_key.sign(&owner, &forged).into());
        }
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        approve(&env.client, NS, name).await.unwrap();
        let done = wait_ready(&env.client, NS, name, TIMEOUT).await.unwrap();
        let annotations = done.metadata.annotations.unwrap_or_default();
        assert!(!annotations.contains_key(&format!("{STATE}approval-id")), "forged key removed: {annotations:?}");
        let marker = annotations.get(&format!("{STATE}marker")).map(String::as_str);
        assert!(marker.is_some_and(|m| m.starts_with("enroll-")), "the signer's own marker: {annotations:?}");
        assert!(annotations.contains_key(&mac_annotation(LikeSpec::GROUP)), "the controller signed its own state");
    }
    let seen = env.signer.0.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.get("approval-id").is_none()), "a forged approval id reached sign: {seen:?}");
    assert!(seen.iter().all(|s| s.get("marker").is_none_or(|m| m != "forged-marker")), "forged marker: {seen:?}");
    assert!(env.signer.0.approvals_used.lock().unwrap().is_empty());
    assert_eq!(env.signer.enrollments(), 2, "each request enrolled (no search on a forged marker)");
    let events = env.events().await;
    let rejected: Vec<_> = events.iter().filter(|(r, _)| r == "StateRejected").collect();
    assert!(rejected.len() >= 2, "{events:?}");
    for (_, note) in &rejected {
        assert!(note.contains("approval-id") && note.contains("marker"), "names the keys: {note}");
        assert!(!note.contains("victim-approval-7") && !note.contains("forged-marker"), "never values: {note}");
    }
    env.stop().await;
}

/// Issue 12, "approval without an id": a request the CA keeps answering "pending" for fails after
/// `--max-pending`, saying what to check; it is enrolled once.
#[tokio::test]
async fn a_request_pending_longer_than_max_pending_fails_saying_what_to_check() {
    let opts = Options { max_pending: Duration::from_secs(2), ..options() };
    let env = LikeEnv::start(LikeSigner::new(Mode::ApprovalNeverComes), opts).await;
    let (req, _) = LikeEnv::request("stuck");
    create_certificate_request(&env.client, &req).await.unwrap();
    approve(&env.client, NS, "stuck").await.unwrap();
    let failed = wait_condition(&env.client, NS, "stuck", "Ready", "False", Some("Failed"), TIMEOUT).await.unwrap();
    let message = failed.condition("Ready").unwrap().message.clone().unwrap();
    assert!(
        message
            .starts_with("Failed permanently to sign CertificateRequest: the request has been pending at the CA for "),
        "{message}"
    );
    assert!(
        message.contains("--max-pending 2s") && message.contains("approved") && message.contains("queue"),
        "{message}"
    );
    assert!(message.ends_with("The CA's last answer: waiting for approval own-1"), "{message}");
    assert!(failed.status.unwrap().failure_time.is_some());
    assert_eq!(env.signer.enrollments(), 1);
    env.stop().await;
}

/// Issue 12, "the issuer stays Ready through a CA outage": repeated transient sign errors make
/// the controller check the issuer at once; the check (not the sign errors) turns it not ready,
/// and once the CA is back the issuer is Ready again and the request is issued.
#[tokio::test]
async fn a_ca_outage_seen_by_sign_rechecks_the_issuer_at_once() {
    let env = LikeEnv::start(LikeSigner::new(Mode::Issue), options()).await;
    let checks_before = env.signer.0.check_calls.load(Ordering::SeqCst);
    env.signer.0.down.store(true, Ordering::SeqCst);
    let (req, key) = LikeEnv::request("during-outage");
    create_certificate_request(&env.client, &req).await.unwrap();
    approve(&env.client, NS, "during-outage").await.unwrap();
    let not_ready = certbridge::testing::wait_issuer_not_ready::<LikeSpec>(
        &env.client,
        IssuerScope::Namespaced,
        NS,
        "ca",
        None,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert!(not_ready.message.contains("the CA is unreachable"), "the check's message: {}", not_ready.message);
    assert!(env.signer.0.check_calls.load(Ordering::SeqCst) > checks_before);
    assert!(env.signer.0.sign_calls.load(Ordering::SeqCst) >= 3);
    env.signer.0.down.store(false, Ordering::SeqCst);
    certbridge::testing::wait_issuer_ready::<LikeSpec>(&env.client, IssuerScope::Namespaced, NS, "ca", TIMEOUT)
        .await
        .unwrap();
    let done = wait_ready(&env.client, NS, "during-outage", TIMEOUT).await.unwrap();
    assert_eq!(leaf_key(&done.status.unwrap().certificate.unwrap().0), key);
    env.stop().await;
}

/// Issue 12: a CA that keeps returning a certificate for another key is retried (transient), not
/// failed at once, and the max retry duration still bounds it, with the clear message.
#[tokio::test]
async fn a_leaf_for_another_key_is_retried_until_the_max_retry_duration() {
    use crate::support::{Ca, Env, Step, TestSigner};
    let signer = TestSigner::new(Ca::new());
    signer.set_default(Step::WrongKey);
    let opts = Options { max_retry_duration: Duration::from_secs(3), ..crate::support::options() };
    let env = Env::start_with(signer, opts).await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", Default::default()).await;
    let (pem, _) = csr("other-key.example.com");
    let req = certificate_request::<crate::support::TestSpec>(NS, "other-key", &pem, IssuerScope::Namespaced, "ca");
    create_certificate_request(&env.client, &req).await.unwrap();
    approve(&env.client, NS, "other-key").await.unwrap();
    let failed = wait_condition(&env.client, NS, "other-key", "Ready", "False", Some("Failed"), TIMEOUT).await.unwrap();
    let message = failed.condition("Ready").unwrap().message.clone().unwrap();
    assert!(message.contains("the issued certificate's public key does not match the CSR's public key"), "{message}");
    assert!(failed.status.unwrap().certificate.is_none(), "a wrong certificate is never written");
    assert!(env.signer.sign_calls() >= 2, "retried before failing: {} calls", env.signer.sign_calls());
    env.stop().await;
}
