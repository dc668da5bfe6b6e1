//! certbridge-vault against a real OpenBao server (started per test by
//! `certbridge_vault::testing::OpenBao`; install it with `scripts/openbao/install.sh`).

mod auth;
mod chain;
mod cli;
mod controller;
mod failures;
mod kubernetes;
mod matrix;
mod secrets;
mod secrets_never_leak;
mod security;
mod tokens;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use certbridge::{Issued, Issuer, IssuerScope, Reaction, Resources, SignContext, SignError, SignRequest, Signer};
use certbridge_vault::spec::{SecretKeyRef, VaultAuth};
use certbridge_vault::testing::{OpenBao, PKI_MOUNT, Pki, ROLE};
use certbridge_vault::{VaultSigner, VaultSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};

/// The namespace of the test issuers and their Secrets.
pub const NS: &str = "team-a";

/// A started server with the PKI hierarchy.
pub async fn openbao() -> (OpenBao, Pki) {
    let bao = OpenBao::start().await.expect("start OpenBao (install it with scripts/openbao/install.sh)");
    let pki = bao.setup_pki().await.expect("configure PKI");
    (bao, pki)
}

/// A spec signing with the `web` role over plain HTTP.
pub fn spec(bao: &OpenBao, auth: VaultAuth) -> VaultSpec {
    VaultSpec { server: bao.addr(), path: format!("{PKI_MOUNT}/sign/{ROLE}"), auth, ..Default::default() }
}

/// A namespaced issuer `team-a/vault` at generation 1.
pub fn issuer(spec: VaultSpec) -> Issuer<VaultSpec> {
    Issuer {
        name: "vault".into(),
        namespace: Some(NS.into()),
        scope: IssuerScope::Namespaced,
        uid: "0c6f6c3e-uid".into(),
        generation: 1,
        annotations: BTreeMap::new(),
        spec,
    }
}

/// A Secret in [`NS`].
pub fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(NS.into()), ..Default::default() },
        string_data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    }
}

/// Resources serving `secrets`.
pub fn resources(secrets: Vec<Secret>) -> Resources {
    Resources::from_objects(NS, secrets, vec![])
}

/// `name`/`key` reference.
pub fn key_ref(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef { name: name.into(), key: Some(key.into()) }
}

/// A P-256 CSR with CN = first DNS name, the DNS names, IPs and URIs as SANs.
pub fn csr(dns: &[&str], ips: &[&str], uris: &[&str]) -> String {
    let key = KeyPair::generate().unwrap();
    let mut names: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
    names.extend(ips.iter().map(|s| s.to_string()));
    let mut p = CertificateParams::new(names).unwrap();
    if let Some(cn) = dns.first() {
        p.distinguished_name.push(DnType::CommonName, *cn);
    }
    for u in uris {
        p.subject_alt_names.push(SanType::URI((*u).try_into().unwrap()));
    }
    p.serialize_request(&key).unwrap().pem().unwrap()
}

/// A request for `csr_pem` valid for `duration`.
pub fn request(csr_pem: &str, duration: Duration) -> SignRequest {
    SignRequest::from_csr_pem::<&str>(csr_pem, duration, false, &[]).unwrap()
}

/// Signs one request through the signer with `res`.
pub async fn sign(
    signer: &VaultSigner,
    issuer: &Issuer<VaultSpec>,
    res: &Resources,
    csr_pem: &str,
) -> Result<Issued, SignError> {
    let mut ctx = SignContext::offline(res.clone());
    signer.sign(&request(csr_pem, Duration::from_secs(24 * 3600)), issuer, &mut ctx).await
}

/// `openssl verify` of the issued chain against `root_pem` only; returns openssl's output.
pub fn openssl_verify(root_pem: &str, issued: &Issued) -> String {
    let dir = tempfile::tempdir().unwrap();
    let blocks: Vec<String> = pem_blocks(&issued.chain_pem);
    std::fs::write(dir.path().join("root.pem"), root_pem).unwrap();
    std::fs::write(dir.path().join("leaf.pem"), &blocks[0]).unwrap();
    std::fs::write(dir.path().join("untrusted.pem"), blocks[1..].concat()).unwrap();
    let mut args = vec!["verify", "-CAfile", "root.pem", "-purpose", "sslserver"];
    if blocks.len() > 1 {
        args.extend(["-untrusted", "untrusted.pem"]);
    }
    args.push("leaf.pem");
    let out = Command::new("openssl")
        .current_dir(dir.path())
        .args(args)
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The PEM blocks of a bundle, each re-encoded with LF endings.
pub fn pem_blocks(bundle: &str) -> Vec<String> {
    bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|b| format!("{b}\n"))
        .collect()
}

/// base64 of a string, for `caBundle`.
pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Everything logged through `tracing` while the guard lives (on this thread), at TRACE level.
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Starts capturing.
    pub fn start() -> LogCapture {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || BufWriter(writer.clone()))
            .finish();
        LogCapture { buf, _guard: tracing::subscriber::set_default(subscriber) }
    }

    /// The captured text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// How many lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}
