//! The [`Signer`] for EJBCA: resolves what to ask for (spec + per-request annotations), enrolls,
//! maps EJBCA's answers to the [`SignError`] taxonomy, and makes a request survive a controller
//! restart without being enrolled twice.
//!
//! ## Never enrolling twice
//! Before the enroll call the signer saves a *marker* in the request's state (`enroll-started`,
//! plus the resolved end-entity name, CA and profiles) with [`SignContext::save_state`]. Any later
//! call for the same request that sees the marker first *looks for* the certificate at EJBCA
//! (`POST /v1/certificate/search`: the end entity's certificates at that CA issued since the
//! marker, matched by the CSR's public key) and returns it if found. Only when nothing is found,
//! and EJBCA never said the request is waiting for approval, does it enroll again. This closes the
//! window between "EJBCA issued" and "the controller recorded it": a crash, a timeout, a reset
//! connection or a garbled 201 body all end in a lookup, not a second certificate.
//!
//! A lookup that finds nothing does not by itself allow a new enrollment: EJBCA may still be
//! working on an enroll whose answer the client gave up on (a CA slower than the client
//! timeout). Before each enroll the state records `enroll-unknown-until` = now + the enroll
//! call's budget ([`EjbcaClient::enroll_budget`]) + [`ENROLL_MARGIN`]; until then a retry that
//! finds nothing answers Pending, requeued at that instant. An answer that ends the call at EJBCA
//! (its own error body, a 429, a 202) or a request that never left (connect or TLS handshake
//! failed, no token) clears it at once. A certificate for another key does not: that answer says
//! nothing reliable about what EJBCA did for this request.
//!
//! What counts as "found" is decided in [`crate::lookup`]: the CSR's key, subject and SANs, and a
//! notBefore after the marker; never an earlier certificate for a reused key.
//!
//! On `202` (approval required) the state records `phase=approval-pending` (and the approval id
//! when EJBCA's message names one) before returning a pending [`SignError`]; a restarted controller
//! then polls: search → finalize (if the id is known) → still pending. It never enrolls again.
//!
//! Remaining risk (documented in the README): a crash after EJBCA *received* an enroll that went
//! to approval but before the `202` was saved looks, on restart, like "enroll never reached
//! EJBCA"; the signer then enrolls again and EJBCA holds two approval requests for the same end
//! entity (EJBCA itself refuses an identical waiting request, see README). No second certificate
//! is issued without an administrator approving both.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use certbridge::{
    Issued, Issuer, IssuerCache, Reaction, Resources, SignContext, SignError, SignRequest, Signer, async_trait,
};

use crate::auth::Credentials;
use crate::client::{
    CertificateResponse, EjbcaClient, EjbcaError, EnrollOutcome, EnrollRequest, SearchQuery, base_url,
};
use crate::lookup::{NOT_BEFORE_ALLOWANCE, mismatch};
use crate::spec::{DEFAULT_TIMEOUT_SECONDS, EjbcaIssuerSpec, GROUP};

/// Annotation keys (under `ejbca.certbridge.io/`) that override the spec per request.
pub mod annotations {
    /// Overrides `spec.certificateAuthorityName`.
    pub const CA: &str = "certificateAuthorityName";
    /// Overrides `spec.certificateProfileName`.
    pub const CERTIFICATE_PROFILE: &str = "certificateProfileName";
    /// Overrides `spec.endEntityProfileName`.
    pub const END_ENTITY_PROFILE: &str = "endEntityProfileName";
    /// Overrides `spec.endEntityName`.
    pub const END_ENTITY_NAME: &str = "endEntityName";
    /// Every override, for `spec.allowedOverrides`.
    pub const OVERRIDES: [&str; 4] = [CA, CERTIFICATE_PROFILE, END_ENTITY_PROFILE, END_ENTITY_NAME];
    /// cert-manager's annotation naming the Certificate a request belongs to.
    pub const CERTIFICATE_NAME: &str = "cert-manager.io/certificate-name";
}

