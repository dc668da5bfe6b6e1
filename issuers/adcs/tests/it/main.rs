//! The one integration-test binary of certbridge-adcs: the signer against the certsrv simulator
//! (`adapter`), the real controllers on kube-sim against it (`controller`) and its CA fault matrix
//! through the testkit's fault proxy (`matrix`), and the controller binary under the chaos
//! harness's kills (`chaos`). Needs the simulator's Python environment
//! (`issuers/adcs/scripts/install-sim.sh`) and openssl. `window`, `sspi_cbt`, `chaos_soak` and the
//! full `adcs_fault_matrix` are ignored measurements/diagnoses run by hand.

mod adapter;
mod chaos;
mod common;
mod controller;
mod fixture;
mod matrix;
mod secrets_never_leak;
mod sspi_cbt;
mod window;
