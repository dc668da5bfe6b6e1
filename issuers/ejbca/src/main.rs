//! `certbridge-ejbca`: the EJBCA issuer controller (`run`, `check -f`, `sign -f`, `crds`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    certbridge::run(certbridge_ejbca::EjbcaSigner::new).await
}