/// State keys (stored as `state.ejbca.certbridge.io/<key>` on the request).
mod state {
    pub const STARTED: &str = "enroll-started";
    pub const USERNAME: &str = "username";
    pub const CA: &str = "ca";
    pub const CERT_PROFILE: &str = "certificate-profile";
    pub const EE_PROFILE: &str = "end-entity-profile";
    pub const PHASE: &str = "phase";
    pub const APPROVAL_ID: &str = "approval-id";
    pub const ENROLL_ATTEMPTS: &str = "enroll-attempts";
    pub const UNKNOWN_UNTIL: &str = "enroll-unknown-until";
    pub const PHASE_ENROLLING: &str = "enrolling";
    pub const PHASE_APPROVAL: &str = "approval-pending";
}

/// The request condition shown while EJBCA waits for an administrator's approval.
pub const APPROVAL_CONDITION: &str = "EjbcaApproval";

/// Added to the enroll call's budget before a retry may enroll again: EJBCA may finish an
/// enrollment shortly after the client gave up on it (the request was already received), and
/// controller replicas' clocks differ a little.
pub const ENROLL_MARGIN: Duration = Duration::from_secs(10);

/// The EJBCA signer. Clients (and their OAuth token caches) are kept per issuer and rebuilt when
/// the issuer's spec, credentials or CA bundle change.
pub struct EjbcaSigner {
    clients: IssuerCache<CachedClient>,
    pending_requeue: Duration,
}

impl Default for EjbcaSigner {
    fn default() -> Self {
        EjbcaSigner::new()
    }
}

/// A client and the fingerprint of what it was built from.
type CachedClient = (Vec<u8>, Arc<EjbcaClient>);

/// What one request is enrolled as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// End-entity name (EJBCA username).
    pub username: String,
    /// CA name.
    pub ca: String,
    /// Certificate profile name.
    pub certificate_profile: String,
    /// End-entity profile name.
    pub end_entity_profile: String,
}

impl EjbcaSigner {
    /// A signer asking again every 30 s while EJBCA waits for an approval.
    pub fn new() -> Self {
        EjbcaSigner { clients: IssuerCache::new(), pending_requeue: Duration::from_secs(30) }
    }

    /// How soon a request waiting for EJBCA approval is asked about again.
    pub fn with_pending_requeue(mut self, d: Duration) -> Self {
        self.pending_requeue = d;
        self
    }

