//! The `certbridge-vault` controller binary.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    certbridge::run(certbridge_vault::VaultSigner::new).await
}
