//! The real controllers (`certbridge::runtime`) on the embedded API server, signing at the Venafi
//! simulator: TPP and Cloud auth through the controller (both issuer scopes), 202 + a long pending
//! request across a controller restart (issued once), click-Retry recovery, token expiry mid-run,
//! a Failed request with TPP's text, a deleted issuer's client dropped (and a re-created one never
//! reusing it), and a rotated refresh token written back through the framework.

use std::sync::Arc;
use std::time::Duration;

use certbridge::api::CertificateRequest;
use certbridge::runtime::{ControllerHandle, Options};
use certbridge::testing::{
    approve, certificate_request, create_certificate_request, create_issuer, generate_csr, install_crds,
    wait_condition, wait_issuer_not_ready, wait_issuer_ready, wait_ready,
};
use certbridge::{Issued, Issuer, IssuerScope, KeyKind, Resources, SignContext, SignError, SignRequest, Signer};
use certbridge_testkit::KubeSim;
use certbridge_venafi::sim::{Fault, Issuance, RequestAnswer, VenafiSim};
use certbridge_venafi::{VenafiIssuerSpec, VenafiSigner};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::common::{Auth, NS, secrets, sim, spec};

const TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const CLUSTER_NS: &str = "cert-manager";

struct Cluster {
    kube: KubeSim,
    client: kube::Client,
    venafi: VenafiSim,
    scope: IssuerScope,
    auth: Auth,
}

impl Cluster {
    async fn new(auth: Auth, scope: IssuerScope) -> Cluster {
        let mut opts = certbridge_testkit::SimOptions::default();
        opts.namespaces.push(NS.into());
        let kube = KubeSim::start_with(opts).await.expect("kube-sim starts");
        kube.install_cert_manager_crds().await.expect("cert-manager CRDs");
        let client = kube.client();
        install_crds::<VenafiIssuerSpec>(&client).await.expect("Venafi issuer CRDs");
        let venafi = sim().await;
        let ns = match scope {
            IssuerScope::Namespaced => NS,
            IssuerScope::Cluster => CLUSTER_NS,
        };
        for s in secrets(&venafi, auth, ns) {
            Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &s).await.expect("Secret");
        }
        Cluster { kube, client, venafi, scope, auth }
    }

    async fn start(&self, opts: Options) -> ControllerHandle {
        self.start_with(VenafiSigner::new(), opts).await
    }

    async fn start_with<S: certbridge::Signer>(&self, signer: S, opts: Options) -> ControllerHandle {
        certbridge::runtime::start(signer, self.client.clone(), opts).await.expect("controllers start")
    }

    async fn issuer_ready(&self) {
        self.issuer_ready_with(spec(&self.venafi, self.auth)).await;
    }

    async fn issuer_ready_with(&self, spec: VenafiIssuerSpec) {
        create_issuer(&self.client, self.scope, NS, "venafi", &spec).await.expect("issuer");
        wait_issuer_ready::<VenafiIssuerSpec>(&self.client, self.scope, NS, "venafi", TIMEOUT)
            .await
            .expect("issuer Ready");
    }

    async fn request(&self, name: &str, cn: &str) -> String {
        let (csr, _key) = generate_csr(&KeyKind::EcP256, &[cn]).expect("CSR");
        let cr = certificate_request::<VenafiIssuerSpec>(NS, name, &csr, self.scope, "venafi");
        create_certificate_request(&self.client, &cr).await.expect("CertificateRequest");
        approve(&self.client, NS, name).await.expect("approve");
        csr
    }

    async fn get(&self, name: &str) -> CertificateRequest {
        Api::<CertificateRequest>::namespaced(self.client.clone(), NS).get(name).await.expect("get request")
    }

    async fn stop(self, handle: ControllerHandle) {
        assert!(self.venafi.violations().is_empty(), "{:?}", self.venafi.violations());
        handle.shutdown().await;
        self.kube.shutdown().await;
    }
}

/// The signer, shared with the test so it can look into the client cache.
struct Shared(Arc<VenafiSigner>);

