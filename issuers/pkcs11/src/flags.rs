//! The controller's own command-line flags: which PKCS#11 modules issuers may name, and how many
//! sessions each token gets. They belong to whoever runs the controller, never to issuer authors.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use crate::grants::{TOKEN_POLICY_ENV, TokenPolicy};
use crate::module::{ALLOWED_MODULES_ENV, AllowedModules, DEFAULT_MODULE};
use crate::signer::{Pkcs11Signer, SESSIONS_ENV};

/// Flags of `certbridge-pkcs11 run`, `check` and `sign`.
#[derive(clap::Args, Debug)]
pub struct Flags {
    /// A PKCS#11 module issuers may name: absolute path, repeatable (the variable takes a
    /// colon-separated list). Default: SoftHSM2's `/usr/lib/softhsm/libsofthsm2.so`.
    #[arg(long = "allowed-module", value_name = "PATH", env = ALLOWED_MODULES_ENV, value_delimiter = ':')]
    pub allowed_modules: Vec<PathBuf>,
    /// PKCS#11 sessions per token. Default: the controller's `--concurrency`, so no sign waits for
    /// a session.
    #[arg(long, value_name = "N", env = SESSIONS_ENV)]
    pub sessions: Option<NonZeroUsize>,
    /// Which namespaces (and the cluster scope) may use which token and key: a YAML file,
    /// normally mounted from a ConfigMap in the controller's namespace (see `grants`). Default:
    /// cluster issuers may use any token of an allowed module, namespaced issuers none.
    #[arg(long, value_name = "FILE", env = TOKEN_POLICY_ENV)]
    pub token_policy: Option<PathBuf>,
    /// How long one piece of HSM work (a signature, proving an issuer) may take; past it the
    /// issuer is not ready (a hung module) and the request is retried later.
    #[arg(long, value_name = "DURATION", env = CALL_TIMEOUT_ENV, value_parser = humantime::parse_duration, default_value = "30s")]
    pub call_timeout: std::time::Duration,
}

/// Environment variable behind `--call-timeout`.
pub const CALL_TIMEOUT_ENV: &str = "CERTBRIDGE_PKCS11_CALL_TIMEOUT";

impl Flags {
    /// The signer these flags ask for, for a controller signing `concurrency` requests at once.
    pub fn signer(self, concurrency: usize) -> anyhow::Result<Pkcs11Signer> {
        let modules: Vec<PathBuf> = self.allowed_modules.into_iter().filter(|p| !p.as_os_str().is_empty()).collect();
        if let Some(relative) = modules.iter().find(|p| !p.is_absolute()) {
            anyhow::bail!(
                "--allowed-module {}: a module must be given by its absolute path (a relative one would depend on the controller's working directory)",
                relative.display()
            );
        }
        let allowed =
            if modules.is_empty() { AllowedModules::new([DEFAULT_MODULE]) } else { AllowedModules::new(modules) };
        if self.call_timeout.is_zero() {
            anyhow::bail!("--call-timeout 0s: every HSM call would time out; give a duration such as 30s");
        }
        let sessions = self.sessions.map_or(concurrency.max(1), NonZeroUsize::get);
        let grants = match &self.token_policy {
            Some(path) => TokenPolicy::load(path)?,
            None => TokenPolicy::default(),
        };
        Ok(Pkcs11Signer::with_config(allowed, sessions).with_token_policy(grants).with_call_timeout(self.call_timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: Flags,
    }

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|c| c.flags)
    }

    #[test]
    fn repeatable_modules_and_sessions() {
        let f = parse(&["--allowed-module", "/opt/a.so", "--allowed-module=/opt/b.so", "--sessions", "3"]).unwrap();
        assert_eq!(f.allowed_modules, [PathBuf::from("/opt/a.so"), PathBuf::from("/opt/b.so")]);
        assert_eq!(f.sessions.map(NonZeroUsize::get), Some(3));
        assert!(parse(&["--sessions", "0"]).is_err(), "zero sessions would deadlock every sign");
    }

    #[test]
    fn relative_module_is_refused_with_the_flag_named() {
        let Err(err) = parse(&["--allowed-module", "libsofthsm2.so"]).unwrap().signer(4) else {
            panic!("a relative module path was accepted")
        };
        let err = err.to_string();
        assert!(err.contains("--allowed-module libsofthsm2.so") && err.contains("absolute path"), "{err}");
    }
}
