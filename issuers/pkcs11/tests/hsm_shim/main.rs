//! HSM faults through a misbehaving PKCS#11 module: `certbridge-pkcs11-shim` (framework/testkit)
//! forwards to SoftHSM and, as its control file says, hangs or fails chosen calls. The issuer
//! loads it like any module, through the allow-list.
//!
//! A test binary of its own: the shim and SoftHSM are process-wide (one control file, one
//! SoftHSM instance behind both module paths), and the `it` binary re-initializes SoftHSM on
//! purpose (`removal`), which would finalize it under these tests. The tests here take turns
//! ([`turn`]) because they share the control file.
//!
//! `HSM_SHIM_TABLE=1` prints the rows RELIABILITY.md records (times are printed, never asserted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use certbridge::testing::{
    approve, certificate_request, create_certificate_request, create_issuer, create_namespace, install_crds,
    issuer_api, wait_issuer_ready,
};
use certbridge::{Issuer, IssuerScope, Reaction, Resources, SignContext, SignRequest, Signer};
use certbridge_pkcs11::Pkcs11Signer;
use certbridge_pkcs11::grants::TokenPolicy;
use certbridge_pkcs11::module::{AllowedModules, DEFAULT_MODULE};
use certbridge_pkcs11::spec::{KeyRef, Pkcs11IssuerSpec, Policy, SecretKeyRef, TokenRef};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

const NS: &str = "team-a";
const PIN: &str = "4321";
/// Signed through the shim.
const SHIM: &str = "shim";
/// Signed through SoftHSM directly, next to the hung shim (the controller must keep serving it).
const DIRECT: &str = "direct";
/// Its PIN gets "locked" by the shim.
const LOCKED: &str = "locked";
/// Logged out from outside.
const LOGOUT: &str = "logout";
/// The deadline the tests give each piece of HSM work.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(90);

struct Env {
    dir: PathBuf,
    shim: PathBuf,
    control: PathBuf,
    log: PathBuf,
}

/// Builds the shim, makes the tokens, points SoftHSM and the shim at them (once per process,
/// before the first PKCS#11 call).
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let shim = build_shim();
        let dir = tempfile::Builder::new()
            .prefix("pkcs11-shim-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir")
            .keep();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../softhsm/setup-token.sh");
        for label in [SHIM, DIRECT, LOCKED, LOGOUT] {
            let out = Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .args(["--label", label, "--pin", PIN, "--so-pin", "99999", "--kind", "p256"])
                .env("CERTBRIDGE_PKCS11_TOKEN_BIN", env!("CARGO_BIN_EXE_certbridge-pkcs11-token"))
                .output()
                .expect("run softhsm/setup-token.sh");
            assert!(out.status.success(), "setup-token.sh: {}", String::from_utf8_lossy(&out.stderr));
        }
        let control = dir.join("shim.control");
        let log = dir.join("shim.log");
        std::fs::write(&control, "").unwrap();
        // SAFETY: set once, before any thread of this process loads a PKCS#11 module (every test
        // goes through this function first).
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", dir.join("softhsm2.conf"));
            std::env::set_var("CERTBRIDGE_PKCS11_SHIM_CONTROL", &control);
            std::env::set_var("CERTBRIDGE_PKCS11_SHIM_LOG", &log);
        }
        Env { dir, shim, control, log }
    })
}

/// `cargo build -p certbridge-pkcs11-shim` into this test's target directory; the library's path.
fn build_shim() -> PathBuf {
    // target/<profile>/deps/hsm_shim-<hash> → target/<profile>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-p", "certbridge-pkcs11-shim", "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo build -p certbridge-pkcs11-shim");
    assert!(out.status.success(), "building the shim failed: {}", String::from_utf8_lossy(&out.stderr));
    let lib = profile_dir.join("libcertbridge_pkcs11_shim.so");
    assert!(lib.is_file(), "{} was not built", lib.display());
    lib
}

/// One test at a time: they share the control file.
async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = TURN.lock().await;
    control("");
    guard
}

fn control(rules: &str) {
    std::fs::write(&env().control, rules).unwrap();
}