    /// The client for `issuer`, reusing the cached one when nothing it was built from changed.
    pub async fn client(
        &self,
        issuer: &Issuer<EjbcaIssuerSpec>,
        resources: &Resources,
    ) -> Result<Arc<EjbcaClient>, SignError> {
        let spec = &issuer.spec;
        let base = base_url(&spec.hostname).map_err(SignError::permanent)?;
        let (credentials, cred_fp) = Credentials::load(resources, &spec.ejbca_secret_name).await?;
        let bundle = match &spec.ca_bundle {
            None => None,
            // spec.caBundle (its deprecated secretName/configMapName form converted), read by the
            // framework: a missing object or key, or no PEM certificates, is "not ready", naming
            // the object and the key.
            Some(b) => {
                let ders = resources.ca_bundle(&b.resolve().map_err(SignError::permanent)?).await?;
                Some(ders.iter().map(|d| certbridge::pki::to_pem(d)).collect::<String>())
            }
        };
        let timeout = Duration::from_secs(u64::from(spec.request_timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS)));
        // The cache entry follows the issuer's generation and Secrets; the fingerprint also covers
        // contents read without a resourceVersion (offline `check -f`).
        let mut h = Sha256::new();
        h.update(base.as_bytes());
        h.update(cred_fp);
        h.update(bundle.as_deref().unwrap_or("").as_bytes());
        h.update(timeout.as_secs().to_be_bytes());
        let fingerprint = h.finalize().to_vec();
        if let Some(cached) = self.clients.get(issuer, resources)
            && cached.0 == fingerprint
        {
            return Ok(cached.1.clone());
        }
        if spec.ca_bundle.as_ref().is_some_and(|b| b.uses_deprecated_fields()) {
            // Once per client built, not per request.
            warn!(
                "spec.caBundle secretName/configMapName/key are deprecated: use secretRef or configMapRef: {{name, key}}"
            );
        }
        let client = Arc::new(EjbcaClient::new(base, credentials, bundle.as_deref(), timeout)?);
        self.clients.insert(issuer, resources, (fingerprint, client.clone()));
        Ok(client)
    }

    /// CA, profiles and end-entity name for `request`: annotations under `ejbca.certbridge.io/`
    /// win over the spec when `spec.allowedOverrides` allows them; any other annotation under
    /// that prefix refuses the request (see [`certbridge::overrides`]).
    pub fn enrollment(request: &SignRequest, spec: &EjbcaIssuerSpec) -> Result<Enrollment, SignError> {
        let overrides =
            certbridge::overrides::resolve(GROUP, &request.object.annotations, &spec.allowed_overrides, &[])
                .map_err(|e| SignError::permanent(e.to_string()))?;
        let pick = |key: &str, spec_value: &str| -> Result<String, SignError> {
            match overrides.get(key).map(String::as_str) {
                Some(v) if v.trim().is_empty() => {
                    Err(SignError::permanent(format!("annotation {GROUP}/{key} is empty: remove it or set a value")))
                }
                Some(v) => Ok(v.trim().to_owned()),
                None => Ok(spec_value.to_owned()),
            }
        };
        let ca = pick(annotations::CA, &spec.certificate_authority_name)?;
        let certificate_profile = pick(annotations::CERTIFICATE_PROFILE, &spec.certificate_profile_name)?;
        let end_entity_profile = pick(annotations::END_ENTITY_PROFILE, &spec.end_entity_profile_name)?;
        let naming = match overrides.get(annotations::END_ENTITY_NAME).map(String::as_str) {
            Some(v) if v.trim().is_empty() => {
                return Err(SignError::permanent(format!(
                    "annotation {GROUP}/{} is empty: remove it or set cn, dns, uri, ip, certificateName or a literal name",
                    annotations::END_ENTITY_NAME
                )));
            }
            Some(v) => Some(v.trim().to_owned()),
            None => spec.end_entity_name.clone(),
        };
        let username = end_entity_name(naming.as_deref(), request)?;
        Ok(Enrollment { username, ca, certificate_profile, end_entity_profile })
    }

    async fn resume(
        &self,
        client: &EjbcaClient,
        request: &SignRequest,
        e: &Enrollment,
        ctx: &mut SignContext,
    ) -> Result<Option<Issued>, SignError> {
        let started = ctx.state(state::STARTED).unwrap_or_default().to_owned();
        if let Some(issued) = self.find_issued(client, request, e, &started).await? {
            info!(username = %e.username, ca = %e.ca, "found the certificate of an earlier enrollment; not enrolling again");
            return Ok(Some(issued));
        }
        if ctx.state(state::PHASE) != Some(state::PHASE_APPROVAL) {
            return self.unless_outcome_unknown(client, ctx).map(|()| None);
        }
        let Some(id) = ctx.state(state::APPROVAL_ID).and_then(|s| s.parse::<i32>().ok()) else {
            return Err(self.waiting_for_approval(format!(
                "EJBCA is waiting for an administrator to approve the enrollment of end entity {:?}",
                e.username
            )));
        };
        let password = new_password();
        match client.finalize(id, &password).await {
            Ok(EnrollOutcome::Issued(resp)) => Ok(Some(self.assemble_for(client, request, e, &resp).await?)),
            Ok(EnrollOutcome::Pending { message, .. }) => {
                Err(self.waiting_for_approval(format!("EJBCA approval request {id}: {message}")))
            }
            Err(err) => Err(err.to_sign_error(&format!("finalize approval request {id}"))),
        }
    }

    /// `Ok` when a new enrollment may be sent: the previous enroll call of this request is over
    /// for certain. Otherwise Pending until `enroll-unknown-until`, the instant after which no
    /// request of that call can still be on its way or in EJBCA's hands. Without the key the last
    /// call ended at EJBCA (the key was cleared), or the state was written before the key existed
    /// (no window then, as before).
    fn unless_outcome_unknown(&self, client: &EjbcaClient, ctx: &SignContext) -> Result<(), SignError> {
        let Some(v) = ctx.state(state::UNKNOWN_UNTIL) else { return Ok(()) };
        let until = v.parse::<jiff::Timestamp>().map_err(|_| {
            SignError::permanent(format!("request state {}={v:?} is not a timestamp", state::UNKNOWN_UNTIL))
        })?;
        let now = jiff::Timestamp::now();
        if now >= until {
            return Ok(());
        }
        let wait = Duration::try_from(until - now).unwrap_or(ENROLL_MARGIN);
        info!(%until, "the last enrollment's outcome is unknown; waiting before enrolling again");
        Err(SignError::pending(
            format!(
                "EJBCA has not answered the last enrollment of this request and no certificate for it was found yet; not enrolling again before {until} (the enroll call's {}s budget plus {}s), when EJBCA can no longer be working on it",
                client.enroll_budget().as_secs(),
                ENROLL_MARGIN.as_secs()
            ),
            wait,
        ))
    }

    /// Pending, with the `EjbcaApproval=False/WaitingForApproval` condition. Every pass that is
    /// still waiting must carry it: the controller applies only the conditions of the current
    /// pass, so a pass without it would remove it from the request.
    fn waiting_for_approval(&self, message: String) -> SignError {
        SignError::pending(message, self.pending_requeue).with_condition(
            APPROVAL_CONDITION,
            "False",
            "WaitingForApproval",
        )
    }

    /// The certificate EJBCA issued for this request after `started`, if any ([`crate::lookup`]).
    async fn find_issued(
        &self,
        client: &EjbcaClient,
        request: &SignRequest,
        e: &Enrollment,
        started: &str,
    ) -> Result<Option<Issued>, SignError> {
        let since = parse_marker(started)? - NOT_BEFORE_ALLOWANCE;
        let query = SearchQuery {
            username: Some(&e.username),
            ca: &e.ca,
            certificate_profile: &e.certificate_profile,
            end_entity_profile: &e.end_entity_profile,
            issued_after: &since.to_string(),
        };
        let found = client.search_certificates(&query, 100).await.map_err(|err| search_error(&err, e))?;
        let mut best: Option<(i64, CertificateResponse)> = None;
        for cert in found {
            let Ok((leaf, _)) = cert.decode() else { continue };
            let Ok((_, x)) = x509_parser::parse_x509_certificate(&leaf) else { continue };
            match mismatch(&x, &request.csr, since) {
                None => {
                    let not_before = x.validity().not_before.timestamp();
                    if best.as_ref().is_none_or(|(t, _)| not_before > *t) {
                        best = Some((not_before, cert.clone()));
                    }
                }
                Some(why) => {
                    debug!(serial = ?cert.serial_number, why, "a certificate EJBCA found is not this request's")
                }
            }
        }
        match best {
            Some((_, cert)) => {
                let resp = CertificateResponse { certificate_chain: None, ..cert };
                Ok(Some(self.assemble_for(client, request, e, &resp).await?))
            }
            None => Ok(None),
        }
    }

    /// [`Self::assemble`], refusing a certificate for another key: that is a CA or proxy glitch
    /// (the certificate EJBCA issued for this request may well exist), so it is Transient: the
    /// retry looks the right one up or, if EJBCA has none, enrolls again.
    async fn assemble_for(
        &self,
        client: &EjbcaClient,
        request: &SignRequest,
        e: &Enrollment,
        resp: &CertificateResponse,
    ) -> Result<Issued, SignError> {
        let issued = self.assemble(client, e, resp).await?;
        if issued.leaf_public_key_der().ok().as_deref() != Some(request.csr.public_key_der.as_slice()) {
            warn!(username = %e.username, serial = ?resp.serial_number, "EJBCA returned a certificate for a different key");
            return Err(SignError::transient(format!(
                "EJBCA returned a certificate (serial {}) for a different key than the request's CSR; not using it, will look for the right one",
                resp.serial_number.as_deref().unwrap_or("unknown")
            )));
        }
        Ok(issued)
    }

    /// Orders leaf + chain (fetching the CA chain when the answer has none) with the framework's
    /// chain helper: leaf first, intermediates, the root as CA.
    async fn assemble(
        &self,
        client: &EjbcaClient,
        e: &Enrollment,
        resp: &CertificateResponse,
    ) -> Result<Issued, SignError> {
        let (leaf, mut chain) =
            resp.decode().map_err(|m| SignError::transient(format!("EJBCA answer for {:?}: {m}", e.username)))?;
        if chain.is_empty() {
            chain = self.ca_chain(client, &e.ca).await?;
        }
        let mut ders = vec![leaf];
        ders.extend(chain);
        Issued::from_der_certs(ders).map_err(|m| SignError::permanent(format!("EJBCA CA {:?}: {m}", e.ca)))
    }

    async fn ca_chain(&self, client: &EjbcaClient, ca: &str) -> Result<Vec<Vec<u8>>, SignError> {
        let cas = client.list_cas().await.map_err(|err| err.to_sign_error("CA lookup"))?;
        let info = cas.iter().find(|c| c.name == ca).ok_or_else(|| {
            SignError::permanent(format!("EJBCA does not list CA {ca:?} (it lists {:?})", names(&cas)))
        })?;
        let dn = info
            .subject_dn
            .as_deref()
            .ok_or_else(|| SignError::transient(format!("EJBCA lists CA {ca:?} without a subject DN")))?;
        let pem_text = client.ca_chain_pem(dn).await.map_err(|err| err.to_sign_error("CA chain download"))?;
        let blocks = pem::parse_many(&pem_text)
            .map_err(|err| SignError::transient(format!("EJBCA CA chain of {ca:?} is not PEM: {err}")))?;
        Ok(blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE").map(pem::Pem::into_contents).collect())
    }
}

