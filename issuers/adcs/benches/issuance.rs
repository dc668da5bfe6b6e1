//! Issuance throughput of the AD CS signer against the certsrv simulator adding 50 ms to every HTTP
//! call (handshake legs included), with 4 workers, NTLM with channel binding (pyspnego acceptor).
//! Ideal: workers / (calls per issuance × latency) = 4 / (2 × 50 ms) = 40 certificates/s, the two
//! calls being `certfnsh.asp` and `certnew.cer` (the chain is cached). Target ≥ 0.9 × ideal.
//! Also reports handshakes per certificate (one per connection: amortised by keep-alive), the
//! simulator's CPU time per certificate (it is one Python process: when that approaches the
//! latency budget the simulator, not the issuer, is the limit) and this process's CPU time.
//!
//! `cargo bench -p certbridge-adcs` (release; needs issuers/adcs/scripts/install-sim.sh). Results
//! go to BENCHMARKS.md (AD CS). `ADCS_BENCH_LATENCY_MS` sets the latency (default 50),
//! `ADCS_BENCH_AUTH=kerberos` runs Kerberos with channel binding against a real MIT KDC instead of
//! NTLM (and reports the KDC's AS exchanges).

use std::sync::Arc;
use std::time::{Duration, Instant};

use certbridge::{SignContext, Signer};
use certbridge_adcs::AdcsSigner;

#[path = "../tests/it/fixture.rs"]
mod fixture;

use fixture::{Mode, Sim, SimOpts, issuer, request, resources, spec};

/// This process's CPU time (user + system), from /proc (Linux).
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name; 100 ticks/s.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Simulated latency per call; `ADCS_BENCH_LATENCY_MS` overrides it (0 shows the simulator's own cost).
fn latency_ms() -> u64 {
    std::env::var("ADCS_BENCH_LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(50)
}
const WORKERS: usize = 4;
const REQUESTS: usize = 200;
const CALLS_PER_ISSUANCE: f64 = 2.0;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let kerberos = std::env::var("ADCS_BENCH_AUTH").is_ok_and(|v| v == "kerberos");
    let mode = if kerberos { Mode::Kerberos } else { Mode::Ntlm };
    let sim = Sim::start(SimOpts { mode, epa: "required", ..Default::default() });
    let res = resources(&sim);
    let issuer = issuer(spec(&sim));
    let signer = Arc::new(AdcsSigner::new());
    signer.check(&issuer, &res).await.expect("check (caches the chain)");
    let requests: Vec<_> = (0..REQUESTS).map(|i| request(&format!("b{i}.example.com"), &[])).collect();
    let latency = latency_ms();
    sim.admin(&format!("/latency?ms={latency}"));
    let before = signer.totals();
    let sim_cpu_before = sim.counters()["cpu_seconds"].as_f64().unwrap_or(0.0);
    let cpu_before = own_cpu();
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
    let sim_cpu = sim.counters()["cpu_seconds"].as_f64().unwrap_or(0.0) - sim_cpu_before;
    let cpu = own_cpu() - cpu_before;
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    let rate = REQUESTS as f64 / elapsed.as_secs_f64();
    let ideal = WORKERS as f64 / (CALLS_PER_ISSUANCE * latency.max(1) as f64 / 1000.0);
    let handshakes = after.handshakes - before.handshakes;
    let calls = after.requests - before.requests;
    let method = if kerberos { "Kerberos" } else { "NTLM" };
    println!(
        "AD CS issuance ({method} with channel binding, EPA required), {REQUESTS} requests, {WORKERS} workers, {latency} ms per call; ideal {ideal:.0}/s, target >= {:.0}/s",
        0.9 * ideal
    );
    println!(
        "{rate:.2} certs/s ({:.0}% of ideal) in {elapsed:.2?}; p50 {:.0?} p99 {:.0?}; HTTP calls per certificate {:.3}; {method} handshakes {handshakes} = {:.4} per certificate; connections {} {}",
        100.0 * rate / ideal,
        p(0.5),
        p(0.99),
        calls as f64 / REQUESTS as f64,
        handshakes as f64 / REQUESTS as f64,
        after.connections - before.connections,
        if rate >= 0.9 * ideal { "PASS" } else { "BELOW TARGET" }
    );
    println!(
        "CPU per certificate: simulator {:.2} ms ({:.0}% of one core over the run), this process {:.2} ms",
        1000.0 * sim_cpu / REQUESTS as f64,
        100.0 * sim_cpu / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / REQUESTS as f64
    );
    println!("simulator: {} handshakes accepted in total (check included)", sim.counters()["handshakes"]);
    if let Some(kdc) = &sim.kdc {
        let env = &kdc.env;
        let principal = format!("{}@{}", env["KRB5_USER"], env["KRB5_REALM"]);
        println!(
            "KDC: {} AS and {} TGS exchanges for {principal} in total (check included)",
            kdc.issued("AS_REQ", &principal),
            kdc.issued("TGS_REQ", &principal)
        );
    }
}
