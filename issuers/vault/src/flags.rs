//! The controller's own flags for Vault issuers: what issuer authors (namespace tenants) may not
//! decide for themselves.
//!
//! * Service-account tokens are always minted for the generated audience `vault://<ns>/<issuer>`
//!   (`vault://<clusterissuer>`), so a token obtained for one issuer is useless at another's
//!   Vault role and at the API server. Extra audiences in `spec.auth.kubernetes.serviceAccountRef.audiences`
//!   are accepted only when listed with `--allowed-token-audience`.
//! * Every auth method sends a credential (a token, an AppRole secret ID, a JWT, a client key's
//!   proof), so `spec.server` must be `https://`; `--allow-insecure-http` is for development
//!   against a dev server only.

/// Environment variable behind `--allowed-token-audience` (comma-separated).
pub const ALLOWED_AUDIENCES_ENV: &str = "CERTBRIDGE_VAULT_ALLOWED_TOKEN_AUDIENCES";
/// Environment variable behind `--allow-insecure-http`.
pub const ALLOW_INSECURE_HTTP_ENV: &str = "CERTBRIDGE_VAULT_ALLOW_INSECURE_HTTP";

/// What the controller's operator allows Vault issuers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerPolicy {
    /// Audiences an issuer may add to its service-account tokens besides the generated one.
    pub allowed_audiences: Vec<String>,
    /// Whether credentials may be sent to `http://` servers (development only).
    pub allow_insecure_http: bool,
}

impl ControllerPolicy {
    /// For tests and development against a dev server on plain HTTP.
    pub fn dev() -> ControllerPolicy {
        ControllerPolicy { allow_insecure_http: true, ..Default::default() }
    }

    /// Checks an issuer's spec against the policy; the message names the field and the flag.
    pub fn check(&self, spec: &crate::spec::VaultSpec) -> Result<(), String> {
        let insecure = spec.server.trim().get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        if insecure && !self.allow_insecure_http {
            return Err(format!(
                "spec.server {:?} is not https://: every Vault auth method sends a credential, which must not cross the network in clear; use https:// (the controller flag --allow-insecure-http exists for development only)",
                spec.server
            ));
        }
        let audiences =
            spec.auth.kubernetes.as_ref().and_then(|k| k.service_account_ref.as_ref()).map(|s| s.audiences.as_slice());
        for (i, a) in audiences.unwrap_or_default().iter().enumerate() {
            if !self.allowed_audiences.contains(a) {
                return Err(format!(
                    "spec.auth.kubernetes.serviceAccountRef.audiences[{i}] {a:?} is not allowed: tokens are minted for the generated vault://… audience only, and extra audiences need the controller flag --allowed-token-audience {a:?} (remove it from the issuer or ask the controller's operator)"
                ));
            }
        }
        Ok(())
    }
}

/// Flags of `certbridge-vault run`, `check` and `sign`.
#[derive(clap::Args, Debug)]
pub struct Flags {
    /// An audience issuers may add to their service-account tokens besides the generated
    /// `vault://…` one (repeatable).
    #[arg(long = "allowed-token-audience", value_name = "AUDIENCE", env = ALLOWED_AUDIENCES_ENV, value_delimiter = ',')]
    pub allowed_audiences: Vec<String>,
    /// Allow `http://` Vault servers (credentials then cross the network in clear): development only.
    #[arg(long, env = ALLOW_INSECURE_HTTP_ENV)]
    pub allow_insecure_http: bool,
}

impl Flags {
    /// The signer these flags ask for.
    pub fn signer(self) -> crate::VaultSigner {
        let allowed_audiences = self.allowed_audiences.into_iter().filter(|a| !a.trim().is_empty()).collect();
        crate::VaultSigner::new()
            .with_policy(ControllerPolicy { allowed_audiences, allow_insecure_http: self.allow_insecure_http })
    }
}