/// Saves that the last enroll call is over (the framework saves after `sign` too; this makes it
/// independent of that). A failed save only makes the retry wait for the window.
async fn save_call_over(ctx: &mut SignContext) {
    if let Err(err) = ctx.save_state().await {
        debug!(error = %err, "could not record that the enroll call is over");
    }
}

/// The enrollment marker as a time.
fn parse_marker(started: &str) -> Result<jiff::Timestamp, SignError> {
    started
        .parse::<jiff::Timestamp>()
        .map_err(|_| SignError::permanent(format!("request state {}={started:?} is not a timestamp", state::STARTED)))
}

/// A failed certificate search. A 403 (after the token refresh) is the role lacking search rights:
/// not this request's fault, and fixed in EJBCA without touching the issuer, so the issuer is not
/// ready (re-checked until the rights are there) rather than the request Failed. Without the
/// search a lost answer cannot be recovered, so no new enrollment is risked either.
fn search_error(err: &EjbcaError, e: &Enrollment) -> SignError {
    match err.status() {
        Some(403) => SignError::issuer_not_ready(format!(
            "{}: the issuer's credentials may not search certificates; give their EJBCA role view access to CA {:?}, certificate profile {:?} and end-entity profile {:?} (EJBCA authorizes each one a search names): the certificate search is how a lost enrollment answer is recovered without enrolling twice",
            err.to_sign_error("certificate search"),
            e.ca,
            e.certificate_profile,
            e.end_entity_profile
        )),
        _ => err.to_sign_error("certificate search"),
    }
}

