//! Shared test equipment beyond the fixtures (`fixture`, shared with the benchmark): a recording
//! state store, a log capture, and openssl verification.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use certbridge::context::StateStore;
use certbridge::{Resources, SignContext, SignError, async_trait};

pub use crate::fixture::*;

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
