//! The `certbridge-vault` controller binary.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    certbridge::run_with(|flags: certbridge_vault::flags::Flags, _| Ok(flags.signer())).await
}
