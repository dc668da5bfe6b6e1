//! `certbridge-pkcs11-token`: creates CA keys inside a PKCS#11 token and self-signed CA
//! certificates signed by them through PKCS#11. Run by `softhsm/setup-token.sh`; also usable
//! against a real HSM for a lab CA.
//!
//! ```text
//! certbridge-pkcs11-token init --module PATH --token-label L --pin-file F --out DIR [--kind rsa2048]...
//! ```
//! Prints one line per CA: `kind key-label key-id-hex pem-path`.

use std::path::PathBuf;
use std::process::ExitCode;

use certbridge_pkcs11::provision::{CaKind, provision};
use zeroize::Zeroizing;

const USAGE: &str = "usage: certbridge-pkcs11-token init --module PATH --token-label LABEL --pin-file FILE --out DIR [--kind rsa2048|rsa3072|rsa4096|p256|p384|ed25519]...";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certbridge-pkcs11-token: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("init") {
        anyhow::bail!("{USAGE}");
    }
    let (mut module, mut label, mut pin_file, mut out, mut kinds) = (None, None, None, None, Vec::new());
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--module" => module = Some(PathBuf::from(value()?)),
            "--token-label" => label = Some(value()?),
            "--pin-file" => pin_file = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--kind" => {
                let v = value()?;
                kinds.push(CaKind::parse(&v).ok_or_else(|| anyhow::anyhow!("unknown --kind {v:?}\n{USAGE}"))?);
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let missing = |what: &str| anyhow::anyhow!("{what} is required\n{USAGE}");
    let module = module.ok_or_else(|| missing("--module"))?;
    let label = label.ok_or_else(|| missing("--token-label"))?;
    let pin_file = pin_file.ok_or_else(|| missing("--pin-file"))?;
    let out = out.ok_or_else(|| missing("--out"))?;
    if kinds.is_empty() {
        kinds = CaKind::DEFAULT.to_vec();
    }
    let pin = Zeroizing::new(std::fs::read_to_string(&pin_file)?.trim().to_owned());
    let module = module.canonicalize()?;
    for p in provision(&module, &label, &pin, &out, &kinds)? {
        println!(
            "{} {} {} {}{}",
            p.kind.name(),
            p.key_label,
            p.key_id_hex,
            p.pem_path.display(),
            match (p.key_created, p.cert_created) {
                (true, _) => " (new key)",
                (false, true) => " (new certificate)",
                _ => "",
            }
        );
    }
    Ok(())
}
