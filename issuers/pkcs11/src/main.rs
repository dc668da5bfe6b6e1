//! The certbridge PKCS#11 issuer controller.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    certbridge::run_with(|flags: certbridge_pkcs11::flags::Flags, concurrency| flags.signer(concurrency)).await
}
