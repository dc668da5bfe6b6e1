//! The one integration-test binary of certbridge-ejbca: the signer against the EJBCA simulator.
//! Needs openssl (`scripts/install-tools.sh`).

mod adapter;
mod common;
