//! # certbridge-venafi
//!
//! A cert-manager external issuer for Venafi (CyberArk Certificate Manager): Trust Protection
//! Platform and TLS Protect Cloud (`VenafiIssuer` / `VenafiClusterIssuer`, group
//! `venafi.certbridge.io`), built on the certbridge framework. [`spec`] is the issuer spec
//! (cert-manager's `spec.venafi` field for field, plus additions), [`client`] TPP's WebSDK and
//! its token lifecycle, [`cloud`] TLS Protect Cloud, [`fields`] custom fields, [`http`] the shared
//! HTTP plumbing, [`signer`] the [`certbridge::Signer`] and [`revoke`] revocation on delete. With the `sim` feature, [`sim`] is a
//! TPP + Cloud simulator (test equipment).

pub mod client;
pub mod cloud;
pub mod fields;
pub mod http;
pub mod revoke;
pub mod signer;
#[cfg(feature = "sim")]
pub mod sim;
pub mod spec;

pub use signer::VenafiSigner;
pub use spec::{GROUP, VenafiIssuerSpec};
