//! Issuance throughput of the AD CS signer against the certsrv simulator adding 50 ms to every HTTP
//! call (handshake legs included), with 4 workers, NTLM with channel binding (pyspnego acceptor).
//! Ideal: workers / (calls per issuance × latency) = 4 / (2 × 50 ms) = 40 certificates/s, the two
//! calls being `certfnsh.asp` and `certnew.cer` (the chain is cached). Target ≥ 0.9 × ideal.
//! Also reports NTLM handshakes per certificate (one per connection: amortised by keep-alive).
//!
//! `cargo bench -p certbridge-adcs` (release; needs issuers/adcs/scripts/install-sim.sh). Results
//! go to benchmarks/adcs.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use certbridge::{SignContext, Signer};
use certbridge_adcs::AdcsSigner;

#[path = "../tests/it/fixture.rs"]
mod fixture;

use fixture::{Sim, SimOpts, issuer, request, resources, spec};

/// Simulated latency per call; `ADCS_BENCH_LATENCY_MS` overrides it (0 shows the simulator's own cost).
fn latency_ms() -> u64 {
    std::env::var("ADCS_BENCH_LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(50)
}
const WORKERS: usize = 4;
const REQUESTS: usize = 200;
const CALLS_PER_ISSUANCE: f64 = 2.0;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let sim = Sim::start(SimOpts { epa: "required", ..Default::default() });
    let res = resources(&sim);
    let issuer = issuer(spec(&sim));
    let signer = Arc::new(AdcsSigner::new());
    signer.check(&issuer, &res).await.expect("check (caches the chain)");
    let requests: Vec<_> = (0..REQUESTS).map(|i| request(&format!("b{i}.example.com"), &[])).collect();
    let latency = latency_ms();
    sim.admin(&format!("/latency?ms={latency}"));
    let before = signer.totals();
    let queue = Arc::new(tokio::sync::Mutex::new(requests));
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..WORKERS {
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
    let mut lat: Vec<Duration> = vec![];
    for t in tasks {
        lat.extend(t.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    let after = signer.totals();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    let rate = REQUESTS as f64 / elapsed.as_secs_f64();
    let ideal = WORKERS as f64 / (CALLS_PER_ISSUANCE * latency.max(1) as f64 / 1000.0);
    let handshakes = after.handshakes - before.handshakes;
    let calls = after.requests - before.requests;
    println!(
        "AD CS issuance (NTLM, EPA required), {REQUESTS} requests, {WORKERS} workers, {latency} ms per call; ideal {ideal:.0}/s, target >= {:.0}/s",
        0.9 * ideal
    );
    println!(
        "{rate:.2} certs/s ({:.0}% of ideal) in {elapsed:.2?}; p50 {:.0?} p99 {:.0?}; HTTP calls per certificate {:.3}; NTLM handshakes {handshakes} = {:.4} per certificate; connections {} {}",
        100.0 * rate / ideal,
        p(0.5),
        p(0.99),
        calls as f64 / REQUESTS as f64,
        handshakes as f64 / REQUESTS as f64,
        after.connections - before.connections,
        if rate >= 0.9 * ideal { "PASS" } else { "BELOW TARGET" }
    );
    println!("simulator counters: {}", sim.counters()["handshakes"]);
}
