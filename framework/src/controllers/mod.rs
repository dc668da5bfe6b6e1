//! The controllers: CertificateRequest, Kubernetes CSR and issuer readiness. Decisions are pure
//! ([`decision`]) over one normalized request view ([`view`]); Kubernetes reads and writes stay in
//! the controller modules and [`crate::ssa`].

// Parts are wired up step by step; remove once the controllers use everything.
#![allow(dead_code)]

pub(crate) mod decision;
pub(crate) mod duration;
pub(crate) mod view;
