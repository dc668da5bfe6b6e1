//! The [`Signer`] for Vault / OpenBao: cert-manager's sign request, the chain ordered by the
//! framework, and Vault's answers mapped onto the error taxonomy:
//!
//! | Vault answer | on sign | on check |
//! |---|---|---|
//! | 403 on sign | forget the token, obtain a new one, retry once; still 403 → `Permanent` | – |
//! | other 4xx on sign (role refuses a name, TTL over max, unknown role) | `Permanent` with Vault's `errors` | – |
//! | 429, 5xx, no answer, an unreadable body | `Transient` | `IssuerNotReady` |
//! | 200 with a leaf for another key than the CSR's | `Transient` (signed again) | – |
//! | login refused | `IssuerNotReady` | `IssuerNotReady` |
//! | `sys/health` 501 / 503 / other | – | `IssuerNotReady` naming the state |

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use certbridge::{Issued, Issuer, IssuerCache, Resources, SignContext, SignError, SignRequest, Signer, async_trait};

use crate::auth::load_tls;
use crate::client::{Health, VaultClient, VaultError};
use crate::flags::ControllerPolicy;
use crate::session::Session;
use crate::spec::{SignPath, VaultSpec};

/// Signs through a Vault or OpenBao PKI secrets engine. Keeps one client and one cached token
/// per issuer (per spec generation).
pub struct VaultSigner {
    sessions: IssuerCache<Session>,
    policy: ControllerPolicy,
}

impl Default for VaultSigner {
    fn default() -> Self {
        Self::new()
    }
}

impl VaultSigner {
    /// A signer with no cached sessions, under the strict controller policy (https:// servers
    /// only, generated token audiences only; see [`crate::flags`]).
    pub fn new() -> VaultSigner {
        VaultSigner { sessions: IssuerCache::new(), policy: ControllerPolicy::default() }
    }

    /// The same signer under another controller policy.
    pub fn with_policy(self, policy: ControllerPolicy) -> VaultSigner {
        VaultSigner { policy, ..self }
    }

    /// For tests and development against a dev server on plain HTTP ([`ControllerPolicy::dev`]).
    pub fn dev() -> VaultSigner {
        VaultSigner::new().with_policy(ControllerPolicy::dev())
    }

    /// The issuer's session. `refresh` re-reads the TLS Secrets and replaces the session (and so
    /// its token) when they changed; otherwise a cached session is used as is.
    async fn session(
        &self,
        issuer: &Issuer<VaultSpec>,
        resources: &Resources,
        refresh: bool,
    ) -> Result<Arc<Session>, SignError> {
        // Before any Secret is read or any byte sent: the issuer author may not choose where its
        // credentials go in clear, nor what a minted token is valid for.
        self.policy.check(&issuer.spec).map_err(SignError::issuer_not_ready)?;
        let cached = self.sessions.latest(issuer);
        if let Some(s) = &cached
            && !refresh
        {
            return Ok(s.clone());
        }
        let material = load_tls(issuer, resources).await?;
        let fingerprint = material.fingerprint();
        if let Some(s) = cached
            && s.tls_fingerprint == fingerprint
        {
            return Ok(s);
        }
        let client = VaultClient::new(&issuer.spec.server, issuer.spec.namespace.as_deref(), &material)
            .map_err(|e| SignError::issuer_not_ready(format!("connecting to Vault: {e}")))?;
        // Replaces the session of an earlier generation; the framework drops it when the issuer goes.
        Ok(self.sessions.insert(issuer, resources, Session::new(client, fingerprint)))
    }
}

#[async_trait]
impl Signer for VaultSigner {
    type Spec = VaultSpec;

    async fn sign(
        &self,
        request: &SignRequest,
        issuer: &Issuer<VaultSpec>,
        ctx: &mut SignContext,
    ) -> Result<Issued, SignError> {
        let path = SignPath::parse(&issuer.spec.path).map_err(SignError::permanent)?.api_path();
        if request.is_ca {
            // Vault's sign endpoints never issue CA certificates; cert-manager silently returns a
            // leaf for isCA requests, which then fails wherever it is used as a CA.
            return Err(SignError::permanent(format!(
                "the request has isCA=true, but Vault's {path} endpoint only issues leaf certificates: set isCA=false, or issue CA certificates with Vault's root/sign-intermediate outside cert-manager"
            )));
        }
        let resources = ctx.resources().clone();
        let session = self.session(issuer, &resources, false).await?;
        let body = sign_body(request);
        let token = session.token(issuer, &resources).await?;
        let data = match session.client.sign(&path, &token.secret, &body).await {
            Ok(data) => data,
            Err(e) if e.is_permission_denied() => {
                tracing::warn!(
                    issuer = %issuer.display_name(),
                    error = %certbridge::redact(&e.to_string(), &[&token.secret]),
                    "Vault denied the cached token; obtaining a new one and retrying once"
                );
                session.invalidate(token.id).await;
                let token = session.token(issuer, &resources).await?;
                session.client.sign(&path, &token.secret, &body).await.map_err(|e| {
                    let mut err = sign_error(&session.client, &path, &e, &token.secret);
                    if e.is_permission_denied() {
                        err = err.context(
                            "denied again with a fresh token (the token's policies must allow \"update\" on this path)",
                        );
                    }
                    err
                })?
            }
            Err(e) => return Err(sign_error(&session.client, &path, &e, &token.secret)),
        };
        let issued = session.chains.issued(&data).map_err(|e| {
            SignError::permanent(format!("Vault at {} returned an unusable chain: {e}", session.client.server()))
        })?;
        // Vault signs the CSR it is given, so a leaf for another key is a fault on the way (a
        // proxy, a cache, a mixed-up answer), not the request's: retry, and Vault signs again.
        // The framework would fail the request for good on it.
        if issued.leaf_public_key_der().ok().as_deref() != Some(request.csr.public_key_der.as_slice()) {
            return Err(SignError::transient(format!(
                "Vault at {} answered {path} with a certificate for another public key than the CSR's; retrying",
                session.client.server()
            )));
        }
        for warning in &data.warnings {
            tracing::info!(issuer = %issuer.display_name(), warning = %warning, "Vault signed with a warning");
        }
        tracing::debug!(issuer = %issuer.display_name(), serial = data.serial_number.as_deref().unwrap_or(""), "Vault signed the request");
        Ok(issued)
    }

