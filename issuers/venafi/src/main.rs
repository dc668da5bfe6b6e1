//! `certbridge-venafi`: the Venafi issuer controller (`run`, `check -f`, `sign -f`, `crds`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    certbridge::run(certbridge_venafi::VenafiSigner::new).await
}
