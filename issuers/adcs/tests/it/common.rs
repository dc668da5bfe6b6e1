//! Test equipment beyond the fixtures: a recording state store and the reaction helper.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use certbridge::context::StateStore;
use certbridge::{Reaction, Resources, SignContext, SignError, async_trait};

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
    pub fn last(&self) -> BTreeMap<String, String> {
        self.0.lock().unwrap().last().cloned().unwrap_or_default()
    }
}

/// A context whose saves go to `store`, starting from `state` (a "restarted controller").
pub fn ctx(res: &Resources, state: BTreeMap<String, String>, store: &Store) -> SignContext {
    SignContext::new(res.clone(), state, Some(Arc::new(store.clone())))
}

/// The controller's reaction to an error, in one place (the framework-v2 rebase changes only this).
pub fn reaction(e: &SignError) -> &'static str {
    match e.reaction {
        Reaction::Pending { .. } => "pending",
        Reaction::Permanent => "permanent",
        Reaction::IssuerNotReady => "issuer-not-ready",
        Reaction::Transient => "transient",
    }
}

/// Verifies `chain_pem` (leaf first) up to `root_pem` with `openssl verify`.
pub fn openssl_verify(chain_pem: &str, root_pem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let blocks = pem::parse_many(chain_pem).unwrap();
    assert_eq!(blocks.len(), 2, "leaf and the issuing CA");
    let write = |n: &str, b: &[pem::Pem]| {
        let p = dir.path().join(n);
        std::fs::write(&p, b.iter().map(|b| certbridge::pki::to_pem(b.contents())).collect::<String>()).unwrap();
        p
    };
    let leaf = write("leaf.pem", &blocks[..1]);
    let inter = write("inter.pem", &blocks[1..]);
    let root = dir.path().join("root.pem");
    std::fs::write(&root, root_pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&inter)
        .arg(&leaf)
        .output()
        .expect("openssl is installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains(": OK"), "openssl verify failed: {text}");
}
