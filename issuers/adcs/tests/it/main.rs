//! The one integration-test binary of certbridge-adcs: the signer against the certsrv simulator
//! (`adapter`) and the real controllers on kube-sim against it (`controller`). Needs the
//! simulator's Python environment (`issuers/adcs/scripts/install-sim.sh`) and openssl. `window` and
//! `sspi_cbt` are ignored measurements/diagnoses run by hand.

mod adapter;
mod common;
mod controller;
mod fixture;
mod secrets_never_leak;
mod sspi_cbt;
mod window;
