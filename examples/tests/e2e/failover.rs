//! Leader failover: two `certbridge-example-ca run --leader-elect` processes on kube-sim with the
//! default lease settings (15 s lease, renewed 5 s early). Requests arrive steadily; halfway the
//! leader is killed with SIGKILL (no release of the Lease), the standby takes the Lease when it
//! expires and issues the rest.
//!
//! Asserted: every request is issued, each with exactly one certificate for its own key — no
//! request's certificate ever changes (a test-side watch records every certificate each request
//! ever carried), the killed leader never comes back, and the standby took over. The gap (from
//! the kill to the first certificate the standby issues) is printed, not asserted beyond a
//! generous liveness bound (`FAILOVER_DEADLINE_SECS`, default 180 s for the whole run).
//!
//! ```sh
//! cargo test -p certbridge-example-ca --test e2e leader_failover -- --nocapture   # prints the gap
//! # knobs: FAILOVER_REQUESTS (default 40), FAILOVER_INTERVAL_MS (default 250)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certbridge::api::CertificateRequest;
use certbridge::testing::{self, approve, create_certificate_request};
use certbridge::{IssuerScope, KeyKind};
use certbridge_example_ca::LocalCaSpec;
use certbridge_testkit::KubeSim;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;

use crate::support::TestCa;

const BIN: &str = env!("CARGO_BIN_EXE_certbridge-example-ca");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A replica: the process and its log (stderr).
struct Replica {
    child: Child,
    log: PathBuf,
}

impl Replica {
    fn start(name: &'static str, kubeconfig: &Path, dir: &Path) -> Replica {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(BIN)
            .args(["run", "--leader-elect", "--kubeconfig"])
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Replica { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn leads(&self) -> bool {
        self.log().contains("became the leader")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the test-side watch saw: every distinct certificate per request, and when each request
/// first carried one.
#[derive(Default)]
struct Seen {
    certificates: BTreeMap<String, Vec<Vec<u8>>>,
    issued_at: BTreeMap<String, Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_under_load_issues_everything_once() {
    let requests: usize = env_or("FAILOVER_REQUESTS", 40);
    let interval = Duration::from_millis(env_or("FAILOVER_INTERVAL_MS", 250));
    let deadline = Duration::from_secs(env_or("FAILOVER_DEADLINE_SECS", 180));

    let ca = TestCa::new(&["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let sim = KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let client = sim.client();
    testing::install_crds::<LocalCaSpec>(&client).await.unwrap();
    testing::create_namespace(&client, "team-a").await.unwrap();
    Api::<Secret>::namespaced(client.clone(), "team-a")
        .create(&PostParams::default(), &ca.secret("team-a", "ca-key-pair"))
        .await
        .unwrap();
    let kubeconfig = ca.path("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let spec = LocalCaSpec { secret_name: "ca-key-pair".into() };
    testing::create_issuer(&client, IssuerScope::Namespaced, "team-a", "ca", &spec).await.unwrap();

    // The first replica leads; the second waits for the Lease.
    let mut replicas = vec![Replica::start("first", &kubeconfig, ca.dir.path())];
    testing::wait_issuer_ready::<LocalCaSpec>(&client, IssuerScope::Namespaced, "team-a", "ca", deadline)
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", replicas[0].log()));
    assert!(replicas[0].leads(), "{}", replicas[0].log());
    replicas.push(Replica::start("second", &kubeconfig, ca.dir.path()));
    let t = Instant::now();
    while !replicas[1].log().contains("waiting to become the leader") {
        assert!(t.elapsed() < deadline, "the standby never started: {}", replicas[1].log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Watch every request from the test's side: every certificate each one ever carried.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), "team-a");
    let watch = tokio::spawn({
        let seen = seen.clone();
        let stream = watcher(api.clone(), watcher::Config::default());
        async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                let objs = match ev {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => vec![o],
                    _ => continue,
                };
                let mut s = seen.lock().unwrap();
                for o in objs {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    let Some(cert) = o.status.and_then(|s| s.certificate).map(|c| c.0).filter(|c| !c.is_empty()) else {
                        continue;
                    };
                    s.issued_at.entry(name.clone()).or_insert_with(Instant::now);
                    let list = s.certificates.entry(name).or_default();
                    if !list.contains(&cert) {
                        list.push(cert);
                    }
                }
            }
        }
    });

    // Requests arrive steadily; the leader is killed when half of them exist.
    let mut keys = BTreeMap::new();
    let mut killed_at = None;
    let mut snapshot_at = Instant::now();
    let mut pending_at_kill = BTreeSet::new();
    for i in 0..requests {
        let name = format!("r{i:03}");
        let (csr, _) = testing::generate_csr(&KeyKind::EcP256, &[&format!("{name}.example")]).unwrap();
        keys.insert(name.clone(), certbridge::Csr::from_pem(&csr).unwrap().public_key_der);
        let cr = testing::certificate_request::<LocalCaSpec>("team-a", &name, &csr, IssuerScope::Namespaced, "ca");
        create_certificate_request(&client, &cr).await.unwrap();
        approve(&client, "team-a", &name).await.unwrap();
        if i + 1 == requests / 2 {
            // SIGKILL: no graceful release of the Lease.
            replicas[0].child.kill().unwrap();
            replicas[0].child.wait().unwrap();
            killed_at = Some(Instant::now());
            // What the dead leader wrote reaches the watch within moments; the standby cannot
            // issue before the Lease expires (seconds), so this snapshot is what it must issue.
            tokio::time::sleep(Duration::from_millis(500)).await;
            snapshot_at = Instant::now();
            let s = seen.lock().unwrap();
            pending_at_kill = keys.keys().filter(|n| !s.issued_at.contains_key(*n)).cloned().collect();
        }
        tokio::time::sleep(interval).await;
    }
    let killed_at = killed_at.expect("the leader was killed");

    // Liveness bound: everything issued.
    loop {
        let done = seen.lock().unwrap().issued_at.len();
        if done == requests {
            break;
        }
        assert!(
            t.elapsed() < deadline,
            "{done} of {requests} issued within {deadline:?}; standby log:\n{}",
            replicas[1].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let any late second write show up in the watch before judging.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watch.abort();

    let s = std::mem::take(&mut *seen.lock().unwrap());
    for (name, key) in &keys {
        let certs = &s.certificates[name];
        assert_eq!(certs.len(), 1, "{name} carried {} different certificates", certs.len());
        let issued = certbridge::Issued { chain_pem: String::from_utf8(certs[0].clone()).unwrap(), ca_pem: None };
        assert_eq!(&issued.leaf_public_key_der().unwrap(), key, "{name}: the leaf is for another key");
    }
    assert!(replicas[1].leads(), "the standby took over: {}", replicas[1].log());
    // Everything issued after the snapshot was issued by the standby (the leader was dead).
    let first_after = s.issued_at.values().filter(|at| **at > snapshot_at).min().copied();
    let gap = first_after.map(|at| at.duration_since(killed_at)).expect("the standby issued after the kill");
    let by_standby = s.issued_at.values().filter(|at| **at > snapshot_at).count();
    println!(
        "leader failover: {requests} requests, leader SIGKILLed with {} of the requests created so far not yet issued; gap from the kill to the standby's first certificate: {:.1} s; {by_standby} issued by the standby; every request issued once",
        pending_at_kill.len(),
        gap.as_secs_f64()
    );
    drop(replicas);
    sim.shutdown().await;
}
