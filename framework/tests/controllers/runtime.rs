//! The runtime itself: readiness and shutdown stay prompt across many restarts.

use std::time::Duration;

use crate::support::*;

/// kube-runtime's `Store::wait_until_ready` can lose its wake-up when a Controller waits on the
/// same store; readiness then never came (about one start in three). Each restart must report
/// ready and shut down promptly.
#[tokio::test]
async fn every_restart_becomes_ready_and_shuts_down_promptly() {
    let mut env = Env::start().await;
    for _ in 0..15 {
        let handle = env.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle.shutdown()).await.expect("shutdown is prompt");
        env.handle = Some(certbridge::runtime::start(env.signer.clone(), env.client.clone(), options()).await.unwrap());
        env.wait_ready().await;
    }
    env.stop().await;
}

/// A test-only signer whose `check` panics, as a bug in an adapter would.
struct PanickingSigner;

#[certbridge::async_trait]
impl certbridge::Signer for PanickingSigner {
    type Spec = TestSpec;

    async fn sign(
        &self,
        _: &certbridge::SignRequest,
        _: &certbridge::Issuer<TestSpec>,
        _: &mut certbridge::SignContext,
    ) -> Result<certbridge::Issued, certbridge::SignError> {
        Err(certbridge::SignError::permanent("never called"))
    }

    async fn check(
        &self,
        _: &certbridge::Issuer<TestSpec>,
        _: &certbridge::Resources,
    ) -> Result<certbridge::Ready, certbridge::SignError> {
        panic!("the test signer panics in check");
    }
}

/// kube-runtime re-raises a reconcile's panic; the controller task ends with it. The others are
/// stopped, the handle says which one died and why, and it no longer reports alive (/healthz).
#[tokio::test]
async fn a_panicking_controller_stops_the_others_and_is_reported() {
    let sim = certbridge_testkit::KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let client = sim.client();
    certbridge::testing::install_crds::<TestSpec>(&client).await.unwrap();
    certbridge::testing::create_namespace(&client, NS).await.unwrap();
    let handle = certbridge::runtime::start(PanickingSigner, client.clone(), options()).await.unwrap();
    assert!(handle.is_alive());
    certbridge::testing::create_issuer(&client, certbridge::IssuerScope::Namespaced, NS, "boom", &TestSpec::default())
        .await
        .unwrap();
    tokio::time::timeout(TIMEOUT, handle.stopped()).await.expect("the panic stops the controllers");
    assert!(!handle.is_alive());
    let failure = handle.failure().expect("the failure is recorded");
    // kube-runtime runs the reconcile in a task and re-raises its panic as a JoinError.
    assert!(
        failure.starts_with("the TestIssuer controller panicked: ")
            && failure.contains("the test signer panics in check"),
        "{failure}"
    );
    tokio::time::timeout(TIMEOUT, handle.shutdown()).await.expect("the others shut down cleanly");
    sim.shutdown().await;
}
