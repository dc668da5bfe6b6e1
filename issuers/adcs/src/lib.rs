//! # certbridge-adcs
//!
//! A cert-manager external issuer for Microsoft Active Directory Certificate Services over certsrv
//! web enrollment (`AdcsIssuer` / `AdcsClusterIssuer`, group `adcs.certbridge.io`), built on the
//! certbridge framework: [`spec`] is the issuer spec, [`pages`] reads certsrv's HTML answers,
//! [`client`] speaks HTTP with connection-bound NTLM (channel binding), Kerberos, Basic or a TLS client
//! certificate, and [`signer`] maps the CA's answers to the controller's reactions and keeps the
//! request ID across restarts. The certsrv simulator used by the tests is `sim/certsrv_sim.py`
//! (pyspnego and MIT krb5 as independent NTLM and Kerberos acceptors).

pub mod client;
pub mod kerberos;
pub mod keytab;
pub mod pages;
pub mod signer;
pub mod spec;

pub use signer::AdcsSigner;
pub use spec::{AdcsIssuerSpec, GROUP};
