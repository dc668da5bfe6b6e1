//! # certbridge-vault
//!
//! A cert-manager external issuer for HashiCorp Vault and OpenBao PKI, on the certbridge
//! framework: kinds `VaultIssuer` / `VaultClusterIssuer` in `vault.certbridge.io`, with
//! cert-manager's `spec.vault` fields ([`VaultSpec`]) and its wire behaviour, plus a cached,
//! renewed Vault token instead of a login per request.

mod auth;
mod chain;
mod client;
pub mod flags;
mod session;
mod signer;
pub mod spec;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;

pub use signer::VaultSigner;
pub use spec::VaultSpec;
