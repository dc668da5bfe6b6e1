//! Fixtures shared by the tests and the benchmark (`benches/issuance.rs` includes this file): the
//! certsrv simulator (`sim/certsrv_sim.py`, a separate Python process whose NTLM acceptor is
//! pyspnego), issuers for each auth method, and requests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use certbridge::{Issuer, IssuerScope, KeyKind, Resources, SignRequest};
use certbridge_adcs::spec::{AdcsIssuerSpec, AuthSpec, ChannelBindingMode, KerberosAuth, NtlmAuth, SecretRef};

pub const NS: &str = "team-a";
pub const USER: &str = "alice";
pub const DOMAIN: &str = "CORP";
pub const PASSWORD: &str = "S3cret-pw!";

/// How the simulator authenticates.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Ntlm,
    Kerberos,
    Basic,
    Cert,
}

/// Simulator options.
#[derive(Clone, Debug)]
pub struct SimOpts {
    pub mode: Mode,
    /// `off`, `when-supported`, `required`.
    pub epa: &'static str,
    pub latency_ms: u32,
}

impl Default for SimOpts {
    fn default() -> Self {
        SimOpts { mode: Mode::Ntlm, epa: "when-supported", latency_ms: 0 }
    }
}

/// A throwaway MIT KDC (scripts/krb5/start.sh), stopped on drop (scripts/krb5/stop.sh).
pub struct Kdc {
    dir: PathBuf,
    pub env: BTreeMap<String, String>,
}

impl Kdc {
    pub fn start() -> Kdc {
        let dir = std::env::temp_dir().join(format!("adcs-kdc-{}-{}", std::process::id(), rand_suffix()));
        let out = Command::new(repo_root().join("scripts/krb5/start.sh"))
            .arg(&dir)
            .output()
            .expect("scripts/krb5/start.sh runs");
        assert!(out.status.success(), "scripts/krb5/start.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        Kdc { dir, env }
    }
}

impl Kdc {
    /// How many tickets the KDC issued (`kind`: `AS_REQ` or `TGS_REQ`) to `client` (`user@REALM`),
    /// read from its log: the KDC's own count of AS/TGS exchanges.
    pub fn issued(&self, kind: &str, client: &str) -> usize {
        let log = std::fs::read_to_string(&self.env["KRB5_KDC_LOG"]).unwrap_or_default();
        log.lines()
            .filter(|l| {
                l.contains(&format!("{kind} (")) && l.contains(": ISSUE: ") && l.contains(&format!(", {client} for "))
            })
            .count()
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/krb5/stop.sh")).arg(&self.dir).status();
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A running simulator; killed on drop.
pub struct Sim {
    pub kdc: Option<Kdc>,
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub root_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    _dir: tempfile::TempDir,
    pub opts: SimOpts,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CERTBRIDGE_ADCS_PYTHON") {
        return PathBuf::from(p);
    }
    let p = repo_root().join(".work/adcs-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run issuers/adcs/scripts/install-sim.sh (installs pyspnego and cryptography into .work/adcs-venv)",
        p.display()
    );
    p
}

impl Sim {
    pub fn start(opts: SimOpts) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, format!("{DOMAIN}:{USER}:{PASSWORD}\n")).unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sim/certsrv_sim.py");
        let kdc = (opts.mode == Mode::Kerberos).then(Kdc::start);
        let auth = match opts.mode {
            Mode::Ntlm => "ntlm",
            Mode::Kerberos => "kerberos",
            Mode::Basic => "basic",
            Mode::Cert => "cert",
        };
        let mut cmd = Command::new(python());
        if let Some(k) = &kdc {
            cmd.env("KRB5_CONFIG", &k.env["KRB5_CONFIG"]).env("KRB5_KTNAME", &k.env["KRB5_KTNAME"]);
        }
        let mut child = cmd
            .arg(script)
            .args(["--auth", auth, "--epa", opts.epa, "--latency-ms", &opts.latency_ms.to_string()])
            .arg("--users")
            .arg(&users)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("simulator starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("simulator says where it listens");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("simulator output {line:?}: {e}"));
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        Sim {
            port: v["port"].as_u64().unwrap() as u16,
            admin_port: v["admin_port"].as_u64().unwrap() as u16,
            root_pem: s("root_pem"),
            client_cert_pem: s("client_cert_pem"),
            client_key_pem: s("client_key_pem"),
            child,
            kdc,
            _dir: dir,
            opts,
        }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}/certsrv", self.port)
    }

