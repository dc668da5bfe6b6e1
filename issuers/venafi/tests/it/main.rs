//! The one integration-test binary of certbridge-venafi: the signer against the TPP + Cloud
//! simulator (`adapter`), the real controllers on kube-sim against it (`controller`), the chaos
//! harness on the controller binary (`chaos`), the binary's offline commands (`cli`), and
//! revocation on delete (`revoke`).

mod adapter;
mod chaos;
mod cli;
mod common;
mod controller;
mod fixture;
mod matrix;
mod revoke;
mod secrets_never_leak;
