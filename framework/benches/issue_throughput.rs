//! End-to-end issuance throughput of the real controllers against the embedded API server:
//! N approved CertificateRequests (P-256 CSRs) signed by an in-memory rcgen CA, measured from
//! the first create to the last Ready=True. Run: `cargo bench -p certbridge --bench issue_throughput`.

#[allow(dead_code)]
#[path = "../tests/controllers/support.rs"]
mod support;

use std::time::{Duration, Instant};

use certbridge::IssuerScope;
use certbridge::api::CertificateRequest;
use certbridge::testing::{approve, certificate_request, create_certificate_request};
use kube::api::Api;
use support::*;

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    // Each configuration's API server stays up until the end: a second KubeSim started after
    // another one was shut down in the same runtime does not serve its watches (reported to testkit).
    let mut keep = Vec::new();
    for concurrency in [1u16, 4] {
        let opts = certbridge::runtime::Options { concurrency, ..options() };
        let env = Env::start_with(TestSigner::new(Ca::new()), opts).await;
        env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
        let csrs: Vec<String> = (0..n).map(|i| csr(&format!("r{i}.example.com")).0).collect();
        let started = Instant::now();
        for (i, pem) in csrs.iter().enumerate() {
            let cr = certificate_request::<TestSpec>(NS, &format!("r{i}"), pem, IssuerScope::Namespaced, "ca");
            create_certificate_request(&env.client, &cr).await.unwrap();
            approve(&env.client, NS, &format!("r{i}")).await.unwrap();
        }
        let api: Api<CertificateRequest> = Api::namespaced(env.client.clone(), NS);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let list = api.list(&Default::default()).await.unwrap();
            let ready =
                list.items.iter().filter(|cr| cr.condition("Ready").is_some_and(|c| c.status == "True")).count();
            if ready == n {
                break;
            }
            assert!(Instant::now() < deadline, "only {ready}/{n} issued");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        println!(
            "concurrency {concurrency}: {n} CertificateRequests created, approved and issued in {:.2} s = {:.1} requests/s ({} sign calls)",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            env.signer.sign_calls()
        );
        let mut env = env;
        env.handle.take().unwrap().shutdown().await;
        keep.push(env);
    }
    for env in keep {
        env.sim.shutdown().await;
    }
}
