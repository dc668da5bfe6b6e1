//! Signing throughput against SoftHSM, side by side on one token in one run:
//! (a) a raw cryptoki C_Sign loop (one session per thread, the mechanism our path uses), and
//! (b) the full path: parse + verify the CSR, policy, build the certificate, HSM sign, PEM chain,
//! on 1 and 2 threads, for RSA-2048 and P-256 CA keys, with leaf CSRs of cert-manager's default key
//! (RSA-2048) and of ECDSA P-256. Also a breakdown of where the time goes.
//!
//! `cargo bench -p certbridge-pkcs11 --bench sign` (release). Set BENCH_SECONDS to change the
//! measuring time per cell (default 1), BENCH_ROUNDS the alternating raw/full rounds whose median
//! is reported (default 9), BENCH_CA=rsa2048 or p256 to measure one CA key.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certbridge::SignRequest;
use certbridge_pkcs11::ca::{Inputs, PreparedCa, prepare};
use certbridge_pkcs11::key::digest;
use certbridge_pkcs11::module::{AllowedModules, DEFAULT_MODULE, load};
use certbridge_pkcs11::spec::{HashAlg, KeyRef, Pkcs11IssuerSpec, Policy, SecretKeyRef, TokenRef};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

const LABEL: &str = "bench";
const PIN: &str = "1234";

fn main() {
    let secs = Duration::from_secs_f64(
        std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0f64).max(0.1),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../softhsm/setup-token.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir.path())
        .args(["--label", LABEL, "--pin", PIN, "--kind", "rsa2048", "--kind", "p256"])
        .env("CERTBRIDGE_PKCS11_TOKEN_BIN", env!("CARGO_BIN_EXE_certbridge-pkcs11-token"))
        .output()
        .expect("run softhsm/setup-token.sh");
    assert!(out.status.success(), "softhsm/setup-token.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    // SAFETY: single-threaded here, before the module is loaded.
    unsafe { std::env::set_var("SOFTHSM2_CONF", dir.path().join("softhsm2.conf")) };

    // cert-manager's default private key is RSA-2048; P-256 leaves cost a ~50 µs ECDSA verification.
    let leaves = [("rsa2048", csr(dir.path(), "rsa2048")), ("p256", csr(dir.path(), "p256"))];
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(9).max(1);
    println!(
        "SoftHSM bench: token {LABEL:?}, leaf CSRs with 2 SANs, {secs:?} per cell, {rounds} rounds; \
         full/raw is the median of each round's full rate over the mean of the raw rates measured just \
         before and just after it"
    );
    println!(
        "{:<8} {:>7} {:>9} {:>22} {:>22} {:>17}",
        "CA key", "threads", "leaf key", "raw C_Sign/s (range)", "full certs/s (range)", "full/raw (range)"
    );
    // BENCH_CA=rsa2048 or p256 measures one CA key only.
    let only = std::env::var("BENCH_CA").ok();
    for kind in ["rsa2048", "p256"].into_iter().filter(|k| only.as_deref().is_none_or(|o| o == *k)) {
        let ca = Arc::new(prepared(dir.path(), kind));
        for threads in [1usize, 2] {
            // Raw and full cells alternate, and each full cell is compared with the raw cells on
            // either side of it: a shared machine's drift then hits both sides of the ratio alike.
            let mut raw = vec![run_threads(threads, secs, |_| raw_loop(kind))];
            let mut full = vec![Vec::new(); leaves.len()];
            let mut ratio = vec![Vec::new(); leaves.len()];
            for _ in 0..rounds {
                let mut this_round = Vec::new();
                for (_, csr) in &leaves {
                    this_round.push(run_threads(threads, secs, |_| {
                        let ca = ca.clone();
                        let csr = csr.clone();
                        move || {
                            let req = SignRequest::from_csr_pem::<&str>(&csr, Duration::from_secs(86400), false, &[])
                                .expect("request");
                            let issued = ca.sign(&req).expect("sign");
                            std::hint::black_box(issued);
                        }
                    }));
                }
                raw.push(run_threads(threads, secs, |_| raw_loop(kind)));
                let around = (raw[raw.len() - 2] + raw[raw.len() - 1]) / 2.0;
                for (i, rate) in this_round.into_iter().enumerate() {
                    full[i].push(rate);
                    ratio[i].push(100.0 * rate / around);
                }
            }
            let raw = Summary::of(raw);
            for (((leaf, _), full), ratio) in leaves.iter().zip(full).zip(ratio) {
                println!(
                    "{kind:<8} {threads:>7} {leaf:>9} {:>22} {:>22} {:>17}",
                    raw.to_string(),
                    Summary::of(full).to_string(),
                    Summary::of(ratio).to_string().replace(" (", "% (").replace(')', "%)"),
                );
            }
        }
        for (leaf, csr) in &leaves {
            breakdown(&ca, csr, kind, leaf);
        }
    }
}

/// Median and range of a cell's rounds.
struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn of(mut v: Vec<f64>) -> Summary {
        v.sort_by(f64::total_cmp);
        Summary { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1] }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0} ({:.0}–{:.0})", self.median, self.min, self.max)
    }
}

