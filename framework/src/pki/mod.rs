//! PKI helpers every adapter reuses: CSR parsing and verification, chain ordering and CA choice,
//! and building a certificate template from a request. An adapter that orders a chain or parses a
//! CSR by hand is missing something here.

mod chain;
mod csr;
mod template;

pub use chain::{Issued, to_pem};
pub use csr::{Csr, KeyKind};
pub use template::{certificate_params, random_serial, subject_public_key};
