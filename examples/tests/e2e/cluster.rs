//! The framework's controllers with the LocalCA signer, in-process, against kube-sim.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use certbridge::api::CertificateRequest;
use certbridge::runtime::{self, ControllerHandle, Options};
use certbridge::testing::{self, approve, create_certificate_request, deny, wait_condition, wait_ready};
use certbridge::{Issued, Issuer, IssuerScope, Resources, SignContext, SignError, SignRequest, Signer, async_trait};
use certbridge_example_ca::{LocalCaSigner, LocalCaSpec};
use certbridge_testkit::{KubeSim, Verb};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::support::{TestCa, kubectl};

const NS: &str = "team-a";
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a test body, turning a hang (an await that never returns) into a failure instead of a
/// stuck CI job. Not a speed assertion: the bound is far above any normal run.
async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(120), body).await.expect("the test hung for 2 minutes")
}

/// The LocalCA signer, counting its sign calls (shared across controller restarts).
#[derive(Clone, Default)]
struct Counting(Arc<AtomicUsize>);

impl Counting {
    fn signs(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Signer for Counting {
    type Spec = LocalCaSpec;

    async fn sign(&self, r: &SignRequest, i: &Issuer<LocalCaSpec>, c: &mut SignContext) -> Result<Issued, SignError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        LocalCaSigner.sign(r, i, c).await
    }

    async fn check(&self, issuer: &Issuer<LocalCaSpec>, resources: &Resources) -> Result<certbridge::Ready, SignError> {
        LocalCaSigner.check(issuer, resources).await
    }
}

/// kube-sim with cert-manager's and LocalCA's CRDs, namespaces `team-a` and `cert-manager`, the CA
/// Secret `ca-key-pair` in both, and the controllers running.
struct Env {
    sim: KubeSim,
    client: kube::Client,
    ca: TestCa,
    signer: Counting,
    controller: Option<ControllerHandle>,
}

impl Env {
    async fn new() -> Env {
        let sim = KubeSim::start().await.unwrap();
        sim.install_cert_manager_crds().await.unwrap();
        let client = sim.client();
        testing::install_crds::<LocalCaSpec>(&client).await.unwrap();
        let ca = TestCa::new(&["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        for ns in [NS, "cert-manager"] {
            testing::create_namespace(&client, ns).await.unwrap();
            Api::<Secret>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &ca.secret(ns, "ca-key-pair"))
                .await
                .unwrap();
        }
        let mut env = Env { sim, client, ca, signer: Counting::default(), controller: None };
        env.start_controller().await;
        env
    }

    async fn start_controller(&mut self) {
        let handle = runtime::start(self.signer.clone(), self.client.clone(), Options::default()).await.unwrap();
        self.controller = Some(handle);
    }

    async fn stop_controller(&mut self) {
        if let Some(handle) = self.controller.take() {
            handle.shutdown().await;
        }
    }

    async fn issuer(&self, scope: IssuerScope, name: &str) {
        let spec = LocalCaSpec { secret_name: "ca-key-pair".into() };
        testing::create_issuer(&self.client, scope, NS, name, &spec).await.unwrap();
        testing::wait_issuer_ready::<LocalCaSpec>(&self.client, scope, NS, name, TIMEOUT).await.unwrap();
    }

    /// Creates a CertificateRequest from an openssl-made CSR for `<name>.example` naming LocalCAIssuer `issuer`.
    async fn request(&self, name: &str, issuer: &str) -> CertificateRequest {
        let csr = self.ca.csr(name, &[&format!("{name}.example")]);
        let cr = testing::certificate_request::<LocalCaSpec>(NS, name, &csr, IssuerScope::Namespaced, issuer);
        create_certificate_request(&self.client, &cr).await.unwrap()
    }

    async fn get(&self, name: &str) -> CertificateRequest {
        Api::<CertificateRequest>::namespaced(self.client.clone(), NS).get(name).await.unwrap()
    }

