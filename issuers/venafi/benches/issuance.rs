//! Issuance throughput of the Venafi signer against the simulator adding 100 ms to every answer,
//! at the controller's default concurrency, and the logins it needs per 1,000 certificates.
//!
//! Ideal = workers / (calls per issuance × latency): TPP needs 2 calls per certificate
//! (`certificates/request` answered with the DN, then one `certificates/retrieve`), Cloud 3
//! (`certificaterequests`, its status, the contents). Target ≥ 0.9 × ideal, and 1 login per
//! 1,000 certificates (cert-manager's issuer logs in on every sync: ≥ 2 per certificate).
//!
//! `cargo bench -p certbridge-venafi` (release). Results go to benchmarks/venafi.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use certbridge::{SignContext, Signer};
use certbridge_venafi::VenafiSigner;

#[path = "../tests/it/fixture.rs"]
mod fixture;

use fixture::{Auth, issuer, request, resources, sim, spec};

const LATENCY: Duration = Duration::from_millis(100);

fn workers() -> usize {
    usize::from(certbridge::runtime::Options::default().concurrency.max(1))
}

struct Run {
    rate: f64,
    elapsed: Duration,
    lat: Vec<Duration>,
    logins: u64,
    refreshes: u64,
    calls: u64,
}

async fn run(auth: Auth, n: usize) -> Run {
    let workers = workers();
    let sim = sim().await;
    let res = resources(&sim, auth);
    let issuer = issuer(spec(&sim, auth));
    let requests: Vec<_> = (0..n).map(|i| request(&format!("b{i}.example.com"), &[])).collect();
    let signer = Arc::new(VenafiSigner::new());
    sim.set_latency(LATENCY);
    // No warm-up: the one login (or Cloud token / zone lookup) is part of the measured run.
    let queue = Arc::new(tokio::sync::Mutex::new(requests));
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..workers {
        let (queue, signer, issuer, res) = (queue.clone(), signer.clone(), issuer.clone(), res.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            loop {
                let Some(r) = queue.lock().await.pop() else { break };
                let t = Instant::now();
                signer.sign(&r, &issuer, &mut SignContext::offline(res.clone())).await.expect("sign");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = vec![];
    for w in tasks {
        lat.extend(w.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    assert_eq!(sim.issued_total() as usize, n);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    lat.sort();
    let calls =
        ["request", "retrieve", "cloud-request", "cloud-status", "cloud-contents"].iter().map(|o| sim.calls(o)).sum();
    Run {
        rate: n as f64 / elapsed.as_secs_f64(),
        elapsed,
        lat,
        logins: sim.logins(),
        refreshes: sim.refreshes(),
        calls,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let workers = workers();
    println!("Venafi issuance, {workers} workers, simulator latency {LATENCY:?}");
    for (name, auth, n, calls_per_cert) in
        [("TPP username/password", Auth::Password, 1000, 2.0), ("Cloud API key", Auth::ApiKey, 200, 3.0)]
    {
        let r = run(auth, n).await;
        let ideal = workers as f64 / (calls_per_cert * LATENCY.as_secs_f64());
        let p = |q: f64| r.lat[((r.lat.len() as f64 * q) as usize).min(r.lat.len() - 1)];
        println!(
            "{name:22} {n:5} certs in {:.1?}: {:6.2} certs/s = {:.0}% of ideal {ideal:.1}/s ({calls_per_cert} calls/cert, {} issuance calls seen); p50 {:.0?} p99 {:.0?}; logins {} refreshes {} ({:.1} logins per 1,000 certificates) {}",
            r.elapsed,
            r.rate,
            100.0 * r.rate / ideal,
            r.calls,
            p(0.5),
            p(0.99),
            r.logins,
            r.refreshes,
            r.logins as f64 * 1000.0 / n as f64,
            if r.rate >= 0.9 * ideal { "PASS" } else { "BELOW TARGET" }
        );
    }
}
