//! PKI helpers every adapter reuses: CSR parsing and verification, chain ordering and CA choice,
//! building a certificate template from a request, and reading a private key in any unencrypted
//! PEM form. An adapter that orders a chain or parses a CSR or key by hand is missing something
//! here.

mod chain;
mod csr;
mod key;
mod template;

pub use chain::{CaChain, Issued, certificates_from_pem, to_pem};
pub use csr::{Csr, CsrLimits, DirectoryName, KeyKind, OtherName};
pub use key::{KeyError, KeyForm, Pkcs8Key, key_pair_from_pem};
pub use template::{certificate_params, random_serial, subject_public_key};
