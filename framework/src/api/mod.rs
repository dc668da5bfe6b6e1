//! Kubernetes API types the framework reads and writes that neither k8s-openapi nor the adapter
//! provides: cert-manager's `CertificateRequest` (cert-manager.io/v1).
//!
//! Only the Rust shape lives here; the CRD itself is cert-manager's own (the embedded API server
//! installs the real one), so it is never generated from these types.

mod certificate_request;

pub use certificate_request::{
    CertificateRequest, CertificateRequestCondition, CertificateRequestSpec, CertificateRequestStatus, IssuerRef,
};
