//! The certbridge PKCS#11 issuer controller.

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(certbridge::run_with(|flags: certbridge_pkcs11::flags::Flags, concurrency| {
        flags.signer(concurrency)
    }));
    // Not `#[tokio::main]`: dropping its runtime waits for every blocking task, and a thread stuck
    // in a hung PKCS#11 module (abandoned after its --call-timeout) would keep the process from
    // ever exiting. Such a thread is left behind; the process exits anyway.
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}
