//! # certbridge
//!
//! A framework for writing cert-manager *external issuers*. An adapter implements one trait,
//! [`Signer`], with two methods — [`Signer::sign`] turns a normalized [`SignRequest`] into an
//! [`Issued`] chain, [`Signer::check`] tells whether an issuer is usable — and declares its issuer
//! spec type with [`IssuerSpec`]. Everything else is the framework's: the CertificateRequest and
//! Kubernetes CertificateSigningRequest controllers, issuer readiness, retries, events, metrics,
//! probes, leader election and the command line (`run`, `check -f`, `sign -f`, `crds`).
//!
//! Errors are the control surface: what a [`SignError`] variant is named is what the controller
//! does with it (see [`error`]).
//!
//! ```ignore
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     certbridge::run(MySigner::default).await
//! }
//! ```

pub mod api;
pub mod cache;
pub mod cli;
pub mod context;
pub(crate) mod controllers;
pub mod crd;
pub mod error;
pub mod http;
pub mod issuer;
pub(crate) mod metrics;
pub mod metrics_auth;
pub mod overrides;
pub mod pki;
pub mod redact;
pub mod request;
pub mod resources;
pub mod runtime;
pub mod selector;
pub mod signer;
pub mod state_auth;
pub mod telemetry;
// Also built for the crate's own unit tests, which use its test CA; it needs no dev-dependency.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use cache::IssuerCache;
pub use cli::{run, run_with};
pub use context::SignContext;
pub use error::{Reaction, RequestCondition, SignError};
pub use issuer::{Issuer, IssuerScope, IssuerSpec};
pub use pki::{CaChain, Csr, CsrLimits, Issued, KeyKind, OtherName};
pub use redact::redact;
pub use request::{ExtKeyUsage, KeyUsage, RequestKind, RequestObject, Requester, SignRequest};
pub use resources::Resources;
pub use selector::{CaBundle, ConfigMapKeySelector, SecretKeySelector, SecretRef};
pub use signer::{Ready, Signer};

/// Re-exported so adapters derive [`IssuerSpec`] types without naming the crate versions.
pub use async_trait::async_trait;
/// The rcgen that [`pki::certificate_params`] returns, so an adapter cannot pin a different one.
pub use rcgen;
pub use schemars;
