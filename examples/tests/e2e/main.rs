//! End-to-end tests of the LocalCA example issuer. They double as the framework's end-to-end tests:
//! `offline` drives the signer the way `check -f` / `sign -f` do, `cluster` runs the real controllers
//! in-process against kube-sim, `cli` runs the built binary (`crds`, `check -f`, `sign -f`, `run`),
//! `failover` SIGKILLs the leader of two `run --leader-elect` replicas under load.

mod cli;
mod cluster;
mod failover;
mod offline;
mod secrets_never_leak;
mod support;
