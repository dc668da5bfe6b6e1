//! Integration tests of certbridge-pkcs11 against a real SoftHSM2 token created by
//! `softhsm/setup-token.sh` (one test binary, see the team conventions).

mod cli;
mod controller;
mod faults;
mod fixture;
mod matrix;
mod removal;
mod secrets_never_leak;
mod security;
