//! The certbridge PKCS#11 issuer controller.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    certbridge::run(certbridge_pkcs11::Pkcs11Signer::new()).await
}