fn names(cas: &[crate::client::CaInfo]) -> Vec<&str> {
    cas.iter().map(|c| c.name.as_str()).collect()
}

/// A fresh end-entity enrollment code: 24 random alphanumerics (~143 bits).
fn new_password() -> Zeroizing<String> {
    Zeroizing::new(rand::rng().sample_iter(rand::distr::Alphanumeric).take(24).map(char::from).collect())
}

/// EJBCA's `end_time` format: UTC `YYYY-MM-DD HH:MM:SS` (RFC 3339 is refused).
pub fn end_time(now: jiff::Timestamp, duration: Duration) -> Result<String, SignError> {
    let span = jiff::SignedDuration::try_from(duration)
        .map_err(|_| SignError::permanent(format!("the requested duration {duration:?} is too long")))?;
    let end = now
        .checked_add(span)
        .map_err(|_| SignError::permanent(format!("the requested duration {duration:?} is too long")))?;
    Ok(end.strftime("%Y-%m-%d %H:%M:%S").to_string())
}

/// The end-entity name for `request` under the naming rule `naming` (Keyfactor's rules: `cn`,
/// `dns`, `uri`, `ip`, `certificateName`, or a literal; none → CN, DNS, URI, IP, Certificate name).
pub fn end_entity_name(naming: Option<&str>, request: &SignRequest) -> Result<String, SignError> {
    let csr = &request.csr;
    let cn = || csr.common_name.clone().filter(|s| !s.trim().is_empty());
    let dns = || csr.dns_names.first().cloned();
    let uri = || csr.uris.first().cloned();
    let ip = || csr.ip_addresses.first().map(ToString::to_string);
    let cert_name =
        || request.object.annotations.get(annotations::CERTIFICATE_NAME).cloned().filter(|s| !s.trim().is_empty());
    let missing = |what: &str| {
        SignError::permanent(format!(
            "failed to determine the EJBCA end entity name: endEntityName is {:?} but the request has no {what}; choose another endEntityName",
            naming.unwrap_or_default()
        ))
    };
    match naming {
        Some("cn") => cn().ok_or_else(|| missing("common name")),
        Some("dns") => dns().ok_or_else(|| missing("DNS name")),
        Some("uri") => uri().ok_or_else(|| missing("URI")),
        Some("ip") => ip().ok_or_else(|| missing("IP address")),
        Some("certificateName") => cert_name().ok_or_else(|| missing(&format!("{} annotation", annotations::CERTIFICATE_NAME))),
        Some(literal) => Ok(literal.to_owned()),
        None => cn().or_else(dns).or_else(uri).or_else(ip).or_else(cert_name).ok_or_else(|| {
            SignError::permanent(
                "failed to determine the EJBCA end entity name: the CSR has no common name, DNS name, URI or IP address and the request names no Certificate; set spec.endEntityName",
            )
        }),
    }
}

