//! One SoftHSM token directory per test process, made by the project's own script, plus helpers to
//! build issuers, CSRs and to check certificates with openssl.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, at `C_Initialize`, and cryptoki initializes once per process,
//! so every token the tests use is created before the first in-process PKCS#11 call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use certbridge::{Issued, Issuer, IssuerScope, Resources, SignContext, SignError, SignRequest, Signer};
use certbridge_pkcs11::Pkcs11Signer;
use certbridge_pkcs11::grants::TokenPolicy;
use certbridge_pkcs11::module::{AllowedModules, DEFAULT_MODULE};
use certbridge_pkcs11::spec::{KeyRef, Pkcs11IssuerSpec, Policy, SecretKeyRef, TokenRef};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

pub const NS: &str = "team-a";
/// The token with the four CA keys.
pub const MAIN: &str = "ca";
/// A token for wrong-PIN tests (its failure counter must not bother the others).
pub const BADPIN: &str = "badpin";
/// A token whose sessions and login the tests break on purpose.
pub const RECOVER: &str = "recover";
/// A token for the concurrency test (its session count is checked).
pub const BURST: &str = "burst";
/// The controller test's wrong-PIN token (apart from BADPIN, whose login count another test checks).
pub const CTLBAD: &str = "ctlbad";
/// A token whose files the tests take away and bring back, with its own PIN (one no token serial
/// can contain, so "the PIN is not in the message" means something).
pub const GONE: &str = "gone";
pub const GONE_PIN: &str = "pin-of-gone-token";
/// A token used next to GONE through the same (second) SoftHSM instance; see `removal`.
pub const BYSTANDER: &str = "bystander";
/// Tokens of the tenant-isolation tests (`security`): one shared by a cluster issuer and tenants,
/// one whose failed-login budget a test spends.
pub const SHARED: &str = "shared";
pub const LIMITED: &str = "limited";
pub const PIN: &str = "4321";
pub const CA_KINDS: [&str; 4] = ["rsa2048", "p256", "p384", "ed25519"];

pub struct Hsm {
    pub dir: PathBuf,
}

/// When this test process first used the HSM (Unix seconds): every certificate a test checks was
/// issued after it, so a leaf's notBefore must not be earlier.
pub fn started() -> i64 {
    static STARTED: OnceLock<i64> = OnceLock::new();
    *STARTED.get_or_init(|| time::OffsetDateTime::now_utc().unix_timestamp())
}

/// The token directory, created on first use by `softhsm/setup-token.sh`.
pub fn hsm() -> &'static Hsm {
    static HSM: OnceLock<Hsm> = OnceLock::new();
    started();
    HSM.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pkcs11-it-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir")
            .keep();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../softhsm/setup-token.sh");
        for (label, kinds, pin) in [
            (MAIN, &CA_KINDS[..], PIN),
            (BADPIN, &["p256"][..], PIN),
            (RECOVER, &["p256"][..], PIN),
            (BURST, &["p256"][..], PIN),
            (CTLBAD, &["p256"][..], PIN),
            (GONE, &["p256"][..], GONE_PIN),
            (BYSTANDER, &["p256"][..], PIN),
            (SHARED, &["p256"][..], PIN),
            (LIMITED, &["p256"][..], PIN),
        ] {
            let mut cmd = Command::new("bash");
            cmd.arg(&script).arg(&dir).args(["--label", label, "--pin", pin, "--so-pin", "99999"]);
            for k in kinds {
                cmd.args(["--kind", k]);
            }
            cmd.env("CERTBRIDGE_PKCS11_TOKEN_BIN", env!("CARGO_BIN_EXE_certbridge-pkcs11-token"));
            let out = cmd.output().expect("run softhsm/setup-token.sh");
            assert!(
                out.status.success(),
                "softhsm/setup-token.sh failed (it installs softhsm2 when missing; run it as root or install softhsm2): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        foreign_ca(&dir);
        // SAFETY: set once, before any thread of this process loads the PKCS#11 module; every test
        // reaches PKCS#11 only through this fixture.
        unsafe { std::env::set_var("SOFTHSM2_CONF", dir.join("softhsm2.conf")) };
        Hsm { dir }
    })
}

/// A CA made by openssl (not rcgen) whose subject has two OUs — a name rcgen cannot re-encode
/// byte for byte — with its P-256 key imported into the main token as `ca-multi`.
fn foreign_ca(dir: &Path) {
    let key = dir.join("multi.key");
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
        .arg(&key));
    run(Command::new("openssl")
        .args(["req", "-x509", "-new", "-key"])
        .arg(&key)
        .args(["-subj", "/O=certbridge/OU=a/OU=b/CN=foreign CA", "-days", "3650", "-out"])
        .arg(dir.join(format!("{MAIN}-ca-multi.pem")))
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
    run(Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .args(["--import"])
        .arg(&key)
        .args(["--token", MAIN, "--label", "ca-multi", "--id", "cafe01", "--pin", PIN]));
    let _ = std::fs::remove_file(&key);
}

impl Hsm {
    pub fn ca_pem(&self, label: &str, kind: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{label}-ca-{kind}.pem"))).expect("CA PEM written by the script")
    }
}

pub fn signer() -> Pkcs11Signer {
    hsm();
    // These tests use namespaced issuers freely; the token policy has tests of its own (security).
    Pkcs11Signer::with_config(AllowedModules::new([DEFAULT_MODULE]), 4).with_token_policy(TokenPolicy::unrestricted())
}