/// Intercepted calls to `function` logged by the shim so far.
fn calls(function: &str) -> usize {
    let log = std::fs::read_to_string(&env().log).unwrap_or_default();
    log.lines().filter(|l| l.split_whitespace().next() == Some(function)).count()
}

/// Intercepted calls to `function` that returned `rv` (as the shim logs it, e.g. `0x30`).
fn calls_returning(function: &str, rv: &str) -> usize {
    let log = std::fs::read_to_string(&env().log).unwrap_or_default();
    log.lines().filter(|l| l.split_whitespace().eq([function, rv])).count()
}

fn signer() -> Pkcs11Signer {
    let e = env();
    Pkcs11Signer::with_config(AllowedModules::new([e.shim.as_path(), Path::new(DEFAULT_MODULE)]), 4)
        .with_token_policy(TokenPolicy::unrestricted())
        .with_call_timeout(CALL_TIMEOUT)
}

fn ca_pem(label: &str) -> String {
    std::fs::read_to_string(env().dir.join(format!("{label}-ca-p256.pem"))).unwrap()
}

fn spec(token: &str, module: &Path) -> Pkcs11IssuerSpec {
    Pkcs11IssuerSpec {
        module: module.display().to_string(),
        token: TokenRef { label: Some(token.into()), serial: None },
        key: KeyRef { label: Some("ca-p256".into()), id: None },
        pin_secret_ref: SecretKeyRef { name: format!("{token}-pin"), key: "pin".into() },
        ca_chain: Some(certbridge::CaBundle {
            secret_ref: Some(certbridge::SecretKeySelector { name: format!("{token}-chain"), key: "ca.crt".into() }),
            ..Default::default()
        }),
        ca_chain_ref: None,
        policy: Policy::default(),
        signature: None,
        crl_distribution_points: vec![],
        ocsp_servers: vec![],
        issuing_certificate_urls: vec![],
    }
}

fn secrets_for(token: &str) -> Vec<Secret> {
    vec![
        certbridge::testing::secret(NS, &format!("{token}-pin"), None, &[("pin", PIN.as_bytes())]),
        certbridge::testing::secret(NS, &format!("{token}-chain"), None, &[("ca.crt", ca_pem(token).as_bytes())]),
    ]
}

fn offline_issuer(token: &str) -> (Issuer<Pkcs11IssuerSpec>, Resources) {
    let issuer = Issuer {
        name: token.into(),
        namespace: Some(NS.into()),
        scope: IssuerScope::Namespaced,
        uid: format!("uid-{token}"),
        generation: 1,
        annotations: BTreeMap::new(),
        spec: spec(token, &env().shim),
    };
    (issuer, Resources::from_objects(NS, secrets_for(token), vec![]))
}

fn csr(name: &str) -> (String, Vec<u8>) {
    let (csr, _) = certbridge::testing::generate_csr(&certbridge::KeyKind::EcP256, &[name]).unwrap();
    let key = certbridge::Csr::from_pem(&csr).unwrap().public_key_der;
    (csr, key)
}

fn request(csr: &str) -> SignRequest {
    SignRequest::from_csr_pem::<&str>(csr, Duration::from_secs(3600), false, &[]).unwrap()
}

fn row(fault: &str, request: &str, issuer: &str, recovery: &str) {
    if std::env::var_os("HSM_SHIM_TABLE").is_some() {
        println!("| {fault} | {request} | {issuer} | {recovery} |");
    }
}

/// The issuer's Ready condition as "status reason: message".
async fn issuer_ready(client: &kube::Client, name: &str) -> (String, String) {
    let obj = issuer_api::<Pkcs11IssuerSpec>(client, IssuerScope::Namespaced, NS).get(name).await.unwrap();
    let c = obj
        .data
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or_default();
    (
        format!("{} {}", c["status"].as_str().unwrap_or("-"), c["reason"].as_str().unwrap_or("")),
        c["message"].as_str().unwrap_or("").to_owned(),
    )
}

