//! kube-sim's integration tests, one binary: each module was its own test binary, and every binary
//! links the whole dependency tree (about 45 MB each in a debug build), so one binary keeps CI's
//! disk use and link time down.

mod common;
mod tls;

mod binary;
mod csr;
mod events_kubectl;
mod fault_proxy;
mod faults;
mod kube_client;
mod kubectl;
mod leases_and_events;
mod rbac;
mod tokens;
