//! The built `certbridge-example-ca` binary: `crds`, `check -f`, `sign -f`, and `run` as separate
//! processes against kube-sim, with leader election handing over on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use certbridge::IssuerScope;
use certbridge::testing::{self, approve, create_certificate_request, wait_ready};
use certbridge_example_ca::LocalCaSpec;
use certbridge_testkit::KubeSim;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::support::{TestCa, kubectl, openssl};

const BIN: &str = env!("CARGO_BIN_EXE_certbridge-example-ca");
const TIMEOUT: Duration = Duration::from_secs(30);

fn cli(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN).args(args).current_dir(dir).output().unwrap()
}

/// An issuer manifest for `check -f` / `sign -f`: the issuer and its Secret, as JSON documents.
fn manifest(ca: &TestCa, key_file: &str) -> PathBuf {
    let issuer = json!({
        "apiVersion": "example.certbridge.io/v1alpha1", "kind": "LocalCAIssuer",
        "metadata": {"name": "ca", "namespace": "team-a"}, "spec": {"secretName": "ca-key-pair"}
    });
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "ca-key-pair", "namespace": "team-a"},
        "stringData": {"tls.crt": ca.read("ca.crt"), "tls.key": ca.read(key_file)}
    });
    let path = ca.path(&format!("issuer-{key_file}.yaml"));
    std::fs::write(&path, format!("{issuer}\n---\n{secret}\n")).unwrap();
    path
}

#[test]
fn check_f_accepts_a_good_issuer_and_names_the_cause_of_a_bad_one() {
    let ca = TestCa::new(&["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let good = manifest(&ca, "ca.key");
    let out = cli(&["check", "-f", good.to_str().unwrap()], ca.dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A key that is not the CA's: one line naming the Secret and the key, and no key material.
    ca.csr("stranger", &["stranger.example"]);
    let bad = manifest(&ca, "stranger.key");
    let out = cli(&["check", "-f", bad.to_str().unwrap()], ca.dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("Secret \"team-a/ca-key-pair\" key \"tls.key\" does not match"), "{stderr}");
    let key_body: String = ca.read("stranger.key").lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!stderr.contains(&key_body[..24]), "{stderr}");
}

#[test]
fn sign_f_prints_a_chain_openssl_verifies_and_writes_the_ca() {
    let ca = TestCa::new(&["rsa:2048"]);
    let issuer = manifest(&ca, "ca.key");
    ca.csr("cli", &["cli.example"]);
    let out = cli(
        &[
            "sign",
            "-f",
            issuer.to_str().unwrap(),
            "--csr",
            "cli.csr",
            "--duration",
            "24h",
            "--usage",
            "client auth",
            "--ca-out",
            "ca-out.pem",
        ],
        ca.dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ca.assert_verifies("cli", &String::from_utf8(out.stdout).unwrap());
    assert_eq!(ca.read("ca-out.pem").trim(), ca.read("ca.crt").trim());
    let text = openssl(ca.dir.path(), &["x509", "-in", "cli.crt", "-noout", "-text"]);
    assert!(text.contains("TLS Web Client Authentication") && !text.contains("Server Authentication"), "{text}");
    // 24 hours, not the 90-day default.
    let checkend = |secs: &str| {
        Command::new("openssl")
            .args(["x509", "-in", "cli.crt", "-noout", "-checkend", secs])
            .current_dir(ca.dir.path())
            .status()
            .unwrap()
            .success()
    };
    assert!(checkend("86000") && !checkend("86500"));
}

/// A controller process, SIGKILLed on drop if still running; its stderr goes to a file.
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    fn start(kubeconfig: &Path, log: PathBuf) -> Controller {
        let child = Command::new(BIN)
            .args(["run", "--leader-elect", "--kubeconfig"])
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Controller { child, log }
    }

    /// SIGTERM, then the exit status (bounded, so a hang fails the test).
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the controller did not exit within 30s of SIGTERM; log:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn lease_holder(client: &kube::Client) -> Option<String> {
    let lease =
        Api::<Lease>::namespaced(client.clone(), "cert-manager").get_opt("example.certbridge.io-controller").await;
    lease.unwrap().and_then(|l| l.spec).and_then(|s| s.holder_identity).filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_processes_with_leader_election_sign_and_hand_over_on_sigterm() {
    let ca = TestCa::new(&["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let sim = KubeSim::start().await.unwrap();
    let client = sim.client();
    let kubeconfig = ca.path("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();

    // The CRDs as an operator installs them: the binary's `crds` output through kubectl.
    let crds = cli(&["crds"], ca.dir.path());
    assert!(crds.status.success());
    let crds = String::from_utf8(crds.stdout).unwrap();
    assert_eq!(crds, certbridge::crd::crds_yaml::<LocalCaSpec>());
    std::fs::write(ca.path("crds.yaml"), &crds).unwrap();
    let applied = kubectl(&kubeconfig, &["apply", "-f", ca.path("crds.yaml").to_str().unwrap()]);
    assert!(applied.contains("localcaissuers.example.certbridge.io created"), "{applied}");
    sim.install_cert_manager_crds().await.unwrap();
    testing::create_namespace(&client, "team-a").await.unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), "team-a");
    secrets.create(&PostParams::default(), &ca.secret("team-a", "ca-key-pair")).await.unwrap();

    let mut first = Controller::start(&kubeconfig, ca.path("first.log"));
    let spec = LocalCaSpec { secret_name: "ca-key-pair".into() };
    testing::create_issuer(&client, IssuerScope::Namespaced, "team-a", "ca", &spec).await.unwrap();
    testing::wait_issuer_ready::<LocalCaSpec>(&client, IssuerScope::Namespaced, "team-a", "ca", TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", first.log()));
    assert!(lease_holder(&client).await.is_some(), "the first controller holds the Lease");
    let mut second = Controller::start(&kubeconfig, ca.path("second.log"));

    for (name, controller) in [("one", &mut first), ("two", &mut second)] {
        let csr = ca.csr(name, &[&format!("{name}.example")]);
        let cr = testing::certificate_request::<LocalCaSpec>("team-a", name, &csr, IssuerScope::Namespaced, "ca");
        create_certificate_request(&client, &cr).await.unwrap();
        approve(&client, "team-a", name).await.unwrap();
        let cr = wait_ready(&client, "team-a", name, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e}; log:\n{}", controller.log()));
        ca.assert_verifies(name, std::str::from_utf8(&cr.status.unwrap().certificate.unwrap().0).unwrap());
        // SIGTERM: a graceful exit that releases the Lease; the other replica then acquires it (on its
        // next attempt, up to the 15 s lease duration later) and signs the next request.
        let status = controller.terminate().await;
        assert!(status.success(), "{status}; log:\n{}", controller.log());
        assert_eq!(lease_holder(&client).await, None, "{name}: the Lease is released on SIGTERM");
    }

    let key_body: String = ca.read("ca.key").lines().filter(|l| !l.starts_with("-----")).collect();
    for log in [first.log(), second.log()] {
        assert!(log.contains("became the leader"), "{log}");
        assert!(!log.contains(&key_body[..24]), "the CA key reached a log");
    }
    sim.shutdown().await;
}
