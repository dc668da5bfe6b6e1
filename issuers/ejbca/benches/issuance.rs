//! Issuance throughput of the EJBCA signer against the simulator adding 200 ms to every answer,
//! at the controller's default concurrency (`certbridge::runtime::Options::default().concurrency`
//! workers). Target: ≥ 0.9 × workers / latency.
//!
//! `cargo bench -p certbridge-ejbca` (release). Results go to benchmarks/ejbca.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use certbridge::{SignContext, Signer};
use certbridge_ejbca::EjbcaSigner;

// The tests' fixtures: the same simulator, issuer spec, credentials and requests.
#[path = "../tests/it/fixture.rs"]
mod fixture;

use fixture::{Mode, issuer, request, resources, sim, spec};

const LATENCY: Duration = Duration::from_millis(200);
const REQUESTS: usize = 80;

/// One worker per concurrent reconcile of the controller's default settings.
fn workers() -> usize {
    usize::from(certbridge::runtime::Options::default().concurrency.max(1))
}

async fn run(oauth: bool) -> (f64, Duration, Vec<Duration>) {
    let workers = workers();
    let sim = sim().await;
    let res = resources(&sim, if oauth { Mode::OAuth } else { Mode::Mtls });
    let issuer = issuer(spec(&sim));
    let requests: Vec<_> = (0..REQUESTS + workers).map(|i| request(&format!("b{i}.example.com"), &[])).collect();
    let signer = Arc::new(EjbcaSigner::new());
    // Warm-up: client, TLS session and token, one per worker, as a running controller has them.
    for r in &requests[..workers] {
        signer.sign(r, &issuer, &mut SignContext::offline(res.clone())).await.expect("warm-up");
    }
    sim.set_latency(LATENCY);
    let queue = Arc::new(tokio::sync::Mutex::new(requests[workers..].to_vec()));
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
    assert_eq!(sim.enrollments() as usize, REQUESTS + workers);
    lat.sort();
    (REQUESTS as f64 / elapsed.as_secs_f64(), elapsed, lat)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let workers = workers();
    let target = 0.9 * workers as f64 / LATENCY.as_secs_f64();
    println!(
        "EJBCA issuance, {REQUESTS} requests, {workers} workers, simulator latency {LATENCY:?}; target >= {target:.1}/s"
    );
    for (name, oauth) in [("mTLS", false), ("OAuth2", true)] {
        let (rate, elapsed, lat) = run(oauth).await;
        let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
        println!(
            "{name:7} {rate:6.2} certs/s ({:.0}% of {:.0}/s ideal) in {elapsed:.2?}; per request p50 {:.0?} p99 {:.0?} {}",
            100.0 * rate / (workers as f64 / LATENCY.as_secs_f64()),
            workers as f64 / LATENCY.as_secs_f64(),
            p(0.5),
            p(0.99),
            if rate >= target { "PASS" } else { "BELOW TARGET" }
        );
    }
}