/// Ops/s of `threads` threads each running, for `secs` seconds, the closure `make` builds on that
/// thread (a cryptoki Session is not Send, so each thread opens its own).
fn run_threads<F, G>(threads: usize, secs: Duration, make: G) -> f64
where
    G: Fn(usize) -> F + Sync,
    F: FnMut(),
{
    let ready = std::sync::Barrier::new(threads);
    let total: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (make, ready) = (&make, &ready);
                scope.spawn(move || {
                    let mut f = make(i);
                    f(); // warm up (sessions, caches)
                    ready.wait();
                    // Every thread's own clock starts after the barrier; they differ by microseconds.
                    let end = Instant::now() + secs;
                    let mut n = 0u64;
                    while Instant::now() < end {
                        f();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).sum()
    });
    total as f64 / secs.as_secs_f64()
}

/// One session per thread signing a digest with the mechanism the full path uses.
fn raw_loop(kind: &'static str) -> impl FnMut() {
    let module = load(Path::new(DEFAULT_MODULE)).expect("module");
    let slot = module
        .ctx
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| module.ctx.get_token_info(*s).is_ok_and(|i| i.label().trim_end() == LABEL))
        .expect("bench token");
    let session = module.ctx.open_ro_session(slot).expect("session");
    match session.login(UserType::User, Some(&AuthPin::new(PIN.into()))) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("login: {e}"),
    }
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(format!("ca-{kind}").into_bytes()),
        ])
        .expect("find")[0];
    let d = digest(HashAlg::Sha256, b"to be signed");
    let p256 = kind == "p256";
    let data = if p256 {
        d
    } else {
        let mut v = vec![
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
            0x20,
        ];
        v.extend_from_slice(&d);
        v
    };
    move || {
        // Mechanism is not Send; these two are plain constants, built per call.
        let mechanism = if p256 { Mechanism::Ecdsa } else { Mechanism::RsaPkcs };
        std::hint::black_box(session.sign(&mechanism, key, &data).expect("C_Sign"));
    }
}

fn prepared(dir: &Path, kind: &str) -> PreparedCa {
    let spec = Pkcs11IssuerSpec {
        module: DEFAULT_MODULE.into(),
        token: TokenRef { label: Some(LABEL.into()), serial: None },
        key: KeyRef { label: Some(format!("ca-{kind}")), id: None },
        pin_secret_ref: SecretKeyRef { name: "pin".into(), key: "pin".into() },
        ca_chain: Some(certbridge::CaBundle {
            secret_ref: Some(certbridge::SecretKeySelector { name: "ca".into(), key: "ca.crt".into() }),
            ..Default::default()
        }),
        ca_chain_ref: None,
        policy: Policy::default(),
        signature: None,
        crl_distribution_points: vec![],
        ocsp_servers: vec![],
        issuing_certificate_urls: vec![],
    };
    let chain = std::fs::read_to_string(dir.join(format!("{LABEL}-ca-{kind}.pem"))).expect("CA PEM");
    prepare(Inputs {
        spec: &spec,
        pin: &Zeroizing::new(PIN.to_owned()),
        chain_der: &certbridge::pki::certificates_from_pem(&chain).expect("CA PEM"),
        chain_place: "the bench chain",
        allowed: &AllowedModules::new([DEFAULT_MODULE]),
        max_sessions: 2,
    })
    .unwrap_or_else(|e| panic!("prepare {kind}: {e:?}"))
}

/// Single-threaded time per step of the full path.
fn breakdown(ca: &PreparedCa, csr: &str, kind: &str, leaf: &str) {
    const N: u32 = 2000;
    let t = Instant::now();
    for _ in 0..N {
        std::hint::black_box(SignRequest::from_csr_pem::<&str>(csr, Duration::from_secs(86400), false, &[]).unwrap());
    }
    let parse = t.elapsed() / N;
    let req = SignRequest::from_csr_pem::<&str>(csr, Duration::from_secs(86400), false, &[]).unwrap();
    let t = Instant::now();
    for _ in 0..N {
        std::hint::black_box(ca.sign(&req).unwrap());
    }
    let sign = t.elapsed() / N;
    let t = Instant::now();
    for _ in 0..N {
        std::hint::black_box(ca.key().sign_message(b"to be signed").unwrap());
    }
    let hsm = t.elapsed() / N;
    println!(
        "  breakdown {kind} CA, {leaf} leaf: CSR parse+verify {parse:?}, build+sign+PEM {sign:?} (of which HSM sign incl. digest {hsm:?}, so build+PEM ≈ {:?})",
        sign.saturating_sub(hsm)
    );
}

fn csr(dir: &Path, kind: &str) -> String {
    let key = dir.join(format!("leaf-{kind}.key"));
    let keygen: &[&str] = match kind {
        "rsa2048" => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        _ => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    };
    let ok = Command::new("openssl")
        .arg("genpkey")
        .args(keygen)
        .arg("-out")
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(ok.success());
    let out = Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(&key)
        .args(["-subj", "/CN=bench.example.com", "-addext", "subjectAltName=DNS:bench.example.com,IP:192.0.2.1"])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("PEM")
}