async fn request_ready(client: &kube::Client, name: &str) -> (bool, Option<Vec<u8>>) {
    let cr = Api::<certbridge::api::CertificateRequest>::namespaced(client.clone(), NS).get(name).await.unwrap();
    let ready = cr.condition("Ready").is_some_and(|c| c.status == "True");
    let cert = cr.status.and_then(|s| s.certificate).map(|c| c.0).filter(|c| !c.is_empty());
    (ready, cert)
}

fn leaf_key(chain: &[u8]) -> Vec<u8> {
    let issued = certbridge::Issued { chain_pem: String::from_utf8(chain.to_vec()).unwrap(), ca_pem: None };
    issued.leaf_public_key_der().unwrap()
}

/// A hung C_Sign: the request waits (not Ready, not Failed) and the issuer turns not ready
/// within the call deadline, while the same controller keeps issuing for another issuer; when the
/// module answers again, the issuer comes back and the request is issued once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_c_sign_makes_the_issuer_not_ready_and_nothing_stuck() {
    let e = env();
    let _turn = turn().await;
    let sim = certbridge_testkit::KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let client = sim.client();
    install_crds::<Pkcs11IssuerSpec>(&client).await.unwrap();
    create_namespace(&client, NS).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    for s in secrets_for(SHIM).into_iter().chain(secrets_for(DIRECT)) {
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let handle = certbridge::runtime::start(signer(), client.clone(), Default::default()).await.unwrap();
    create_issuer(&client, IssuerScope::Namespaced, NS, "shim", &spec(SHIM, &e.shim)).await.unwrap();
    create_issuer(&client, IssuerScope::Namespaced, NS, "direct", &spec(DIRECT, Path::new(DEFAULT_MODULE)))
        .await
        .unwrap();
    for name in ["shim", "direct"] {
        wait_issuer_ready::<Pkcs11IssuerSpec>(&client, IssuerScope::Namespaced, NS, name, WAIT).await.unwrap();
    }
    let create = async |name: &str, issuer: &str| {
        let (csr, key) = csr(&format!("{name}.example.com"));
        let cr = certificate_request::<Pkcs11IssuerSpec>(NS, name, &csr, IssuerScope::Namespaced, issuer);
        create_certificate_request(&client, &cr).await.unwrap();
        approve(&client, NS, name).await.unwrap();
        key
    };

    control("C_Sign hang\n");
    let hung_at = Instant::now();
    let key = create("stuck", "shim").await;
    // The issuer turns not ready, naming the module and the deadline.
    let (not_ready_after, message) = loop {
        let (state, message) = issuer_ready(&client, "shim").await;
        if state == "False Pending" {
            break (hung_at.elapsed(), message);
        }
        assert!(hung_at.elapsed() < WAIT, "the issuer stayed {state} with C_Sign hung: {message}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(message.contains(&e.shim.display().to_string()) && message.contains("did not"), "{message}");
    let (ready, cert) = request_ready(&client, "stuck").await;
    assert!(!ready && cert.is_none(), "the request cannot be issued while C_Sign hangs");

    // The controller is not stuck: another issuer's request is issued meanwhile.
    let other_key = create("bystander", "direct").await;
    let t = Instant::now();
    loop {
        if let (true, Some(cert)) = request_ready(&client, "bystander").await {
            assert_eq!(leaf_key(&cert), other_key);
            break;
        }
        assert!(t.elapsed() < WAIT, "the other issuer's request was not issued while the shim hung");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cr = Api::<certbridge::api::CertificateRequest>::namespaced(client.clone(), NS).get("stuck").await.unwrap();
    let reason = cr.condition("Ready").and_then(|c| c.reason.clone()).unwrap_or_default();
    assert_ne!(reason, "Failed", "a hung module never fails the request");

    // The module answers again: the issuer recovers by itself and the request is issued, once.
    control("");
    let cleared = Instant::now();
    let cert = loop {
        if let (true, Some(cert)) = request_ready(&client, "stuck").await {
            break cert;
        }
        assert!(
            cleared.elapsed() < WAIT,
            "not issued after the hang cleared: {:?}",
            issuer_ready(&client, "shim").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recovered = cleared.elapsed();
    assert_eq!(leaf_key(&cert), key);
    assert_eq!(issuer_ready(&client, "shim").await.0, "True Checked");
    row(
        "C_Sign hangs (deadline 2 s)",
        "False Pending (waits for the issuer), other issuers keep signing",
        &format!("False Pending after {:.1} s: \"{}\"", not_ready_after.as_secs_f64(), short(&message)),
        &format!("issued {:.1} s after the hang cleared, no restart", recovered.as_secs_f64()),
    );
    handle.shutdown().await;
    sim.shutdown().await;
}

fn short(m: &str) -> String {
    m.chars().take(110).collect::<String>() + if m.chars().count() > 110 { "…" } else { "" }
}

/// CKR_DEVICE_ERROR: once, recovered inside the same call (a fresh session); persistently, the
/// request is retried, never failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_errors_are_retried_never_permanent() {
    let _turn = turn().await;
    let signer = signer();
    let (issuer, res) = offline_issuer(SHIM);
    signer.check(&issuer, &res).await.unwrap();

    control("C_Sign fail CKR_DEVICE_ERROR 1\n");
    let (csr1, key1) = csr("once.example.com");
    let failed = calls_returning("C_Sign", "0x30");
    let issued = signer.sign(&request(&csr1), &issuer, &mut SignContext::offline(res.clone())).await.unwrap();
    assert_eq!(issued.leaf_public_key_der().unwrap(), key1);
    // (Counted by return value: a thread abandoned by another test may log its late C_Sign.)
    assert_eq!(calls_returning("C_Sign", "0x30") - failed, 1, "one failed C_Sign, then one on a fresh session");
    row("CKR_DEVICE_ERROR once on C_Sign", "issued in the same pass", "unchanged", "none needed");

    control("C_Sign fail CKR_DEVICE_ERROR\n");
    let (csr2, key2) = csr("always.example.com");
    let before = calls_returning("C_Sign", "0x30");
    let err = signer.sign(&request(&csr2), &issuer, &mut SignContext::offline(res.clone())).await.unwrap_err();
    let attempts = calls_returning("C_Sign", "0x30") - before;
    assert!(err.reaction != Reaction::Permanent, "{err:?}");
    assert!(err.to_string().contains("DeviceError"), "{err}");
    assert!(attempts <= 6, "{attempts} C_Sign calls in one pass: bounded by the pool's recovery attempts");
    let reaction = format!("{:?}", err.reaction);
    let check = signer.check(&issuer, &res).await.unwrap_err();
    assert_eq!(check.reaction, Reaction::IssuerNotReady, "{check:?}");

    control("");
    signer.check(&issuer, &res).await.unwrap();
    let issued = signer.sign(&request(&csr2), &issuer, &mut SignContext::offline(res)).await.unwrap();
    assert_eq!(issued.leaf_public_key_der().unwrap(), key2);
    row(
        "CKR_DEVICE_ERROR on every C_Sign",
        &format!("{reaction} after {attempts} C_Sign calls in the pass (\"{}\")", short(&err.to_string())),
        &format!("check: {:?}", check.reaction),
        "signs as soon as the device answers, no restart",
    );
}

/// CKR_PIN_LOCKED on login: the issuer is not ready, naming the PIN Secret and the fix; the
/// locked PIN is not sent again (no lockout spiral) until the Secret changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_pin_makes_the_issuer_not_ready_with_the_fix() {
    let _turn = turn().await;
    let signer = signer();
    let (issuer, res) = offline_issuer(LOCKED);
    control("C_Login fail CKR_PIN_LOCKED\n");
    let before = calls("C_Login");
    let err = signer.check(&issuer, &res).await.unwrap_err();
    assert_eq!(err.reaction, Reaction::IssuerNotReady, "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("Secret \"team-a/locked-pin\" key \"pin\""), "{msg}");
    assert!(msg.contains("locked") && msg.contains("SO PIN"), "{msg}");
    assert!(!msg.contains(PIN), "{msg}");
    for _ in 0..3 {
        assert_eq!(signer.check(&issuer, &res).await.unwrap_err().reaction, Reaction::IssuerNotReady);
        let (csr, _) = csr("x.example.com");
        let e = signer.sign(&request(&csr), &issuer, &mut SignContext::offline(res.clone())).await.unwrap_err();
        assert_eq!(e.reaction, Reaction::IssuerNotReady, "{e:?}");
    }
    let logins = calls("C_Login") - before;
    assert_eq!(logins, 1, "the locked PIN was sent {logins} times");
    control("");
    row(
        "CKR_PIN_LOCKED on C_Login",
        "IssuerNotReady (held until the issuer is ready)",
        &format!("False Pending: \"{}\"", short(&msg)),
        "after the PIN is unlocked and the Secret updated (the same PIN is never sent again); 1 C_Login in 4 checks + 3 signs",
    );
}

/// Another application logs the token out (C_Logout on a session of ours, as SoftHSM shares the
/// login per token): the next signature logs in again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_from_outside_is_recovered_in_the_same_call() {
    let _turn = turn().await;
    let signer = signer();
    let (issuer, res) = offline_issuer(LOGOUT);
    signer.check(&issuer, &res).await.unwrap();
    control("C_SignInit logout 1\n");
    let (logins, logouts) = (calls("C_Login"), calls("C_Logout"));
    let (csr, key) = csr("after-logout.example.com");
    let issued = signer.sign(&request(&csr), &issuer, &mut SignContext::offline(res)).await.unwrap();
    assert_eq!(issued.leaf_public_key_der().unwrap(), key);
    assert_eq!(calls("C_Login") - logins, 1, "logged in again once");
    // The shim's own C_Logout goes straight to SoftHSM (not through the intercepted entry).
    assert_eq!(calls("C_Logout") - logouts, 0);
    control("");
    row("C_Logout from outside (before C_SignInit)", "issued in the same pass", "unchanged", "one C_Login, no restart");
}

/// The built binary with the shim on its allow-list (`--allowed-module`) and a short
/// `--call-timeout`: `check -f` with C_Sign hung reports the deadline and exits (the thread stuck
/// in the module does not keep the process alive); with the hang gone it passes. The child has its
/// own control file, so this test needs no turn.
#[test]
fn the_binary_reports_a_hung_module_and_exits() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let manifest = dir.path().join("issuer.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"apiVersion: pkcs11.certbridge.io/v1alpha1
kind: Pkcs11Issuer
metadata: {{name: hsm, namespace: {NS}}}
spec:
  module: {module}
  token: {{label: {SHIM}}}
  key: {{label: ca-p256}}
  pinSecretRef: {{name: hsm-pin, key: pin}}
  caChain: {{secretRef: {{name: chain, key: ca.crt}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: hsm-pin, namespace: {NS}}}
stringData: {{pin: "{PIN}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: chain, namespace: {NS}}}
stringData:
  ca.crt: |
{chain}"#,
            module = e.shim.display(),
            chain = indent(&ca_pem(SHIM)),
        ),
    )
    .unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, format!("grants:\n- namespaces: [{NS}]\n  token: {{label: {SHIM}}}\n")).unwrap();
    let control = dir.path().join("control");
    let check = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_certbridge-pkcs11"))
            .args(["check", "-f"])
            .arg(&manifest)
            .arg("--allowed-module")
            .arg(&e.shim)
            .args(["--call-timeout", "1s", "--token-policy"])
            .arg(&policy)
            .env("SOFTHSM2_CONF", e.dir.join("softhsm2.conf"))
            .env("CERTBRIDGE_PKCS11_SHIM_CONTROL", &control)
            .env_remove("CERTBRIDGE_PKCS11_SHIM_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A liveness bound, not a timing: a process kept alive by the stuck thread never exits.
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                control_file_clear(&control);
                panic!("check -f did not exit within 60 s with a hung module");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    std::fs::write(&control, "C_Sign hang\n").unwrap();
    let (ok, text) = check();
    assert!(!ok, "{text}");
    assert!(text.contains("did not prepare the issuer within 1s") && text.contains("--call-timeout"), "{text}");
    std::fs::write(&control, "").unwrap();
    let (ok, text) = check();
    assert!(ok, "{text}");
}

fn control_file_clear(path: &Path) {
    let _ = std::fs::write(path, "");
}
