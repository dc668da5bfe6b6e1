//! The controllers: CertificateRequest, Kubernetes CSR and issuer readiness. Decisions are pure
//! ([`decision`]) over one normalized request view ([`view`]); Kubernetes reads and writes stay in
//! the controller modules and [`crate::ssa`].

pub(crate) mod certificate_request;
pub(crate) mod csr;
pub(crate) mod decision;
pub(crate) mod duration;
pub(crate) mod issuer;
pub(crate) mod prune;
pub(crate) mod request_controller;
pub(crate) mod requests;
pub(crate) mod shared;
pub(crate) mod view;
pub(crate) mod watch;
