//! `certbridge-adcs`: the AD CS issuer controller (`run`, `check -f`, `sign -f`, `crds`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    certbridge::run(certbridge_adcs::AdcsSigner::new).await
}
