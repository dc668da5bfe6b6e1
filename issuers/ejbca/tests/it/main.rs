//! The one integration-test binary of certbridge-ejbca: the signer against the EJBCA simulator
//! (`adapter`) and the real controllers on kube-sim against it (`controller`).
//! Needs openssl (`scripts/install-tools.sh`).

mod adapter;
mod chaos;
mod common;
mod controller;
mod exactly_once;
mod exhaustion;
mod fixture;
mod matrix;
mod secrets_never_leak;
mod security;