    async fn shutdown(mut self) {
        self.stop_controller().await;
        self.sim.shutdown().await;
    }
}

fn text(b: &Option<k8s_openapi::ByteString>) -> String {
    String::from_utf8(b.as_ref().expect("set").0.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_request_is_issued_with_a_chain_openssl_verifies() {
    bounded(async {
        let env = Env::new().await;
        env.issuer(IssuerScope::Namespaced, "ca").await;
        env.request("web", "ca").await;
        approve(&env.client, NS, "web").await.unwrap();
        let cr = wait_ready(&env.client, NS, "web", TIMEOUT).await.unwrap();

        let ready = cr.condition("Ready").unwrap();
        assert_eq!(ready.reason.as_deref(), Some("Issued"));
        let status = cr.status.as_ref().unwrap();
        env.ca.assert_verifies("web", &text(&status.certificate));
        assert_eq!(text(&status.ca).trim(), env.ca.read("ca.crt").trim());
        assert_eq!(env.signer.signs(), 1);
        env.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unapproved_request_is_left_untouched_and_a_denied_one_fails_as_denied() {
    bounded(async {
        let env = Env::new().await;
        env.issuer(IssuerScope::Namespaced, "ca").await;
        let waiting = env.request("waiting", "ca").await;
        env.request("denied", "ca").await;
        deny(&env.client, NS, "denied").await.unwrap();
        let denied =
            wait_condition(&env.client, NS, "denied", "Ready", "False", Some("Denied"), TIMEOUT).await.unwrap();
        assert!(denied.status.as_ref().unwrap().failure_time.is_some(), "a denied request gets a failureTime");
        // One more request, approved and issued after the others were created: by then the controller
        // has seen the unapproved one, and must have written nothing to it.
        env.request("later", "ca").await;
        approve(&env.client, NS, "later").await.unwrap();
        wait_ready(&env.client, NS, "later", TIMEOUT).await.unwrap();

        let now = env.get("waiting").await;
        assert_eq!(now.metadata.resource_version, waiting.metadata.resource_version, "nothing was written");
        assert!(now.status.is_none_or(|s| s.conditions.is_empty() && s.certificate.is_none()));
        assert_eq!(env.signer.signs(), 1, "only the approved request was signed");
        env.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_missing_issuer_pends_then_is_issued_once_the_issuer_appears() {
    bounded(async {
        let env = Env::new().await;
        env.request("early", "not-yet").await;
        approve(&env.client, NS, "early").await.unwrap();
        let pending =
            wait_condition(&env.client, NS, "early", "Ready", "False", Some("Pending"), TIMEOUT).await.unwrap();
        let message = pending.condition("Ready").unwrap().message.clone().unwrap_or_default();
        assert!(message.contains("not-yet"), "the message names the issuer: {message}");
        assert_eq!(env.signer.signs(), 0);

        env.issuer(IssuerScope::Namespaced, "not-yet").await;
        let cr = wait_ready(&env.client, NS, "early", TIMEOUT).await.unwrap();
        env.ca.assert_verifies("early", &text(&cr.status.unwrap().certificate));
        env.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_does_no_duplicate_work() {
    bounded(async {
        let mut env = Env::new().await;
        env.issuer(IssuerScope::Namespaced, "ca").await;
        env.request("done", "ca").await;
        approve(&env.client, NS, "done").await.unwrap();
        wait_ready(&env.client, NS, "done", TIMEOUT).await.unwrap();
        env.request("half", "second").await;
        approve(&env.client, NS, "half").await.unwrap();
        wait_condition(&env.client, NS, "half", "Ready", "False", Some("Pending"), TIMEOUT).await.unwrap();

        // Restart mid-way: one request issued, one waiting for its issuer.
        env.stop_controller().await;
        let done = env.get("done").await;
        env.sim.faults().reset_counts();
        env.start_controller().await;
        env.issuer(IssuerScope::Namespaced, "second").await;
        wait_ready(&env.client, NS, "half", TIMEOUT).await.unwrap();

        assert_eq!(env.signer.signs(), 2, "each request was signed exactly once");
        assert_eq!(
            env.get("done").await.metadata.resource_version,
            done.metadata.resource_version,
            "the issued request was not touched"
        );
        // After the restart, the only request writes are for `half`: its Ready status (one per state change).
        let writes = env.sim.faults().count(Verb::Patch, "certificaterequests")
            + env.sim.faults().count(Verb::Update, "certificaterequests");
        assert!(writes >= 1, "the waiting request was written");
        env.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_csr_is_signed_after_kubectl_certificate_approve() {
    bounded(async {
        let env = Env::new().await;
        env.issuer(IssuerScope::Cluster, "cluster-ca").await;
        let csr_pem = env.ca.csr("kube", &["kube.example"]);
        let signer_name = testing::cluster_signer_name::<LocalCaSpec>("cluster-ca");
        assert_eq!(signer_name, "localcaclusterissuers.example.certbridge.io/cluster-ca");
        testing::create_kubernetes_csr(&env.client, &testing::kubernetes_csr("kube", &csr_pem, &signer_name))
            .await
            .unwrap();

        let kubeconfig = env.ca.path("kubeconfig");
        env.sim.write_kubeconfig(&kubeconfig).unwrap();
        let out = kubectl(&kubeconfig, &["certificate", "approve", "kube"]);
        assert!(out.contains("approved"), "{out}");

        let chain = testing::wait_kubernetes_csr_certificate(&env.client, "kube", TIMEOUT).await.unwrap();
        env.ca.assert_verifies("kube", &chain);
        let text = crate::support::openssl(env.ca.dir.path(), &["x509", "-in", "kube.crt", "-noout", "-text"]);
        assert!(text.contains("TLS Web Server Authentication") && text.contains("DNS:kube.example"), "{text}");
        env.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_kubernetes_csr_is_never_signed() {
    bounded(async {
        let env = Env::new().await;
        env.issuer(IssuerScope::Cluster, "cluster-ca").await;
        let signer_name = testing::cluster_signer_name::<LocalCaSpec>("cluster-ca");
        for name in ["denied", "approved"] {
            let csr = testing::kubernetes_csr(name, &env.ca.csr(name, &[&format!("{name}.example")]), &signer_name);
            testing::create_kubernetes_csr(&env.client, &csr).await.unwrap();
        }
        testing::deny_kubernetes_csr(&env.client, "denied").await.unwrap();
        let err = testing::wait_kubernetes_csr_certificate(&env.client, "denied", TIMEOUT).await.unwrap_err();
        assert!(err.to_string().contains("is Denied: KubectlDeny"), "{err}");
        // Approved after the denied one: once it is signed, the controller has seen both.
        testing::approve_kubernetes_csr(&env.client, "approved").await.unwrap();
        let chain = testing::wait_kubernetes_csr_certificate(&env.client, "approved", TIMEOUT).await.unwrap();
        env.ca.assert_verifies("approved", &chain);

        let denied = Api::<CertificateSigningRequest>::all(env.client.clone()).get("denied").await.unwrap();
        assert!(denied.status.unwrap().certificate.is_none(), "the denied CSR got no certificate");
        assert_eq!(env.signer.signs(), 1, "only the approved CSR was signed");
        env.shutdown().await;
    })
    .await;
}

/// Issue 10 item 2: a problem in the referenced Secret makes the issuer not ready (never Failed
/// forever), and fixing the Secret brings it back without touching the issuer or restarting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_ca_secret_is_fixed_and_the_issuer_becomes_ready_again() {
    bounded(async {
        let env = Env::new().await;
        env.issuer(IssuerScope::Namespaced, "ca").await;
        let issuers = testing::issuer_api::<LocalCaSpec>(&env.client, IssuerScope::Namespaced, NS);
        let generation = issuers.get("ca").await.unwrap().metadata.generation;
        let secrets = Api::<Secret>::namespaced(env.client.clone(), NS);
        let good = secrets.get("ca-key-pair").await.unwrap();

        let mut broken = good.clone();
        broken.data.get_or_insert_default().insert("tls.key".into(), k8s_openapi::ByteString(b"not a key".to_vec()));
        secrets.replace("ca-key-pair", &PostParams::default(), &broken).await.unwrap();
        let not_ready = testing::wait_issuer_not_ready::<LocalCaSpec>(
            &env.client,
            IssuerScope::Namespaced,
            NS,
            "ca",
            None,
            TIMEOUT,
        )
        .await
        .unwrap();
        assert!(not_ready.message.contains("Secret \"team-a/ca-key-pair\" key \"tls.key\""), "{not_ready:?}");
        assert!(!not_ready.message.contains("not a key"), "the content is never quoted: {not_ready:?}");

        let mut fixed = secrets.get("ca-key-pair").await.unwrap();
        fixed.data = good.data.clone();
        secrets.replace("ca-key-pair", &PostParams::default(), &fixed).await.unwrap();
        testing::wait_issuer_ready::<LocalCaSpec>(&env.client, IssuerScope::Namespaced, NS, "ca", TIMEOUT)
            .await
            .unwrap();
        assert_eq!(issuers.get("ca").await.unwrap().metadata.generation, generation, "the issuer was not touched");
        env.shutdown().await;
    })
    .await;
}
