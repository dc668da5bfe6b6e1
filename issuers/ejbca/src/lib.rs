//! # certbridge-ejbca
//!
//! A cert-manager external issuer for EJBCA over its REST API (`EjbcaIssuer` /
//! `EjbcaClusterIssuer`, group `ejbca.certbridge.io`), built on the certbridge framework:
//! [`spec`] is the issuer spec, [`client`] EJBCA's wire protocol (operations, transport, wire
//! types, errors), [`auth`] the mTLS / OAuth 2.0 credentials and token cache, `lookup` which
//! certificate found at EJBCA is a request's, [`signer`] the [`certbridge::Signer`] mapping
//! EJBCA's answers to the controller's reactions. With the `sim` feature, [`sim`] is an EJBCA REST simulator that
//! validates what it receives against EJBCA's OpenAPI spec (test equipment).

pub mod auth;
pub mod client;
mod lookup;
pub mod signer;
#[cfg(feature = "sim")]
pub mod sim;
pub mod spec;

pub use signer::EjbcaSigner;
pub use spec::{CaBundleRef, EjbcaIssuerSpec, GROUP};
