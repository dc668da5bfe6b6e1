//! The request controllers, one generic controller for both request APIs (issuer-lib's generic
//! `RequestController`):
//!
//! - [`api`]: [`api::RequestApi`], what differs between the request APIs, implemented once per
//!   API in [`certificate_request`] (cert-manager `CertificateRequest`) and [`csr`] (Kubernetes
//!   `CertificateSigningRequest`): how the request is watched and read, which issuer it names,
//!   and its status body;
//! - [`backlog`]: the unfinished-request metrics, sampled from the controller's store;
//! - [`span`]: the reconcile span and its fields (request identity, issuer);
//! - [`controller`]: the request watch, the issuer caches whose readiness changes wake the
//!   requests waiting on them, the reconcile entry and the error policy;
//! - [`pass`]: one reconcile pass (gate → sign → write);
//! - [`revoke`]: the revoke-on-delete finalizer, before the pass.

pub(crate) mod api;
pub(crate) mod backlog;
pub(crate) mod certificate_request;
pub(crate) mod controller;
pub(crate) mod csr;
#[cfg(test)]
pub(crate) mod fixtures;
pub(crate) mod pass;
pub(crate) mod revoke;
pub(crate) mod span;
