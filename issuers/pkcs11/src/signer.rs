//! The certbridge `Signer` for PKCS#11: reads the PIN and chain through `Resources`, keeps one
//! prepared CA per issuer version in an [`IssuerCache`], and runs HSM work on blocking threads.

use std::sync::Arc;

use certbridge::{Issued, Issuer, IssuerCache, Resources, SignContext, SignError, SignRequest, Signer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::ca::{Inputs, PreparedCa, prepare};
use crate::grants::{TokenPolicy, capped};
use crate::module::{AllowedModules, DEFAULT_CALL_TIMEOUT, DeadlineError, with_deadline};
use crate::spec::Pkcs11IssuerSpec;

/// Environment variable behind `--sessions`, the session pool size per token (see [`crate::flags`]).
pub const SESSIONS_ENV: &str = "CERTBRIDGE_PKCS11_SESSIONS";

/// Signs with CA keys held in PKCS#11 tokens.
pub struct Pkcs11Signer {
    allowed: AllowedModules,
    grants: TokenPolicy,
    max_sessions: usize,
    /// The deadline of one piece of HSM work (see [`with_deadline`]).
    call_timeout: std::time::Duration,
    prepared: IssuerCache<Cached>,
}

struct Cached {
    inputs: [u8; 32],
    ca: Arc<PreparedCa>,
}

impl Pkcs11Signer {
    /// A signer with an explicit allow-list and session pool size (the controller builds it from
    /// its flags, [`crate::flags::Flags::signer`]), under the default token policy: cluster
    /// issuers only (see [`crate::grants`]).
    pub fn with_config(allowed: AllowedModules, max_sessions: usize) -> Self {
        Pkcs11Signer {
            allowed,
            grants: TokenPolicy::default(),
            max_sessions,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            prepared: IssuerCache::new(),
        }
    }

    /// The same signer with another deadline for each piece of HSM work: past it the issuer is
    /// not ready (a hung module), and the request is retried once the issuer is ready again.
    pub fn with_call_timeout(self, call_timeout: std::time::Duration) -> Self {
        Pkcs11Signer { call_timeout, ..self }
    }

    /// The same signer under another token policy.
    pub fn with_token_policy(self, grants: TokenPolicy) -> Self {
        Pkcs11Signer { grants, ..self }
    }

    /// The prepared CA for `issuer`, preparing it if the issuer or its inputs changed. `fresh`
    /// forces a new preparation (what `check` does: it must prove the issuer can sign *now*).
    pub async fn prepared(
        &self,
        issuer: &Issuer<Pkcs11IssuerSpec>,
        resources: &Resources,
        fresh: bool,
    ) -> Result<Arc<PreparedCa>, PrepareFailure> {
        // Before the PIN Secret is read and before any PKCS#11 call: a tenant learns nothing about
        // tokens it was not granted.
        let caps = self.grants.authorize(issuer).map_err(|m| PrepareFailure(crate::ca::PrepareError::NotReady(m)))?;
        let narrowed = capped(&issuer.spec, &caps);
        let spec = &narrowed;
        let pin = resources.string(&spec.pin_secret_ref).await.map_err(PrepareFailure::resource)?;
        // caChain, or the deprecated caChainRef converted to it (validated before check and sign).
        let (bundle, field) = spec.chain_source().map_err(|m| PrepareFailure(crate::ca::PrepareError::Permanent(m)))?;
        let chain = resources.ca_bundle(&bundle).await.map_err(PrepareFailure::resource)?;
        let ns = resources.namespace();
        let chain_place = match (&bundle.secret_ref, &bundle.config_map_ref) {
            (Some(s), _) => format!("Secret \"{ns}/{}\" key \"{}\" ({field})", s.name, s.key),
            (None, Some(c)) => format!("ConfigMap \"{ns}/{}\" key \"{}\" ({field})", c.name, c.key),
            (None, None) => format!("{field}.pem"),
        };
        let pin_place = format!(
            "Secret \"{ns}/{}\" key \"{}\" (spec.pinSecretRef)",
            spec.pin_secret_ref.name, spec.pin_secret_ref.key
        );
        let fingerprint: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(crate::token::pin_fingerprint(&pin));
            for der in &chain {
                h.update(der);
            }
            h.update(serde_json::to_vec(spec).unwrap_or_default());
            h.finalize().into()
        };
        if !fresh
            && let Some(c) = self.prepared.get(issuer, resources)
            && c.inputs == fingerprint
        {
            return Ok(c.ca.clone());
        }
        if field == "spec.caChainRef" {
            // Once per preparation, not per request.
            tracing::warn!("spec.caChainRef is deprecated: move it to spec.caChain (secretRef or configMapRef)");
        }
        let spec = spec.clone();
        let allowed = self.allowed.clone();
        let max_sessions = self.max_sessions;
        let module = spec.module.clone();
        let ca = with_deadline(self.call_timeout, move || {
            let pin: Zeroizing<String> = pin;
            prepare(Inputs {
                spec: &spec,
                pin: &pin,
                chain_der: &chain,
                chain_place: &chain_place,
                allowed: &allowed,
                max_sessions,
            })
        })
        .await
        .map_err(|e| {
            PrepareFailure(crate::ca::PrepareError::NotReady(deadline_message(&e, &module, "prepare the issuer")))
        })?
        .map_err(|e| {
            PrepareFailure(match e {
                // A PIN problem is fixed in the Secret: name it. The token never sees a refused PIN
                // again (crate::token), so re-checking after a Secret change is safe.
                crate::ca::PrepareError::Hsm(
                    h @ (crate::error::HsmError::WrongPin { .. } | crate::error::HsmError::PinLocked { .. }),
                ) => crate::ca::PrepareError::NotReady(format!("{pin_place}: {h}")),
                other => other,
            })
        })?;
        let cached = self.prepared.insert(issuer, resources, Cached { inputs: fingerprint, ca: Arc::new(ca) });
        Ok(cached.ca.clone())
    }
}