    async fn check(&self, issuer: &Issuer<VaultSpec>, resources: &Resources) -> Result<certbridge::Ready, SignError> {
        let session = self.session(issuer, resources, true).await?;
        let server = session.client.server().to_owned();
        match session.client.health().await {
            Ok(Health::Ready(_)) => {}
            Ok(Health::NotInitialized) => {
                return Err(SignError::issuer_not_ready(format!(
                    "Vault at {server} is not initialized (sys/health: 501): initialize and unseal it"
                )));
            }
            Ok(Health::Sealed) => {
                return Err(SignError::issuer_not_ready(format!(
                    "Vault at {server} is sealed (sys/health: 503): unseal it"
                )));
            }
            Ok(Health::Other(code)) => {
                return Err(SignError::issuer_not_ready(format!(
                    "Vault at {server} is not healthy (sys/health: HTTP {code})"
                )));
            }
            Err(e) => {
                return Err(SignError::issuer_not_ready(format!("Vault at {server} is unreachable: {e}")));
            }
        }
        session.verify(issuer, resources).await?;
        // The spec is validated before `check`, so the path parses; the fallback is only prose.
        let target = match SignPath::parse(&issuer.spec.path) {
            Ok(SignPath { mount, verb, role: Some(role) }) => format!("PKI mount {mount:?} ({verb}, role {role:?})"),
            Ok(SignPath { mount, verb, role: None }) => format!("PKI mount {mount:?} ({verb})"),
            Err(_) => format!("path {:?}", issuer.spec.path),
        };
        Ok(certbridge::Ready::message(format!("signing with {target} at {server}")))
    }
}

/// cert-manager's sign body: strings only, the CSR's names as comma-separated lists, the
/// duration as Go prints it, and the CN kept out of the SANs.
pub(crate) fn sign_body(request: &SignRequest) -> Value {
    let csr = &request.csr;
    let ips: Vec<String> = csr.ip_addresses.iter().map(ToString::to_string).collect();
    json!({
        "common_name": csr.common_name.as_deref().unwrap_or(""),
        "alt_names": csr.dns_names.join(","),
        "ip_sans": ips.join(","),
        "uri_sans": csr.uris.join(","),
        "ttl": go_duration(request.duration),
        "csr": request.csr_pem,
        "exclude_cn_from_sans": "true",
    })
}

/// Go's `time.Duration.String()` for whole and fractional seconds (`2160h0m0s`, `1m30s`, `0.5s`).
fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 && nanos == 0 {
        return "0s".into();
    }
    let frac = if nanos == 0 { String::new() } else { format!(".{nanos:09}").trim_end_matches('0').to_owned() };
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}{frac}s")
    } else if m > 0 {
        format!("{m}m{s}{frac}s")
    } else {
        format!("{s}{frac}s")
    }
}

fn sign_error(client: &VaultClient, path: &str, e: &VaultError, token: &str) -> SignError {
    let msg = format!("Vault at {} refused {path}: {}", client.server(), certbridge::redact(&e.to_string(), &[token]));
    if e.is_transient() { SignError::transient(msg) } else { SignError::permanent(msg) }
}

#[cfg(test)]
mod tests {
    use certbridge::Reaction;

    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_secs(90 * 24 * 3600)), "2160h0m0s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn errors_map_onto_the_taxonomy() {
        let c = VaultClient::new("http://127.0.0.1:1", None, &Default::default()).unwrap();
        let refuse = VaultError::Status { status: 400, errors: vec!["common name x not allowed".into()] };
        let e = sign_error(&c, "pki/sign/web", &refuse, "tok");
        assert!(e.reaction == Reaction::Permanent && e.message.ends_with("HTTP 400: common name x not allowed"), "{e}");
        let busy = VaultError::Status { status: 429, errors: vec![] };
        assert!(sign_error(&c, "p", &busy, "t").reaction == Reaction::Transient);
        let down = VaultError::Transport("connection refused".into());
        assert!(sign_error(&c, "p", &down, "t").reaction == Reaction::Transient);
        let echo = VaultError::Status { status: 400, errors: vec!["bad token hvs.SECRET".into()] };
        assert!(!sign_error(&c, "p", &echo, "hvs.SECRET").to_string().contains("hvs.SECRET"));
    }
}
