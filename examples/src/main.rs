//! The `certbridge-example-ca` controller binary: the whole certbridge command line for LocalCA.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    certbridge::run(certbridge_example_ca::LocalCaSigner::default).await
}
