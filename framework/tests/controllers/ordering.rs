//! Per-request ordering (issue 16): at any `--concurrency`, two reconciles of one request never
//! run at once, even while the request keeps changing and requeueing during a slow sign.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certbridge::runtime::Options;
use certbridge::testing::{approve, certificate_request, create_certificate_request, wait_ready};
use certbridge::{Issued, Issuer, IssuerScope, Resources, SignContext, SignError, SignRequest, Signer};
use certbridge_testkit::KubeSim;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::support::{Ca, NS, TIMEOUT, TestSpec, csr, options};

/// Answers pending twice per request, then issues; every call sleeps so that overlapping
/// reconciles of one request, if the runtime allowed them, would be seen.
struct Overlap {
    ca: Arc<Ca>,
    /// Sign calls in flight and calls so far, per request name.
    in_flight: Mutex<HashMap<String, (usize, usize)>>,
    /// The most calls ever in flight for one request, and for all requests together.
    max_per_request: AtomicUsize,
    max_overall: AtomicUsize,
    overall: AtomicUsize,
}

#[certbridge::async_trait]
impl Signer for Overlap {
    type Spec = TestSpec;

    async fn sign(&self, req: &SignRequest, _: &Issuer<TestSpec>, _: &mut SignContext) -> Result<Issued, SignError> {
        let key = req.object.name.clone();
        let calls = {
            let mut m = self.in_flight.lock().unwrap();
            let e = m.entry(key.clone()).or_default();
            e.0 += 1;
            e.1 += 1;
            self.max_per_request.fetch_max(e.0, Ordering::SeqCst);
            e.1
        };
        let overall = self.overall.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_overall.fetch_max(overall, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
        self.overall.fetch_sub(1, Ordering::SeqCst);
        self.in_flight.lock().unwrap().get_mut(&key).unwrap().0 -= 1;
        if calls <= 2 {
            return Err(SignError::pending("the CA is still working", Duration::from_millis(10)));
        }
        let params = certbridge::pki::certificate_params(req, None)?;
        let leaf = params
            .signed_by(&certbridge::pki::subject_public_key(req)?, self.ca.root.issuer())
            .map_err(|e| SignError::permanent(e.to_string()))?;
        Issued::from_pem_bundle(&format!("{}{}", leaf.pem(), self.ca.root.cert_pem())).map_err(SignError::permanent)
    }

    async fn check(&self, _: &Issuer<TestSpec>, _: &Resources) -> Result<certbridge::Ready, SignError> {
        Ok(certbridge::Ready::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_two_reconciles_of_one_request_run_at_once_at_any_concurrency() {
    let signer = Arc::new(Overlap {
        ca: Ca::new(),
        in_flight: Mutex::default(),
        max_per_request: AtomicUsize::new(0),
        max_overall: AtomicUsize::new(0),
        overall: AtomicUsize::new(0),
    });
    let sim = KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let client = sim.client();
    certbridge::testing::install_crds::<TestSpec>(&client).await.unwrap();
    certbridge::testing::create_namespace(&client, NS).await.unwrap();
    let opts = Options { concurrency: 8, ..options() };
    let handle = certbridge::runtime::start(ArcSigner(signer.clone()), client.clone(), opts).await.unwrap();
    certbridge::testing::create_issuer(&client, IssuerScope::Namespaced, NS, "ca", &TestSpec::default()).await.unwrap();
    certbridge::testing::wait_issuer_ready::<TestSpec>(&client, IssuerScope::Namespaced, NS, "ca", TIMEOUT)
        .await
        .unwrap();

    let names: Vec<String> = (0..12).map(|i| format!("r{i}")).collect();
    for name in &names {
        let (pem, _) = csr(&format!("{name}.example.com"));
        let cr = certificate_request::<TestSpec>(NS, name, &pem, IssuerScope::Namespaced, "ca");
        create_certificate_request(&client, &cr).await.unwrap();
        approve(&client, NS, name).await.unwrap();
    }
    // Wake every request again and again while its signs are in flight: each annotation change
    // is a new watch event for an object that may be reconciling right now.
    let api: Api<certbridge::api::CertificateRequest> = Api::namespaced(client.clone(), NS);
    for round in 0..5 {
        for name in &names {
            let patch = json!({"metadata": {"annotations": {"test.example.com/poke": round.to_string()}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    for name in &names {
        wait_ready(&client, NS, name, TIMEOUT).await.unwrap();
    }
    let calls: usize = signer.in_flight.lock().unwrap().values().map(|(_, n)| n).sum();
    assert!(calls >= 3 * names.len(), "every request was signed at least three times: {calls}");
    // The runtime did run requests side by side (so the per-request bound is not an accident of
    // a serial run) ...
    assert!(signer.max_overall.load(Ordering::SeqCst) > 1, "signs of different requests overlapped");
    // ... but never two reconciles of one request.
    assert_eq!(signer.max_per_request.load(Ordering::SeqCst), 1, "two signs of one request ran at once");
    handle.shutdown().await;
    sim.shutdown().await;
}

/// `Signer` for an `Arc` of the test signer, so the test keeps its counters.
struct ArcSigner(Arc<Overlap>);

#[certbridge::async_trait]
impl Signer for ArcSigner {
    type Spec = TestSpec;

    async fn sign(&self, r: &SignRequest, i: &Issuer<TestSpec>, c: &mut SignContext) -> Result<Issued, SignError> {
        self.0.sign(r, i, c).await
    }

    async fn check(&self, i: &Issuer<TestSpec>, r: &Resources) -> Result<certbridge::Ready, SignError> {
        self.0.check(i, r).await
    }
}
