//! Shared fixtures: a simulator, issuers for both auth modes, CSRs, a recording state store, a
//! log capture, and openssl verification.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use certbridge::context::StateStore;
use certbridge::{Issuer, IssuerScope, Resources, SignContext, SignError, SignRequest, async_trait};
use certbridge_ejbca::sim::{EjbcaSim, SimOptions};
use certbridge_ejbca::{CaBundleRef, EjbcaIssuerSpec};

pub const NS: &str = "team-a";

pub async fn sim() -> EjbcaSim {
    EjbcaSim::start(SimOptions::default()).await.expect("simulator starts")
}

pub fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(NS.into()), ..Default::default() },
        data: Some(data.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()),
        ..Default::default()
    }
}

pub fn config_map(name: &str, key: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(NS.into()), ..Default::default() },
        data: Some([(key.to_owned(), value.to_owned())].into()),
        ..Default::default()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Mtls,
    OAuth,
}

/// Resources with the credentials Secret `creds` for `mode` and the CA bundle ConfigMap `ejbca-ca`.
pub fn resources(sim: &EjbcaSim, mode: Mode) -> Resources {
    let creds = match mode {
        Mode::Mtls => {
            let (cert, key) = sim.client_identity();
            secret("creds", &[("tls.crt", &cert), ("tls.key", &key)])
        }
        Mode::OAuth => {
            let (id, secret_value) = sim.oauth_client();
            secret(
                "creds",
                &[
                    ("tokenUrl", &sim.token_url()),
                    ("clientId", &id),
                    ("clientSecret", &secret_value),
                    ("scopes", "ejbca:enroll ejbca:read"),
                    ("audience", "ejbca"),
                ],
            )
        }
    };
    Resources::from_objects(NS, vec![creds], vec![config_map("ejbca-ca", "ca.crt", &sim.root_pem())])
}

pub fn spec(sim: &EjbcaSim) -> EjbcaIssuerSpec {
    EjbcaIssuerSpec {
        hostname: sim.host(),
        certificate_profile_name: "ENDUSER".into(),
        end_entity_profile_name: "EMPTY".into(),
        certificate_authority_name: "IssuingCA".into(),
        end_entity_name: None,
        ejbca_secret_name: "creds".into(),
        ca_bundle: Some(CaBundleRef {
            secret_name: None,
            config_map_name: Some("ejbca-ca".into()),
            key: "ca.crt".into(),
        }),
        request_timeout_seconds: Some(5),
    }
}

pub fn issuer(spec: EjbcaIssuerSpec) -> Issuer<EjbcaIssuerSpec> {
    Issuer {
        name: "ejbca".into(),
        namespace: Some(NS.into()),
        scope: IssuerScope::Namespaced,
        uid: "uid-1".into(),
        generation: 1,
        annotations: BTreeMap::new(),
        spec,
    }
}

/// A CSR with CN `cn` and DNS name `cn`.
pub fn request(cn: &str, annotations: &[(&str, &str)]) -> SignRequest {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    let mut r = SignRequest::from_csr_pem::<&str>(&pem, Duration::from_secs(7 * 86400), false, &[]).unwrap();
    r.object.kind = certbridge::RequestKind::CertificateRequest;
    r.object.name = format!("{cn}-1");
    r.object.namespace = Some(NS.into());
    r.object.annotations = annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    r
}

/// A state store that records every save, like the controller's annotation writes.
#[derive(Clone, Default)]
pub struct Store(pub Arc<Mutex<Vec<BTreeMap<String, String>>>>);

#[async_trait]
impl StateStore for Store {
    async fn save(&self, state: &BTreeMap<String, String>) -> Result<(), SignError> {
        self.0.lock().unwrap().push(state.clone());
        Ok(())
    }
}

impl Store {
    /// What a controller restarting after the `n`th save would load (0-based).
    pub fn saved(&self, n: usize) -> BTreeMap<String, String> {
        self.0.lock().unwrap()[n].clone()
    }
    pub fn last(&self) -> BTreeMap<String, String> {
        self.0.lock().unwrap().last().cloned().unwrap_or_default()
    }
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A context whose saves go to `store`, starting from `state` (a "restarted controller").
pub fn ctx(res: &Resources, state: BTreeMap<String, String>, store: &Store) -> SignContext {
    SignContext::new(res.clone(), state, Some(Arc::new(store.clone())))
}

/// The `state.ejbca.certbridge.io/<key>` value in a state map.
pub fn st<'a>(state: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    state.get(key).map(String::as_str)
}

/// Verifies `chain_pem` (leaf first) up to `root_pem` with `openssl verify`.
pub fn openssl_verify(chain_pem: &str, root_pem: &str) {
    let status = std::process::Command::new("openssl").arg("version").output();
    assert!(
        status.is_ok(),
        "openssl is missing: run issuers/ejbca/scripts/install-tools.sh (apt-get install -y openssl)"
    );
    let dir = tempfile::tempdir().unwrap();
    let blocks = pem::parse_many(chain_pem).unwrap();
    assert!(blocks.len() >= 2, "chain has the leaf and at least one intermediate");
    let leaf = dir.path().join("leaf.pem");
    let inter = dir.path().join("inter.pem");
    let root = dir.path().join("root.pem");
    std::fs::write(&leaf, certbridge::pki::to_pem(blocks[0].contents())).unwrap();
    std::fs::write(&inter, blocks[1..].iter().map(|b| certbridge::pki::to_pem(b.contents())).collect::<String>())
        .unwrap();
    std::fs::write(&root, root_pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&inter)
        .arg(&leaf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains(": OK"), "openssl verify failed: {text}");
}

/// Captures `tracing` output of the current thread.
#[derive(Clone, Default)]
pub struct LogCapture(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogCapture {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(self.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(sub)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