    /// One admin call (plain HTTP on loopback); returns the JSON answer.
    pub fn admin(&self, path_and_query: &str) -> serde_json::Value {
        admin_at(self.admin_port, path_and_query).unwrap_or_else(|e| panic!("admin {path_and_query}: {e}"))
    }

    pub fn approve(&self, id: u64) {
        self.admin(&format!("/approve?id={id}"));
    }
    /// Approves every pending request (a certificate manager clearing the queue); their IDs.
    pub fn approve_pending(&self) -> Vec<u64> {
        let out = self.admin("/approve-pending");
        out["approved"].as_array().map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect()).unwrap_or_default()
    }
    /// DER of every certificate the CA signed (its own record, not what it answered).
    pub fn issued_der(&self) -> Vec<Vec<u8>> {
        use base64::Engine as _;
        let out = self.admin("/issued");
        out["der"]
            .as_array()
            .expect("issued: der")
            .iter()
            .map(|d| base64::engine::general_purpose::STANDARD.decode(d.as_str().expect("base64")).expect("base64 DER"))
            .collect()
    }
    /// What the client sent that a correct client never sends (the simulator's module documentation).
    pub fn violations(&self) -> Vec<String> {
        let out = self.admin("/violations");
        out["violations"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default()
    }
    pub fn deny(&self, id: u64) {
        self.admin(&format!("/deny?id={id}"));
    }
    pub fn renew(&self) -> u64 {
        self.admin("/renew")["renewals"].as_u64().unwrap()
    }
    /// `kind`: a fault of the simulator (its module documentation lists them: front 503/502/504/429,
    /// certsrv reset/500/unknown-page/huge, spoilt answers drop-answer/reset-mid-body/truncate/
    /// garbage/slow-drip/other-key); `at`: a page name (certfnsh.asp) or any.
    pub fn fault(&self, kind: &str, at: &str, count: u32) {
        self.admin(&format!("/fault?kind={kind}&at={at}&count={count}"));
    }
    /// As [`Sim::fault`], the answer carrying `Retry-After: <secs>` (front faults).
    pub fn fault_retry_after(&self, kind: &str, at: &str, count: u32, secs: u64) {
        self.admin(&format!("/fault?kind={kind}&at={at}&count={count}&retry_after={secs}"));
    }
    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.admin("/clear-faults");
    }
    /// The simulator's request log from entry `since` on: `{t, method, page, fault, status}` per
    /// request that got past the 401 legs or met a front fault (`t`: its monotonic clock, seconds).
    pub fn log(&self, since: usize) -> Vec<serde_json::Value> {
        self.admin(&format!("/log?since={since}"))["log"].as_array().cloned().unwrap_or_default()
    }
    /// The request IDs certsrv recorded for `csr_pem`, in order.
    pub fn request_ids(&self, csr_pem: &str) -> Vec<u64> {
        let sha = csr_sha(csr_pem);
        let by_id = self.counters()["requests_by_id"].clone();
        let mut ids: Vec<u64> = by_id
            .as_object()
            .map(|m| {
                m.iter().filter(|(_, r)| r["csr_sha"] == sha.as_str()).filter_map(|(id, _)| id.parse().ok()).collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }
    pub fn counters(&self) -> serde_json::Value {
        self.admin("/counters")
    }
    /// How many submits the CA recorded for `csr_pem`.
    pub fn enrollments(&self, csr_pem: &str) -> u64 {
        self.counters()["enrollments"][csr_sha(csr_pem)].as_u64().unwrap_or(0)
    }
}

/// One admin call to the simulator whose admin handle listens on `port`: `{submits, last_id,
/// issued}` from `/events` is cheap enough to poll every few milliseconds from a thread that
/// holds only the port. Errors are returned, not panicked on, so a poller outliving the
/// simulator just stops.
pub fn admin_at(port: u16, path_and_query: &str) -> Result<serde_json::Value, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("admin port: {e}"))?;
    write!(s, "POST {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        .map_err(|e| format!("writing: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| format!("reading: {e}"))?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).map_err(|e| format!("{out:?}: {e}"))
}

