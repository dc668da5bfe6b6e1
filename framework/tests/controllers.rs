//! The real controllers (`certbridge::runtime::start`) against the embedded API server, driven by
//! a scriptable test signer. One test binary; one API server per test.

#[path = "controllers/support.rs"]
mod support;

#[path = "controllers/certificate_requests.rs"]
mod certificate_requests;
#[path = "controllers/cluster_only.rs"]
mod cluster_only;
#[path = "controllers/csr_contents.rs"]
mod csr_contents;
#[path = "controllers/csrs.rs"]
mod csrs;
#[path = "controllers/exactly_once.rs"]
mod exactly_once;
#[path = "controllers/issuers.rs"]
mod issuers;
#[path = "controllers/revoke.rs"]
mod revoke;
#[path = "controllers/runtime.rs"]
mod runtime;
// Observability (issue 15).
#[path = "controllers/logs.rs"]
mod logs;
#[path = "controllers/metrics.rs"]
mod metrics;
#[path = "controllers/subscriber.rs"]
mod subscriber;
#[path = "controllers/traces.rs"]
mod traces;
