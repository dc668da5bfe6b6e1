//! The controllers: CertificateRequest and Kubernetes CSR ([`request`], one file per request
//! API), issuer readiness ([`issuer`]). Decisions are pure ([`decision`]) over one normalized
//! request view ([`view`]); Kubernetes reads and writes stay in the controller modules, status
//! writes in [`ssa`], per-request state in [`state`] (authenticated by [`state_mac`], kept fresh by
//! [`state_cache`]), CA-outage re-checks in [`outage`], watch plumbing and cache readiness in
//! [`watch`], the request watch's decoding without managedFields in [`watch_decode`].

pub(crate) mod decision;
pub(crate) mod duration;
pub(crate) mod event_sink;
pub(crate) mod issuer;
pub(crate) mod outage;
pub(crate) mod prune;
pub(crate) mod request;
pub(crate) mod shared;
pub(crate) mod ssa;
pub(crate) mod state;
pub(crate) mod state_cache;
pub(crate) mod state_mac;
pub(crate) mod view;
pub(crate) mod watch;
pub(crate) mod watch_decode;
