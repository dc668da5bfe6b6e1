//! `ejbca-sim`: runs the EJBCA REST simulator until interrupted, for manual tests with
//! `certbridge-ejbca check -f` / `sign -f` or curl.
//!
//! `ejbca-sim [ADDR] [OUT_DIR]` (defaults `127.0.0.1:0` and `./ejbca-sim`) writes `root.pem`
//! (trust anchor), `client.crt` / `client.key` (an mTLS identity EJBCA accepts) and `sim.json`
//! (host, token URL, OAuth client) into OUT_DIR.

use std::process::ExitCode;

use certbridge_ejbca::sim::{EjbcaSim, SimOptions};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let out = std::path::PathBuf::from(args.next().unwrap_or_else(|| "ejbca-sim".into()));
    let addr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ejbca-sim: {addr:?} is not an address like 127.0.0.1:8443: {e}");
            return ExitCode::from(2);
        }
    };
    let sim = match EjbcaSim::start(SimOptions { addr, ..SimOptions::default() }).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ejbca-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (cert, key) = sim.client_identity();
    let (id, secret) = sim.oauth_client();
    let info = serde_json::json!({ "hostname": sim.host(), "tokenUrl": sim.token_url(), "clientId": id, "clientSecret": secret });
    let written = std::fs::create_dir_all(&out)
        .and_then(|_| std::fs::write(out.join("root.pem"), sim.root_pem()))
        .and_then(|_| std::fs::write(out.join("client.crt"), cert))
        .and_then(|_| std::fs::write(out.join("client.key"), key))
        .and_then(|_| std::fs::write(out.join("sim.json"), info.to_string()));
    if let Err(e) = written {
        eprintln!("ejbca-sim: writing {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!("{info}");
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
