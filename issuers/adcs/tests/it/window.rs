//! A measurement, not a CI test: the double-submit window under crashes. Each 10th request's first
//! `sign` is cut off after a pseudo-random delay (the controller "killed" mid-call: the future is
//! dropped, its connection closed, whatever certsrv already received stays recorded); a fresh
//! signer (a restarted controller, empty caches) then finishes the request from the state saved
//! before the kill. Duplicates are requests the simulator recorded more than once.
//!
//! `cargo test -p certbridge-adcs --test adcs_e2e window -- --ignored --nocapture`
//! (`ADCS_WINDOW_REQUESTS`, default 1000; results in benchmarks/adcs.md).

use std::collections::BTreeMap;
use std::time::Duration;

use certbridge::Signer;
use certbridge_adcs::AdcsSigner;
use certbridge_adcs::signer::state;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement (about a minute): cargo test -p certbridge-adcs --test adcs_e2e window -- --ignored --nocapture"]
async fn double_submit_window_under_kills() {
    let n: usize = std::env::var("ADCS_WINDOW_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let latency_ms = 20u64;
    let sim = Sim::start(SimOpts { latency_ms: latency_ms as u32, ..Default::default() });
    let issuer = issuer(spec(&sim));
    let res = resources(&sim);
    let mut signer = AdcsSigner::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut kills, mut killed_with_id, mut killed_without_id) = (0, 0, 0);
    let mut csrs = vec![];
    for i in 0..n {
        let req = request(&format!("w{i}.example.com"), &[]);
        let store = Store::default();
        let mut saved = BTreeMap::new();
        if i % 10 == 0 {
            // Kill somewhere in the two calls of an issuance (submit, fetch).
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let delay = Duration::from_micros(seed % (2 * latency_ms * 1000 + 5000));
            let mut first = ctx(&res, BTreeMap::new(), &store);
            let finished = tokio::time::timeout(delay, signer.sign(&req, &issuer, &mut first)).await.is_ok();
            if !finished {
                kills += 1;
                saved = store.last();
                if saved.contains_key(state::REQ_ID) {
                    killed_with_id += 1;
                } else {
                    killed_without_id += 1;
                }
                signer = AdcsSigner::new();
            } else {
                csrs.push(req.csr_pem.clone());
                continue;
            }
        }
        let mut tries = 0;
        loop {
            match signer.sign(&req, &issuer, &mut ctx(&res, saved.clone(), &store)).await {
                Ok(_) => break,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 5 && reaction(&e) == "transient", "request {i}: {e}");
                    saved = store.last();
                }
            }
        }
        csrs.push(req.csr_pem.clone());
    }
    let enrollments = sim.counters()["enrollments"].clone();
    let duplicates = enrollments.as_object().unwrap().values().filter(|v| v.as_u64().unwrap_or(0) > 1).count();
    println!(
        "requests {n}, kills {kills} (request ID already saved: {killed_with_id}, not yet: {killed_without_id}), duplicate submits {duplicates} = {:.2} % of requests, {:.1} % of kills",
        100.0 * duplicates as f64 / n as f64,
        100.0 * duplicates as f64 / kills.max(1) as f64
    );
    assert_eq!(csrs.len(), n);
    assert!(kills >= 50 || n < 1000, "at least 50 kills over 1000 requests");
}
