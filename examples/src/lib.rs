//! An example certbridge issuer, `LocalCAIssuer` / `LocalCAClusterIssuer`: signs requests with a CA
//! certificate and key kept in a `kubernetes.io/tls` Secret, like cert-manager's CA issuer.
//!
//! It is the smallest complete adapter: [`spec`] declares the issuer spec, [`signer`] implements
//! [`certbridge::Signer`]; the framework does everything else. Copy it to start your own issuer.

pub mod signer;
pub mod spec;

pub use signer::LocalCaSigner;
pub use spec::LocalCaSpec;