#[async_trait]
impl Signer for EjbcaSigner {
    type Spec = EjbcaIssuerSpec;

    async fn sign(
        &self,
        request: &SignRequest,
        issuer: &Issuer<EjbcaIssuerSpec>,
        ctx: &mut SignContext,
    ) -> Result<Issued, SignError> {
        let client = self.client(issuer, ctx.resources()).await?;
        // A request already started is finished with what it was started with, even if the
        // spec or its annotations changed since.
        let resumed = ctx.state(state::STARTED).is_some();
        let e = match (
            ctx.state(state::USERNAME),
            ctx.state(state::CA),
            ctx.state(state::CERT_PROFILE),
            ctx.state(state::EE_PROFILE),
        ) {
            (Some(u), Some(c), Some(cp), Some(ep)) if resumed => Enrollment {
                username: u.to_owned(),
                ca: c.to_owned(),
                certificate_profile: cp.to_owned(),
                end_entity_profile: ep.to_owned(),
            },
            _ => Self::enrollment(request, &issuer.spec)?,
        };
        if resumed {
            if let Some(issued) = self.resume(&client, request, &e, ctx).await? {
                return Ok(issued);
            }
            debug!(username = %e.username, "no certificate from an earlier attempt; enrolling");
        }

        let now = jiff::Timestamp::now();
        let end = end_time(now, request.duration)?;
        let attempts: u32 = ctx.state(state::ENROLL_ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(0);
        // The marker goes out before the call: whatever happens next, a later call looks first.
        if !resumed {
            // Keep the earliest marker on later attempts: a certificate from the first one must
            // still be found.
            ctx.set_state(state::STARTED, now.to_string());
        }
        ctx.set_state(state::USERNAME, e.username.clone());
        ctx.set_state(state::CA, e.ca.clone());
        ctx.set_state(state::CERT_PROFILE, e.certificate_profile.clone());
        ctx.set_state(state::EE_PROFILE, e.end_entity_profile.clone());
        ctx.set_state(state::PHASE, state::PHASE_ENROLLING);
        ctx.set_state(state::ENROLL_ATTEMPTS, (attempts + 1).to_string());
        ctx.set_state(state::UNKNOWN_UNTIL, (now + client.enroll_budget() + ENROLL_MARGIN).to_string());
        ctx.remove_state(state::APPROVAL_ID);
        ctx.save_state().await.map_err(|err| err.context("saving the enrollment marker before calling EJBCA"))?;
        let password = new_password();
        let body = EnrollRequest {
            certificate_request: &request.csr_pem,
            certificate_profile_name: &e.certificate_profile,
            end_entity_profile_name: &e.end_entity_profile,
            certificate_authority_name: &e.ca,
            username: &e.username,
            password: &password,
            include_chain: true,
            response_format: "DER",
            end_time: end,
        };
        info!(username = %e.username, ca = %e.ca, certificate_profile = %e.certificate_profile,
              end_entity_profile = %e.end_entity_profile, "enrolling PKCS#10 request at EJBCA");
        let outcome = client.enroll(&body).await;
        // An answer that ended the call at EJBCA: nothing more can come of it, so a retry may
        // enroll again as soon as the lookup finds nothing. (A certificate is handed over, or
        // refused below; either way the window is left as it is.)
        let call_over = match &outcome {
            Ok(EnrollOutcome::Issued(_)) => false,
            Ok(EnrollOutcome::Pending { .. }) => true,
            Err(err) => err.call_is_over(),
        };
        if call_over {
            ctx.remove_state(state::UNKNOWN_UNTIL);
        }
        match outcome {
            // A certificate for another key ends the call but says nothing reliable about what
            // EJBCA did for this request (a proxy may be rewriting answers, searches included):
            // the window stays, so a lookup that finds nothing does not enroll again at once.
            Ok(EnrollOutcome::Issued(resp)) => self.assemble_for(&client, request, &e, &resp).await,
            Ok(EnrollOutcome::Pending { message, approval_id }) => {
                ctx.set_state(state::PHASE, state::PHASE_APPROVAL);
                if let Some(id) = approval_id {
                    ctx.set_state(state::APPROVAL_ID, id.to_string());
                }
                ctx.save_state().await.map_err(|err| err.context("saving the approval state"))?;
                info!(username = %e.username, ?approval_id, "EJBCA requires approval");
                Err(self.waiting_for_approval(format!("EJBCA: {message}")))
            }
            Err(err) => {
                if call_over {
                    save_call_over(ctx).await;
                }
                let sign_err = err.to_sign_error("enroll");
                if !call_over {
                    warn!(username = %e.username, error = %sign_err, "enrollment outcome unknown; the next attempt looks for the certificate first");
                }
                Err(sign_err)
            }
        }
    }

    async fn check(
        &self,
        issuer: &Issuer<EjbcaIssuerSpec>,
        resources: &Resources,
    ) -> Result<certbridge::Ready, SignError> {
        let client = self.client(issuer, resources).await?;
        let as_check = |err: EjbcaError, op: &str| match err.status() {
            // Fixing credentials does not change the spec: keep re-checking instead of Failed.
            Some(401 | 403) => SignError::issuer_not_ready(err.to_sign_error(op).to_string()),
            _ => match err.to_sign_error(op) {
                e if e.reaction == Reaction::Transient => e.with_reaction(Reaction::IssuerNotReady),
                other => other,
            },
        };
        let status = client.status().await.map_err(|err| as_check(err, "status"))?;
        if status.status.as_deref() != Some("OK") {
            return Err(SignError::issuer_not_ready(format!(
                "EJBCA status: the certificate REST resource reports {:?}, not \"OK\"",
                status.status
            )));
        }
        let cas = client.list_cas().await.map_err(|err| as_check(err, "CA lookup"))?;
        let ca = &issuer.spec.certificate_authority_name;
        if !cas.iter().any(|c| &c.name == ca) {
            // Not permanent: what the credentials may see is decided by the Secret
            // (spec.ejbcaSecretName) and by EJBCA's roles, and fixing either must bring the issuer back.
            return Err(SignError::issuer_not_ready(format!(
                "spec.certificateAuthorityName {ca:?} is not a CA the credentials in Secret \"{}/{}\" can see in EJBCA (it lists {:?}): fix the name, the credentials in the Secret, or their role in EJBCA",
                resources.namespace(),
                issuer.spec.ejbca_secret_name,
                names(&cas)
            )));
        }
        // Every other permission `sign` needs, as far as EJBCA lets one test it without side
        // effects: the CA chain download (answers without a chain) and the certificate search
        // (recovering a lost answer), with the spec's CA and profiles. Enrolling itself cannot
        // be tried without enrolling; per-request overrides are checked when they are used.
        let spec = &issuer.spec;
        if let Some(dn) = cas.iter().find(|c| &c.name == ca).and_then(|c| c.subject_dn.as_deref()) {
            client.ca_chain_pem(dn).await.map_err(|err| as_check(err, "CA chain download"))?;
        }
        let since = jiff::Timestamp::now().to_string();
        let query = SearchQuery {
            username: None,
            ca,
            certificate_profile: &spec.certificate_profile_name,
            end_entity_profile: &spec.end_entity_profile_name,
            issued_after: &since,
        };
        let e = Enrollment {
            username: String::new(),
            ca: ca.clone(),
            certificate_profile: spec.certificate_profile_name.clone(),
            end_entity_profile: spec.end_entity_profile_name.clone(),
        };
        client.search_certificates(&query, 1).await.map_err(|err| match err.status() {
            Some(403) => search_error(&err, &e),
            _ => as_check(err, "certificate search"),
        })?;
        debug!(revision = ?status.revision, "EJBCA issuer checked");
        Ok(certbridge::Ready::message(format!("signing with EJBCA CA {ca:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(f: impl FnOnce(&mut rcgen::CertificateParams), annotations: &[(&str, &str)]) -> SignRequest {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        f(&mut p);
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        let mut r = SignRequest::from_csr_pem::<&str>(&pem, Duration::from_secs(3600), false, &[]).unwrap();
        r.object.annotations = annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        r
    }

    #[test]
    fn end_entity_names_follow_keyfactor() {
        let full = request(
            |p| {
                p.distinguished_name.push(rcgen::DnType::CommonName, "cn.example.com");
                p.subject_alt_names.push(rcgen::SanType::DnsName("dns.example.com".try_into().unwrap()));
                p.subject_alt_names.push(rcgen::SanType::URI("spiffe://x/y".try_into().unwrap()));
                p.subject_alt_names.push(rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()));
            },
            &[(annotations::CERTIFICATE_NAME, "my-cert")],
        );
        assert_eq!(end_entity_name(None, &full).unwrap(), "cn.example.com");
        assert_eq!(end_entity_name(Some("dns"), &full).unwrap(), "dns.example.com");
        assert_eq!(end_entity_name(Some("uri"), &full).unwrap(), "spiffe://x/y");
        assert_eq!(end_entity_name(Some("ip"), &full).unwrap(), "10.1.2.3");
        assert_eq!(end_entity_name(Some("certificateName"), &full).unwrap(), "my-cert");
        assert_eq!(end_entity_name(Some("shared-ee"), &full).unwrap(), "shared-ee");
        let ip_only = request(|p| p.subject_alt_names.push(rcgen::SanType::IpAddress("::1".parse().unwrap())), &[]);
        assert_eq!(end_entity_name(None, &ip_only).unwrap(), "::1");
        let e = end_entity_name(Some("cn"), &ip_only).unwrap_err();
        assert!(e.reaction == Reaction::Permanent && e.message.contains("no common name"), "{e}");
        let named = request(|p| p.subject_alt_names.push(rcgen::SanType::URI("urn:a".try_into().unwrap())), &[]);
        assert_eq!(end_entity_name(None, &named).unwrap(), "urn:a");
        let nothing = request(|_| {}, &[]);
        assert!(end_entity_name(None, &nothing).unwrap_err().to_string().contains("set spec.endEntityName"));
        let only_name = request(|_| {}, &[(annotations::CERTIFICATE_NAME, "c1")]);
        assert_eq!(end_entity_name(None, &only_name).unwrap(), "c1");
    }

    #[test]
    fn end_time_is_ejbca_format() {
        let now: jiff::Timestamp = "2026-05-01T12:00:00Z".parse().unwrap();
        assert_eq!(end_time(now, Duration::from_secs(86400 + 61)).unwrap(), "2026-05-02 12:01:01");
        assert!(end_time(now, Duration::from_secs(u64::MAX)).is_err());
    }

    #[test]
    fn passwords_are_fresh() {
        let a = new_password();
        let b = new_password();
        assert_eq!(a.len(), 24);
        assert_ne!(*a, *b);
    }
}
