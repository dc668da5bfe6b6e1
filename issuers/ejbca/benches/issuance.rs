//! Issuance throughput of the EJBCA signer against the simulator adding 200 ms to every answer,
//! at the controller's default concurrency (`certbridge::runtime::Options::default().concurrency`
//! workers). Target: ≥ 0.9 × workers / latency.
//!
//! `cargo bench -p certbridge-ejbca` (release). Results go to benchmarks/ejbca.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use certbridge::{SignContext, SignRequest, Signer};
use certbridge_ejbca::sim::{EjbcaSim, SimOptions};
use certbridge_ejbca::{CaBundleRef, EjbcaIssuerSpec, EjbcaSigner};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const LATENCY: Duration = Duration::from_millis(200);
const REQUESTS: usize = 80;

fn csr(i: usize) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(vec![format!("b{i}.example.com")]).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, format!("b{i}.example.com"));
    p.serialize_request(&key).expect("csr").pem().expect("pem")
}

/// One worker per concurrent reconcile of the controller's default settings.
fn workers() -> usize {
    usize::from(certbridge::runtime::Options::default().concurrency.max(1))
}

async fn run(oauth: bool) -> (f64, Duration, Vec<Duration>) {
    let workers = workers();
    let sim = EjbcaSim::start(SimOptions::default()).await.expect("simulator");
    let meta =
        |name: &str| ObjectMeta { name: Some(name.into()), namespace: Some("bench".into()), ..Default::default() };
    let data: Vec<(String, String)> = if oauth {
        let (id, secret) = sim.oauth_client();
        vec![("tokenUrl".into(), sim.token_url()), ("clientId".into(), id), ("clientSecret".into(), secret)]
    } else {
        let (c, k) = sim.client_identity();
        vec![("tls.crt".into(), c), ("tls.key".into(), k)]
    };
    let secret = Secret {
        metadata: meta("creds"),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Default::default()
    };
    let cm = ConfigMap {
        metadata: meta("ca"),
        data: Some([("ca.crt".into(), sim.root_pem())].into()),
        ..Default::default()
    };
    let res = certbridge::Resources::from_objects("bench", vec![secret], vec![cm]);
    let issuer = certbridge::Issuer {
        name: "bench".into(),
        namespace: Some("bench".into()),
        scope: certbridge::IssuerScope::Namespaced,
        uid: "u".into(),
        generation: 1,
        annotations: Default::default(),
        spec: EjbcaIssuerSpec {
            hostname: sim.host(),
            certificate_profile_name: "ENDUSER".into(),
            end_entity_profile_name: "EMPTY".into(),
            certificate_authority_name: "IssuingCA".into(),
            end_entity_name: None,
            ejbca_secret_name: "creds".into(),
            ca_bundle: Some(CaBundleRef {
                secret_name: None,
                config_map_name: Some("ca".into()),
                key: "ca.crt".into(),
            }),
            request_timeout_seconds: None,
        },
    };
    let requests: Vec<SignRequest> = (0..REQUESTS + workers)
        .map(|i| SignRequest::from_csr_pem::<&str>(&csr(i), Duration::from_secs(86400), false, &[]).expect("request"))
        .collect();
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