#[certbridge::async_trait]
impl Signer for Shared {
    type Spec = VenafiIssuerSpec;
    async fn sign(
        &self,
        request: &SignRequest,
        issuer: &Issuer<VenafiIssuerSpec>,
        ctx: &mut SignContext,
    ) -> Result<Issued, SignError> {
        self.0.sign(request, issuer, ctx).await
    }
    async fn check(
        &self,
        issuer: &Issuer<VenafiIssuerSpec>,
        resources: &Resources,
    ) -> Result<certbridge::Ready, SignError> {
        self.0.check(issuer, resources).await
    }
    fn revokes(&self, issuer: &Issuer<VenafiIssuerSpec>) -> bool {
        self.0.revokes(issuer)
    }
    async fn revoke(
        &self,
        certificate_pem: &str,
        request: &certbridge::RequestObject,
        issuer: &Issuer<VenafiIssuerSpec>,
        resources: &Resources,
    ) -> Result<(), SignError> {
        self.0.revoke(certificate_pem, request, issuer, resources).await
    }
}

fn ready(cr: &CertificateRequest) -> (String, String, String) {
    cr.condition("Ready")
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
        .unwrap_or_default()
}

/// The chain: leaf for the CSR's key, then the issuing CA; `status.ca` = the simulator's root.
fn assert_issued(c: &Cluster, cr: &CertificateRequest, csr: &str) {
    let status = cr.status.as_ref().expect("status");
    let chain = String::from_utf8(status.certificate.as_ref().expect("certificate").0.clone()).unwrap();
    let ca = String::from_utf8(status.ca.as_ref().expect("ca").0.clone()).unwrap();
    let blocks = pem::parse_many(&chain).unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[1].contents(), c.venafi.ca_der().as_slice());
    assert_eq!(pem::parse(&ca).unwrap().contents(), pem::parse(c.venafi.root_pem()).unwrap().contents());
    let issued = certbridge::Issued { chain_pem: chain, ca_pem: None };
    assert_eq!(issued.leaf_public_key_der().unwrap(), certbridge::Csr::from_pem(csr).unwrap().public_key_der);
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpp_and_cloud_issue_through_the_controller() {
    for (auth, scope) in [(Auth::Password, IssuerScope::Namespaced), (Auth::ServiceAccount, IssuerScope::Cluster)] {
        let c = Cluster::new(auth, scope).await;
        let handle = c.start(Options::default()).await;
        c.issuer_ready().await;
        let mut csrs = vec![];
        for i in 0..3 {
            csrs.push(c.request(&format!("web{i}"), &format!("web{i}.team-a.example")).await);
        }
        for (i, csr) in csrs.iter().enumerate() {
            let cr = wait_ready(&c.client, NS, &format!("web{i}"), TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("{auth:?}: {e}"));
            assert_issued(&c, &cr, csr);
            assert_eq!(c.venafi.requests_for(csr), 1);
        }
        if auth == Auth::Password {
            assert_eq!(c.venafi.logins(), 1, "one login for the issuer check and three requests");
        } else {
            assert_eq!(c.venafi.calls("cloud-token"), 1, "one Cloud token");
        }
        // No credential reaches the requests, the issuer or the events.
        let o = c.venafi.options().clone();
        // The final events are created in the background: wait for them so the search covers them.
        handle.flush_events().await;
        let crs = Api::<CertificateRequest>::namespaced(c.client.clone(), NS).list(&Default::default()).await.unwrap();
        let events =
            Api::<k8s_openapi::api::events::v1::Event>::all(c.client.clone()).list(&Default::default()).await.unwrap();
        let text = serde_json::to_string(&(&crs.items, &events.items)).unwrap();
        assert!(!text.contains(&o.password) && !text.contains(&o.jwt), "{auth:?}: a credential leaked");
        c.stop(handle).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_202_and_long_pending_survive_a_restart_and_issue_once() {
    // Username/password: a refresh token rotated by the first controller is dead for the second
    // one unless persisted (tpp.persistRefreshedToken: the last test).
    let c = Cluster::new(Auth::Password, IssuerScope::Namespaced).await;
    c.venafi.set_request_answer(RequestAnswer::Accepted202);
    c.venafi.set_issuance(Issuance::Approval);
    let handle = c.start(Options::default()).await;
    c.issuer_ready().await;
    let csr = c.request("slow", "slow.team-a.example").await;
    eventually("two pickup attempts", || c.venafi.retrieves_for(&csr) >= 2).await;
    let cr = c.get("slow").await;
    let (status, reason, message) = ready(&cr);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Pending"), "{message}");
    assert!(message.contains("being processed, Status: Post CSR"), "{message}");
    let annotations = cr.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations.contains_key("state.venafi.certbridge.io/pickup-id"), "{annotations:?}");
    handle.shutdown().await;

    // A new controller (new signer, new token cache) only retrieves.
    let seen = c.venafi.retrieves_for(&csr);
    let handle = c.start(Options::default()).await;
    eventually("the restarted controller polling", || c.venafi.retrieves_for(&csr) >= seen + 2).await;
    c.venafi.approve_all();
    let cr = wait_ready(&c.client, NS, "slow", TIMEOUT).await.expect("issued after approval");
    assert_issued(&c, &cr, &csr);
    assert_eq!((c.venafi.requests_for(&csr), c.venafi.issued_for(&csr)), (1, 1), "requested and issued once");
    assert_eq!(c.venafi.logins(), 2, "one login per controller process");
    c.stop(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_retry_recovers_and_token_expiry_fails_nothing() {
    let c = Cluster::new(Auth::Password, IssuerScope::Namespaced).await;
    let handle = c.start(Options::default()).await;
    c.issuer_ready().await;
    c.venafi.push_fault("request", Fault::ClickRetry);
    let csr = c.request("retry", "retry.team-a.example").await;
    let cr = wait_ready(&c.client, NS, "retry", TIMEOUT).await.expect("issued after reset");
    assert_issued(&c, &cr, &csr);
    assert_eq!((c.venafi.requests_for(&csr), c.venafi.calls("reset")), (2, 1));
    let annotations = cr.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations.contains_key("state.venafi.certbridge.io/reset-retried"), "recorded: {annotations:?}");

    // Every token dies mid-run: one refresh, no failed request.
    c.venafi.expire_access_tokens();
    let mut csrs = vec![];
    for i in 0..3 {
        csrs.push(c.request(&format!("after{i}"), &format!("after{i}.team-a.example")).await);
    }
    for (i, csr) in csrs.iter().enumerate() {
        let cr = wait_ready(&c.client, NS, &format!("after{i}"), TIMEOUT).await.expect("issued");
        assert_issued(&c, &cr, csr);
    }
    assert_eq!((c.venafi.logins(), c.venafi.refreshes()), (1, 1));

    // TPP's text verbatim on a Failed request, with the fix.
    c.venafi.set_forbid_key_reuse(true);
    let (csr, _) = generate_csr(&KeyKind::EcP256, &["dup.team-a.example"]).unwrap();
    for name in ["dup1", "dup2"] {
        let cr = certificate_request::<VenafiIssuerSpec>(NS, name, &csr, c.scope, "venafi");
        create_certificate_request(&c.client, &cr).await.unwrap();
        approve(&c.client, NS, name).await.unwrap();
        if name == "dup1" {
            wait_ready(&c.client, NS, name, TIMEOUT).await.expect("the first use of the key is issued");
        }
    }
    let cr = wait_condition(&c.client, NS, "dup2", "Ready", "False", Some("Failed"), TIMEOUT).await.expect("Failed");
    let (_, _, message) = ready(&cr);
    assert!(
        message.contains("Private key reuse has not been allowed") && message.contains("rotationPolicy"),
        "{message}"
    );
    c.stop(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_zone_holds_the_issuer_not_ready() {
    let c = Cluster::new(Auth::AccessToken, IssuerScope::Namespaced).await;
    let handle = c.start(Options::default()).await;
    let mut s = spec(&c.venafi, c.auth);
    s.zone = "Certificates\\Missing".into();
    create_issuer(&c.client, c.scope, NS, "venafi", &s).await.unwrap();
    let got = wait_issuer_not_ready::<VenafiIssuerSpec>(&c.client, c.scope, NS, "venafi", None, TIMEOUT).await.unwrap();
    assert!(got.message.contains("ZoneNotFound") && got.message.contains("Missing"), "{}", got.message);
    c.stop(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_persisted_and_survives_a_restart() {
    let c = Cluster::new(Auth::RefreshToken, IssuerScope::Namespaced).await;
    let secrets_api = Api::<Secret>::namespaced(c.client.clone(), NS);
    let token_in_secret = async || {
        let s = secrets_api.get("creds").await.unwrap();
        let data = s.data.unwrap_or_default();
        String::from_utf8(data["refresh-token"].0.clone()).unwrap()
    };
    let original = token_in_secret().await;
    let mut s = spec(&c.venafi, c.auth);
    s.tpp.as_mut().unwrap().persist_refreshed_token = Some(true);
    let handle = c.start(Options::default()).await;
    c.issuer_ready_with(s).await;
    let csr = c.request("one", "one.team-a.example").await;
    wait_ready(&c.client, NS, "one", TIMEOUT).await.expect("issued");
    assert_eq!(c.venafi.requests_for(&csr), 1);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while token_in_secret().await == original {
        assert!(tokio::time::Instant::now() < deadline, "the rotated refresh token was never written back");
        tokio::time::sleep(POLL).await;
    }
    // The write changed the Secret's resourceVersion; the client holding the token stays cached
    // (IssuerCache::rekey): the next request signs without building a client or refreshing again.
    let csr = c.request("one-b", "one-b.team-a.example").await;
    wait_ready(&c.client, NS, "one-b", TIMEOUT).await.expect("issued after the write");
    assert_eq!(c.venafi.requests_for(&csr), 1);
    assert_eq!(
        (c.venafi.logins(), c.venafi.refreshes()),
        (0, 1),
        "writing the Secret back did not cause another refresh"
    );
    handle.shutdown().await;

    // A new controller starts from the Secret: the persisted token works, the original is dead.
    let handle = c.start(Options::default()).await;
    let csr = c.request("two", "two.team-a.example").await;
    wait_ready(&c.client, NS, "two", TIMEOUT).await.expect("issued after the restart");
    assert_eq!(c.venafi.requests_for(&csr), 1);
    assert_eq!((c.venafi.logins(), c.venafi.refreshes()), (0, 2));
    c.stop(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_issuers_client_is_dropped_and_a_recreated_issuer_builds_its_own() {
    for scope in [IssuerScope::Namespaced, IssuerScope::Cluster] {
        let c = Cluster::new(Auth::Password, scope).await;
        let signer = Arc::new(VenafiSigner::new());
        let handle = c.start_with(Shared(signer.clone()), Options::default()).await;
        c.issuer_ready().await;
        let csr = c.request("before", "before.team-a.example").await;
        wait_ready(&c.client, NS, "before", TIMEOUT).await.expect("issued");
        assert_eq!(c.venafi.requests_for(&csr), 1);
        assert_eq!((signer.cached_clients(), c.venafi.logins()), (1, 1), "{scope:?}: one client, one login");

        // Deleted: the issuer controller's watch sees it and the framework evicts the client.
        certbridge::testing::issuer_api::<VenafiIssuerSpec>(&c.client, scope, NS)
            .delete("venafi", &Default::default())
            .await
            .expect("delete the issuer");
        eventually("the deleted issuer's client dropped", || signer.cached_clients() == 0).await;

        // Re-created under the same name (a new UID): its own client, so its own login.
        c.issuer_ready().await;
        let csr = c.request("after", "after.team-a.example").await;
        wait_ready(&c.client, NS, "after", TIMEOUT).await.expect("issued by the re-created issuer");
        assert_eq!(c.venafi.requests_for(&csr), 1);
        assert_eq!((signer.cached_clients(), c.venafi.logins()), (1, 2), "{scope:?}: a new client for the new object");
        c.stop(handle).await;
    }
}
