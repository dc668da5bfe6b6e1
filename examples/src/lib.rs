//! An example issuer, `LocalCAIssuer`/`LocalCAClusterIssuer`, signing with a CA kept in a Secret like
//! cert-manager's CA issuer: the smallest complete adapter ([`spec`] declares the issuer spec,
//! [`signer`] implements [`certbridge::Signer`]). Copy it to start your own issuer.

pub mod signer;
pub mod spec;

pub use signer::LocalCaSigner;
pub use spec::LocalCaSpec;
