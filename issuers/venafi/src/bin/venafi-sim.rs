//! `venafi-sim`: runs the TPP + TLS Protect Cloud simulator until interrupted, for manual tests
//! with `certbridge-venafi check -f` / `sign -f` or curl.
//!
//! `venafi-sim [ADDR] [OUT_DIR]` (defaults `127.0.0.1:0` and `./venafi-sim`) writes `root.pem`
//! (trust anchor) and `sim.json` (URLs, credentials, zones) into OUT_DIR.

use std::process::ExitCode;

use certbridge_venafi::sim::{SimOptions, VenafiSim};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let out = std::path::PathBuf::from(args.next().unwrap_or_else(|| "venafi-sim".into()));
    let addr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("venafi-sim: {addr:?} is not an address like 127.0.0.1:8443: {e}");
            return ExitCode::from(2);
        }
    };
    let sim = match VenafiSim::start(SimOptions { addr, ..SimOptions::default() }).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("venafi-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    let o = sim.options();
    let info = serde_json::json!({
        "tppUrl": sim.tpp_url(), "cloudUrl": sim.cloud_url(), "username": o.username, "password": o.password,
        "zones": o.zones.iter().map(|(z, _)| z).collect::<Vec<_>>(), "apiKey": o.api_key, "tenant": o.tenant,
        "jwt": o.jwt, "cloudZone": "Kubernetes\\Default",
    });
    let written = std::fs::create_dir_all(&out)
        .and_then(|_| std::fs::write(out.join("root.pem"), sim.root_pem()))
        .and_then(|_| std::fs::write(out.join("sim.json"), info.to_string()));
    if let Err(e) = written {
        eprintln!("venafi-sim: writing {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!("{info}");
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
