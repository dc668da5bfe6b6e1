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