/// What a missed deadline (or a failed HSM worker) means, naming the module and what it was doing.
fn deadline_message(e: &DeadlineError, module: &str, doing: &str) -> String {
    match e {
        DeadlineError::TimedOut(t) => format!(
            "the PKCS#11 module {module} did not {doing} within {}s (the HSM hangs or is overloaded): the issuer is not ready until the module answers again; raise --call-timeout if the HSM is just slow",
            t.as_secs_f64()
        ),
        DeadlineError::Failed(why) => format!("the HSM worker failed to {doing}: {why}"),
    }
}

/// Why an issuer could not be prepared (converted to the reaction of `check` or `sign`).
#[derive(Debug)]
pub struct PrepareFailure(pub crate::ca::PrepareError);

impl PrepareFailure {
    fn resource(e: SignError) -> PrepareFailure {
        PrepareFailure(crate::ca::PrepareError::NotReady(e.to_string()))
    }
}

#[certbridge::async_trait]
impl Signer for Pkcs11Signer {
    type Spec = Pkcs11IssuerSpec;

    async fn sign(
        &self,
        request: &SignRequest,
        issuer: &Issuer<Pkcs11IssuerSpec>,
        ctx: &mut SignContext,
    ) -> Result<Issued, SignError> {
        let ca = self.prepared(issuer, ctx.resources(), false).await.map_err(|f| f.0.for_sign())?;
        let request = request.clone();
        let issued = with_deadline(self.call_timeout, move || ca.sign(&request)).await.map_err(|e| match e {
            // A hung module is the issuer's problem, not the request's: not ready until its check
            // (which signs a probe under the same deadline) passes again, then the request is retried.
            DeadlineError::TimedOut(_) => {
                SignError::issuer_not_ready(deadline_message(&e, &issuer.spec.module, "sign the request"))
            }
            DeadlineError::Failed(_) => SignError::transient(deadline_message(&e, &issuer.spec.module, "sign")),
        })??;
        tracing::info!(issuer = %issuer.display_name(), "signed with the HSM key");
        Ok(issued)
    }

    async fn check(
        &self,
        issuer: &Issuer<Pkcs11IssuerSpec>,
        resources: &Resources,
    ) -> Result<certbridge::Ready, SignError> {
        let ca = self.prepared(issuer, resources, true).await.map_err(|f| f.0.for_check())?;
        ca.still_valid()?;
        Ok(certbridge::Ready::message(format!(
            "signing with CA {} (key in PKCS#11 token {:?})",
            ca.subject(),
            ca.key().token().label()
        )))
    }
}