/// How the simulator names a CSR: SHA-256 of its trimmed PEM, hex.
fn csr_sha(csr_pem: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(csr_pem.trim().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn secret(ns: &str, name: &str, type_: Option<&str>, data: &[(&str, &str)]) -> Secret {
    let data: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    certbridge::testing::secret(ns, name, type_, &data)
}

/// The credentials Secret `creds` and the CA bundle ConfigMap `adcs-ca` for `sim` in `ns`.
pub fn objects(sim: &Sim, ns: &str, password: &str) -> (Vec<Secret>, Vec<ConfigMap>) {
    let creds = match sim.opts.mode {
        Mode::Ntlm => secret(ns, "creds", None, &[("username", USER), ("domain", DOMAIN), ("password", password)]),
        Mode::Basic => secret(ns, "creds", None, &[("username", USER), ("password", password)]),
        Mode::Kerberos => {
            let env = &sim.kdc.as_ref().expect("KDC").env;
            let pw = if password == PASSWORD { env["KRB5_PASSWORD"].as_str() } else { password };
            secret(ns, "creds", None, &[("username", &env["KRB5_USER"]), ("password", pw)])
        }
        Mode::Cert => secret(
            ns,
            "creds",
            Some("kubernetes.io/tls"),
            &[("tls.crt", &sim.client_cert_pem), ("tls.key", &sim.client_key_pem)],
        ),
    };
    (vec![creds], vec![certbridge::testing::config_map(ns, "adcs-ca", &[("ca.crt", &sim.root_pem)])])
}

pub fn resources(sim: &Sim) -> Resources {
    let (s, c) = objects(sim, NS, PASSWORD);
    Resources::from_objects(NS, s, c)
}

pub fn spec(sim: &Sim) -> AdcsIssuerSpec {
    let creds = SecretRef { secret_name: "creds".into() };
    let auth = match sim.opts.mode {
        Mode::Ntlm => AuthSpec {
            ntlm: Some(NtlmAuth { secret_name: "creds".into(), channel_binding: Some(ChannelBindingMode::Auto) }),
            ..Default::default()
        },
        Mode::Basic => AuthSpec { basic: Some(creds), ..Default::default() },
        Mode::Kerberos => {
            let env = &sim.kdc.as_ref().expect("KDC").env;
            AuthSpec {
                kerberos: Some(KerberosAuth {
                    secret_name: "creds".into(),
                    realm: env["KRB5_REALM"].clone(),
                    kdc: vec![env["KRB5_KDC"].clone()],
                    spn: None,
                    channel_binding: Some(ChannelBindingMode::Auto),
                }),
                ..Default::default()
            }
        }
        Mode::Cert => AuthSpec { client_certificate: Some(creds), ..Default::default() },
    };
    AdcsIssuerSpec {
        url: sim.url(),
        template: "WebServer".into(),
        allowed_overrides: vec![],
        auth,
        ca_bundle: Some(certbridge::CaBundle {
            config_map_ref: Some(certbridge::ConfigMapKeySelector { name: "adcs-ca".into(), key: "ca.crt".into() }),
            ..Default::default()
        }),
        poll_interval_seconds: Some(1),
        request_timeout_seconds: Some(10),
    }
}

pub fn issuer(spec: AdcsIssuerSpec) -> Issuer<AdcsIssuerSpec> {
    Issuer {
        name: "adcs".into(),
        namespace: Some(NS.into()),
        scope: IssuerScope::Namespaced,
        uid: "uid-1".into(),
        generation: 1,
        annotations: BTreeMap::new(),
        spec,
    }
}

/// A CertificateRequest-shaped request for a fresh P-256 key with CN and DNS name `cn`.
pub fn request(cn: &str, annotations: &[(&str, &str)]) -> SignRequest {
    let (pem, _key) = certbridge::testing::generate_csr(&KeyKind::EcP256, &[cn]).unwrap();
    let mut r = SignRequest::from_csr_pem::<&str>(&pem, Duration::from_secs(7 * 86400), false, &[]).unwrap();
    r.object.kind = certbridge::RequestKind::CertificateRequest;
    r.object.name = format!("{cn}-1");
    r.object.namespace = Some(NS.into());
    r.object.annotations = annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    r
}
