//! The command line every certbridge controller binary shares: `run`, `check -f`, `sign -f`, `crds`.

use crate::signer::Signer;

/// Runs the adapter's controller binary: parses the command line and dispatches.
pub async fn run<S: Signer>(signer: S) -> std::process::ExitCode {
    let _ = signer;
    todo!("being built: the shared command line")
}
