//! # certbridge-pkcs11
//!
//! A cert-manager issuer whose CA key never leaves a PKCS#11 token (an HSM, a smart card, SoftHSM).
//! Kinds `Pkcs11Issuer` / `Pkcs11ClusterIssuer` in group `pkcs11.certbridge.io`.
//!
//! - [`spec`]: the issuer spec and its validation.
//! - [`policy`]: what a request may ask for.
//! - [`flags`]: the controller's flags (module allow-list, sessions per token).
//! - [`grants`]: the controller's token policy (which scopes may use which token and key).
//! - [`module`]: the module allow-list and the process-wide PKCS#11 contexts.
//! - [`token`]: a token's session pool, login, and fault recovery.
//! - [`key`]: the CA key as an rcgen signing key (mechanisms, ECDSA encoding).
//! - [`ca`]: a CA prepared once (chain, key proof) and signing requests.
//! - [`signer`]: the certbridge `Signer`.
//! - [`provision`]: creating CA keys and self-signed CA certificates in a token (dev/test tool).

pub mod ca;
pub mod error;
pub mod flags;
pub mod grants;
pub mod key;
pub mod module;
pub mod policy;
pub mod provision;
pub mod signer;
pub mod spec;
pub mod token;

pub use signer::Pkcs11Signer;
pub use spec::Pkcs11IssuerSpec;