pub fn spec(token: &str, kind: &str) -> Pkcs11IssuerSpec {
    Pkcs11IssuerSpec {
        module: DEFAULT_MODULE.into(),
        token: TokenRef { label: Some(token.into()), serial: None },
        key: KeyRef { label: Some(format!("ca-{kind}")), id: None },
        pin_secret_ref: SecretKeyRef { name: "hsm-pin".into(), key: "pin".into() },
        ca_chain: Some(chain_in_secret("ca-chain")),
        ca_chain_ref: None,
        policy: Policy::default(),
        signature: None,
        crl_distribution_points: vec![],
        ocsp_servers: vec![],
        issuing_certificate_urls: vec![],
    }
}

/// `spec.caChain` naming key `ca.crt` of the Secret `name`.
pub fn chain_in_secret(name: &str) -> certbridge::CaBundle {
    certbridge::CaBundle {
        secret_ref: Some(certbridge::SecretKeySelector { name: name.into(), key: "ca.crt".into() }),
        ..Default::default()
    }
}

pub fn issuer(name: &str, spec: Pkcs11IssuerSpec) -> Issuer<Pkcs11IssuerSpec> {
    Issuer {
        name: name.into(),
        namespace: Some(NS.into()),
        scope: IssuerScope::Namespaced,
        uid: format!("uid-{name}"),
        generation: 1,
        annotations: BTreeMap::new(),
        spec,
    }
}

pub fn secret(name: &str, key: &str, value: &str) -> Secret {
    certbridge::testing::secret(NS, name, None, &[(key, value.as_bytes())])
}

pub fn config_map(name: &str, key: &str, value: &str) -> ConfigMap {
    certbridge::testing::config_map(NS, name, &[(key, value)])
}

/// Resources holding `pin` and `chain`.
pub fn resources(pin: &str, chain: &str) -> Resources {
    Resources::from_objects(NS, vec![secret("hsm-pin", "pin", pin), secret("ca-chain", "ca.crt", chain)], vec![])
}

/// Everything a test needs to sign with one CA of the main token.
pub struct Ca {
    pub signer: Pkcs11Signer,
    pub issuer: Issuer<Pkcs11IssuerSpec>,
    pub resources: Resources,
    pub ca_pem: String,
}

impl Ca {
    pub fn new(kind: &str, f: impl FnOnce(&mut Pkcs11IssuerSpec)) -> Ca {
        let h = hsm();
        let mut s = spec(MAIN, kind);
        f(&mut s);
        let ca_pem = h.ca_pem(MAIN, kind);
        Ca { signer: signer(), issuer: issuer(&format!("ca-{kind}"), s), resources: resources(PIN, &ca_pem), ca_pem }
    }

    pub async fn sign(&self, req: &SignRequest) -> Result<Issued, SignError> {
        self.signer.sign(req, &self.issuer, &mut SignContext::offline(self.resources.clone())).await
    }

    pub async fn check(&self) -> Result<certbridge::Ready, SignError> {
        self.signer.check(&self.issuer, &self.resources).await
    }
}

/// A CSR made by openssl: key type (`rsa:2048`, `ec:P-256`, `ec:P-384`, `ed25519`), subject, SANs
/// in openssl's `subjectAltName` syntax.
pub fn openssl_csr(key: &str, subject: &str, sans: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let keyfile = dir.path().join("k.pem");
    let mut genkey = Command::new("openssl");
    genkey.arg("genpkey");
    match key.split_once(':') {
        Some(("rsa", bits)) => genkey.args(["-algorithm", "RSA", "-pkeyopt", &format!("rsa_keygen_bits:{bits}")]),
        Some(("ec", curve)) => genkey.args(["-algorithm", "EC", "-pkeyopt", &format!("ec_paramgen_curve:{curve}")]),
        _ => genkey.args(["-algorithm", key]),
    };
    run(genkey.arg("-out").arg(&keyfile));
    let mut req = Command::new("openssl");
    req.args(["req", "-new", "-key"]).arg(&keyfile).args(["-subj", subject]);
    if !sans.is_empty() {
        req.args(["-addext", &format!("subjectAltName={sans}")]);
    }
    String::from_utf8(run(&mut req)).expect("PEM is text")
}

pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}): install openssl"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// `openssl verify -CAfile ca [-untrusted chain] leaf`, returning openssl's verdict.
pub fn openssl_verify(ca_pem: &str, issued: &Issued) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).expect("write");
    let blocks = pem::parse_many(&issued.chain_pem).expect("chain PEM");
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, certbridge::pki::to_pem(blocks[0].contents())).expect("write");
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-x509_strict", "-CAfile"]).arg(&ca);
    if blocks.len() > 1 {
        let chain = dir.path().join("chain.pem");
        let rest: String = blocks[1..].iter().map(|b| certbridge::pki::to_pem(b.contents())).collect();
        std::fs::write(&chain, rest).expect("write");
        cmd.arg("-untrusted").arg(&chain);
    }
    let out = cmd.arg(&leaf).output().expect("openssl");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

pub fn request(csr: &str, hours: u64, is_ca: bool, usages: &[&str]) -> SignRequest {
    SignRequest::from_csr_pem(csr, Duration::from_secs(hours * 3600), is_ca, usages).expect("valid request")
}
