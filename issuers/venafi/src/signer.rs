//! The [`Signer`] for Venafi: builds one client per issuer (one token for the whole run), submits
//! a request once, and picks the certificate up later without ever blocking a worker.
//!
//! ## A pickup ID is never lost, a request never submitted twice
//! * Before `certificates/request` the signer saves the object DN it *expects* TPP to use
//!   (`\VED\Policy\<zone>\<ObjectName>`, state `request-dn`); right after it saves the pickup ID
//!   TPP returned (`pickup-id`). A controller that restarts between the two first tries to
//!   retrieve the expected DN: a certificate for this CSR's key, or a pending one, is adopted;
//!   only "does not exist" or another key leads to a new request.
//! * With a pickup ID every later pass only retrieves: issued → done; pending → requeue after
//!   1 s, 2 s, 4 s … up to `retrieveInterval`; pending longer than `maxPendingTime` → Failed.
//! * TPP's "…click Retry" → `certificates/reset` and one new request, recorded in the state
//!   (`reset-retried`) and in the request's `VenafiReset` condition and message; a second one is Failed.
//! * Cloud: `cloud-request-id` is saved at once; each pass reads its status. A crash between the
//!   POST and that save can leave one orphaned request at Cloud (no lookup by CSR exists).

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use certbridge::{
    Issued, Issuer, IssuerCache, KeyKind, Resources, SignContext, SignError, SignRequest, Signer, async_trait,
};

use crate::client::{
    self, CustomFieldBody, NameValue, RequestBody, Retrieved, San, TppClient, TppCredentials, Verdict, classify,
};
use crate::cloud::{self, CloudClient, CloudCredentials};
use crate::http::VenafiError;
use crate::spec::{CUSTOM_FIELDS_ANNOTATION, Product, VenafiIssuerSpec};

/// State keys (stored as `state.venafi.certbridge.io/<key>` on the request).
pub mod state {
    /// TPP: the object DN expected before the request call.
    pub const REQUEST_DN: &str = "request-dn";
    /// TPP: the pickup ID (CertificateDN) TPP returned.
    pub const PICKUP_ID: &str = "pickup-id";
    /// Cloud: the certificate request id.
    pub const CLOUD_REQUEST_ID: &str = "cloud-request-id";
    /// When the request was first submitted (RFC 3339).
    pub const REQUESTED_AT: &str = "requested-at";
    /// Pickup attempts that found it pending (drives the backoff).
    pub const POLLS: &str = "polls";
    /// Set once a "click Retry" led to a reset and a new request.
    pub const RESET_RETRIED: &str = "reset-retried";
}

/// The request condition set after a "click Retry" reset.
pub const RESET_CONDITION: &str = "VenafiReset";

/// The `Origin` sent to TPP.
pub const ORIGIN: &str = "certbridge";

/// First pickup delay; doubles up to `retrieveInterval`.
pub const FIRST_REQUEUE: Duration = Duration::from_secs(1);

/// One issuer's client.
pub enum Backend {
    /// TPP.
    Tpp(TppClient),
    /// TLS Protect Cloud.
    Cloud(CloudClient),
}

/// What the signer keeps per issuer (in the framework's [`IssuerCache`]): the client, whose
/// tokens — the TPP refresh token TPP rotates included — live inside it, and how many of those
/// rotations were written back to the Secret (`tpp.persistRefreshedToken`). The async mutex
/// makes concurrent signs write one rotation once.
struct Entry {
    backend: Backend,
    persisted: tokio::sync::Mutex<u64>,
}

/// The Venafi signer. Clients (and their tokens) are kept per issuer in an [`IssuerCache`]:
/// rebuilt when the issuer's generation or a Secret it references changes, never twice at once,
/// dropped when the issuer is deleted.
#[derive(Default)]
pub struct VenafiSigner {
    clients: IssuerCache<Entry>,
    /// The state of each request this process left unfinished at Venafi (request UID → state
    /// map), newer than any copy the controller may read. The controllers read a request from a
    /// watch cache, which can lag behind the state annotations just written (after a watch
    /// expiry or an API outage); a pass on such a stale copy saw no pickup ID and requested
    /// again — duplicates the chaos harness found (2 requests issued 4 times each in one run).
    /// A pass continues from what this process knows instead. Cleared when a request ends here.
    in_flight: std::sync::Mutex<std::collections::HashMap<String, std::collections::BTreeMap<String, String>>>,
}

/// At most this many requests are remembered in [`VenafiSigner`]'s in-flight map (requests deleted
/// while pending are never cleared one by one): past it the map starts over.
const IN_FLIGHT_MAX: usize = 100_000;

impl VenafiSigner {
    /// A signer with no clients yet.
    pub fn new() -> Self {
        VenafiSigner::default()
    }

    /// How many issuers have a client now (tests: a deleted issuer's client is dropped).
    pub fn cached_clients(&self) -> usize {
        self.clients.len()
    }

    /// Replaces `ctx`'s state with what this process last knew of the request, when it knows it.
    fn recall(&self, request: &SignRequest, ctx: &mut SignContext) {
        if request.object.uid.is_empty() {
            return;
        }
        let known = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).get(&request.object.uid).cloned();
        let Some(known) = known.filter(|k| k != ctx.state_map()) else { return };
        debug!("the request's state read by the controller is older than this process's: continuing from the newer");
        let stale: Vec<String> = ctx.state_map().keys().filter(|k| !known.contains_key(*k)).cloned().collect();
        for k in stale {
            ctx.remove_state(&k);
        }
        for (k, v) in known {
            ctx.set_state(k, v);
        }
    }

    /// Remembers the request's state after a pass, or forgets it when the request ended here.
    fn remember(&self, request: &SignRequest, ctx: &SignContext, result: &Result<Issued, SignError>) {
        if request.object.uid.is_empty() {
            return;
        }
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let ended = match result {
            Ok(_) => true,
            Err(e) => e.reaction == certbridge::Reaction::Permanent,
        };
        let started =
            [state::REQUEST_DN, state::PICKUP_ID, state::CLOUD_REQUEST_ID].iter().any(|k| ctx.state(k).is_some());
        if ended || !started {
            map.remove(&request.object.uid);
            return;
        }
        if map.len() >= IN_FLIGHT_MAX {
            map.clear();
        }
        map.insert(request.object.uid.clone(), ctx.state_map().clone());
    }

    /// `tpp.persistRefreshedToken`: writes the refresh token TPP rotated to `refresh-token` of the
    /// credentials Secret, once per rotation, through the framework ([`Resources::update_secret_key`]:
    /// a merge patch of that key, not over a change made since the Secret was read). A failure
    /// is logged, not returned: the token stays valid in memory; only a restart before the next
    /// successful write loses it.
    async fn persist_refresh_token(&self, issuer: &Issuer<VenafiIssuerSpec>, res: &Resources, entry: &Arc<Entry>) {
        let Some(t) = issuer.spec.tpp.as_ref().filter(|t| t.persist_refreshed_token == Some(true)) else { return };
        let Backend::Tpp(c) = &entry.backend else { return };
        let mut persisted = entry.persisted.lock().await;
        let (Some(token), rotations) = c.refresh_token().await else { return };
        if rotations == 0 || *persisted >= rotations {
            return;
        }
        let key = certbridge::SecretKeySelector { name: t.credentials_ref.name.clone(), key: "refresh-token".into() };
        match res.update_secret_key(&key, token.as_bytes()).await {
            Ok(()) => {
                *persisted = rotations;
                // Our own write changed the Secret's resourceVersion: this client stays the
                // issuer's client (it holds the token just written), not rebuilt by the next call.
                self.clients.rekey(issuer, res, entry);
                info!(secret = %key.name, "wrote the rotated TPP refresh token back to the credentials Secret");
            }
            Err(e) => warn!(
                secret = %key.name,
                error = %e,
                "could not write the rotated refresh token to the credentials Secret; it stays in memory"
            ),
        }
    }

    /// The client for `issuer`, reusing the cached one while nothing it was built from changed.
    /// Every Secret is read (through `res`) before the cache is asked, so its key covers them.
    async fn client(&self, issuer: &Issuer<VenafiIssuerSpec>, res: &Resources) -> Result<Arc<Entry>, SignError> {
        let spec = &issuer.spec;
        let backend: Box<dyn FnOnce() -> Result<Backend, SignError> + Send> =
            match spec.product().map_err(SignError::permanent)? {
                Product::Tpp(t) => {
                    let base = client::tpp_base_url(&t.url).map_err(SignError::permanent)?;
                    let creds = TppCredentials::load(res, &t.credentials_ref.name).await?;
                    let bundle = match (&t.ca_bundle, &t.ca_bundle_secret_ref) {
                        (Some(b), _) => Some(client::decode_ca_bundle(b).map_err(SignError::permanent)?),
                        (None, Some(r)) => Some(pem_text(res, r, "spec.tpp.caBundleSecretRef").await?),
                        (None, None) => None,
                    };
                    let (secret, timeout) = (t.credentials_ref.name.clone(), spec.timeout());
                    Box::new(move || TppClient::new(base, creds, secret, bundle.as_deref(), timeout).map(Backend::Tpp))
                }
                Product::Cloud(c) => {
                    let base = cloud::cloud_base_url(c.url.as_deref()).map_err(SignError::permanent)?;
                    let creds = match (&c.api_token_secret_ref, &c.service_account) {
                        (Some(r), _) => {
                            let key = r.key.as_deref().unwrap_or("api-key");
                            CloudCredentials::ApiKey(res.secret_string(&r.name, key).await?)
                        }
                        (None, Some(sa)) => {
                            let key = sa.jwt_secret_ref.key.as_deref().unwrap_or("jwt");
                            CloudCredentials::ServiceAccount {
                                tenant: sa.tenant_id.clone(),
                                jwt: res.secret_string(&sa.jwt_secret_ref.name, key).await?,
                            }
                        }
                        (None, None) => return Err(SignError::permanent("spec.cloud sets no credentials")),
                    };
                    let roots = match &c.ca_bundle_secret_ref {
                        Some(r) => Some(pem_text(res, r, "spec.cloud.caBundleSecretRef").await?),
                        None => None,
                    };
                    let timeout = spec.timeout();
                    Box::new(move || CloudClient::new(base, creds, roots.as_deref(), timeout).map(Backend::Cloud))
                }
            };
        // Building never logs in (login is lazy and single-flight inside the client); the cache
        // makes the check and concurrent signs share one client, so one issuer logs in once. A
        // client replacing an outdated one (new generation, a Secret changed) keeps its tokens
        // when it logs in as the same identity: no new login, and no start from a refresh token
        // TPP already rotated away.
        let previous = self.clients.previous(issuer);
        self.clients
            .get_or_try_insert_with(issuer, res, || async move {
                let mut backend = backend()?;
                let mut persisted = 0;
                if let (Backend::Tpp(new), Some(prev)) = (&mut backend, previous.as_deref())
                    && let Backend::Tpp(old) = &prev.backend
                    && new.continue_from(old).await
                {
                    persisted = *prev.persisted.lock().await;
                    debug!("the rebuilt TPP client continues the previous client's tokens");
                }
                Ok(Entry { backend, persisted: tokio::sync::Mutex::new(persisted) })
            })
            .await
    }

    async fn sign_tpp(
        &self,
        c: &TppClient,
        request: &SignRequest,
        issuer: &Issuer<VenafiIssuerSpec>,
        ctx: &mut SignContext,
    ) -> Result<Issued, SignError> {
        let spec = &issuer.spec;
        if let Some(dn) = ctx.state(state::PICKUP_ID).map(str::to_owned) {
            return self.pickup(c, request, issuer, ctx, &dn).await;
        }
        let body = request_body(request, issuer)?;
        let expected = format!("{}\\{}", body.policy_dn, body.object_name);
        if let Some(marker) = ctx.state(state::REQUEST_DN).map(str::to_owned) {
            // Restarted between the request call and saving its answer: look before asking again.
            match c.retrieve(&marker).await {
                Ok(Retrieved::Issued(bundle)) => {
                    if let Ok(issued) = Issued::from_pem_bundle(&bundle)
                        && issued.leaf_public_key_der().ok().as_deref() == Some(request.csr.public_key_der.as_slice())
                    {
                        info!(dn = %marker, "found the certificate of an earlier request; not requesting again");
                        return Ok(issued);
                    }
                }
                Ok(Retrieved::Pending(_)) => {
                    info!(dn = %marker, "an earlier request is being processed; adopting it");
                    ctx.set_state(state::PICKUP_ID, marker.clone());
                    ctx.save_state().await?;
                    return self.pickup(c, request, issuer, ctx, &marker).await;
                }
                Err(e) if classify(&e) == Verdict::Transient => return Err(tpp_error(e, spec, "retrieve")),
                Err(_) => {}
            }
        }
        ctx.set_state(state::REQUEST_DN, expected.clone());
        if ctx.state(state::REQUESTED_AT).is_none() {
            ctx.set_state(state::REQUESTED_AT, jiff::Timestamp::now().to_string());
        }
        ctx.save_state().await.map_err(|e| e.context("saving the request marker before calling TPP"))?;
        info!(dn = %expected, "requesting certificate at TPP");
        let dn = match c.request(&body).await {
            Ok(dn) => dn,
            Err(e) if classify(&e) == Verdict::ClickRetry && ctx.state(state::RESET_RETRIED).is_none() => {
                return self.reset_and_request(c, request, issuer, ctx, &expected, &e.to_string()).await;
            }
            Err(e) => return Err(tpp_error(e, spec, "request")),
        };
        ctx.set_state(state::PICKUP_ID, dn.clone());
        ctx.save_state().await.map_err(|e| e.context("saving the pickup ID"))?;
        self.pickup(c, request, issuer, ctx, &dn).await
    }

    async fn reset_and_request(
        &self,
        c: &TppClient,
        request: &SignRequest,
        issuer: &Issuer<VenafiIssuerSpec>,
        ctx: &mut SignContext,
        dn: &str,
        why: &str,
    ) -> Result<Issued, SignError> {
        let spec = &issuer.spec;
        warn!(dn, why, "TPP asks to click Retry: resetting the certificate object and requesting once more");
        c.reset(dn).await.map_err(|e| tpp_error(e, spec, "reset"))?;
        ctx.set_state(state::RESET_RETRIED, jiff::Timestamp::now().to_string());
        ctx.remove_state(state::PICKUP_ID);
        ctx.set_state(state::POLLS, "0");
        ctx.save_state().await?;
        let body = request_body(request, issuer)?;
        let new_dn = c.request(&body).await.map_err(|e| tpp_error(e, spec, "request after reset"))?;
        ctx.set_state(state::PICKUP_ID, new_dn.clone());
        ctx.save_state().await?;
        // Boxed: pickup may call back here (once: RESET_RETRIED is set now).
        Box::pin(self.pickup(c, request, issuer, ctx, &new_dn)).await
    }

    async fn pickup(
        &self,
        c: &TppClient,
        request: &SignRequest,
        issuer: &Issuer<VenafiIssuerSpec>,
        ctx: &mut SignContext,
        dn: &str,
    ) -> Result<Issued, SignError> {
        let spec = &issuer.spec;
        match c.retrieve(dn).await {
            Ok(Retrieved::Issued(bundle)) => {
                let issued = Issued::from_pem_bundle(&bundle)
                    .map_err(|m| SignError::permanent(format!("TPP returned {dn}: {m}")))?;
                // TPP names the object after the CN: a second request with the same name in the
                // zone re-enrolls the same object, and this pickup then finds the other key's
                // certificate. Say so, rather than the framework's generic key mismatch.
                if issued.leaf_public_key_der().ok().as_deref() != Some(request.csr.public_key_der.as_slice()) {
                    return Err(SignError::permanent(format!(
                        "TPP object {dn} holds a certificate for another key than this request's CSR: another request for the same object name in zone {:?} replaced this one at TPP (TPP names the object after the common name); give certificates that share a zone distinct common names, then delete this CertificateRequest",
                        spec.zone
                    )));
                }
                Ok(issued)
            }
            Ok(Retrieved::Pending(status)) => {
                Err(self.still_pending(spec, ctx, &format!("TPP is processing {dn}: {status}"))?)
            }
            Err(e) if classify(&e) == Verdict::ClickRetry => {
                if ctx.state(state::RESET_RETRIED).is_some() {
                    return Err(SignError::permanent(format!(
                        "TPP {dn}: {e}; already reset and requested once more: fix the problem in TPP, then delete this CertificateRequest"
                    )));
                }
                let expected = ctx.state(state::REQUEST_DN).unwrap_or(dn).to_owned();
                self.reset_and_request(c, request, issuer, ctx, &expected, &e.to_string()).await
            }
            Err(e) => Err(tpp_error(e, spec, "retrieve")),
        }
    }

    /// Pending with backoff, or Failed past `maxPendingTime`. Carries the reset condition when a
    /// reset happened (a condition lives only as long as it is returned).
    fn still_pending(
        &self,
        spec: &VenafiIssuerSpec,
        ctx: &mut SignContext,
        message: &str,
    ) -> Result<SignError, SignError> {
        let polls: u32 = ctx.state(state::POLLS).and_then(|p| p.parse().ok()).unwrap_or(0);
        ctx.set_state(state::POLLS, (polls + 1).to_string());
        let max = spec.max_pending_time().map_err(SignError::permanent)?;
        if let Some(at) = ctx.state(state::REQUESTED_AT).and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
            let waited = jiff::Timestamp::now().as_second() - at.as_second();
            if waited > max.as_secs() as i64 {
                return Err(SignError::permanent(format!(
                    "{message}; still not issued after spec.maxPendingTime ({}): Failed",
                    humantime::format_duration(max)
                )));
            }
        }
        let interval = spec.retrieve_interval().map_err(SignError::permanent)?;
        let after = FIRST_REQUEUE.saturating_mul(1u32 << polls.min(20)).min(interval);
        let mut e = SignError::pending(message.to_owned(), after);
        if let Some(at) = ctx.state(state::RESET_RETRIED) {
            e = SignError::pending(
                format!("{message} (reset and requested again at {at} after TPP asked to click Retry)"),
                after,
            )
            .with_condition(RESET_CONDITION, "True", "ResetAndRequested");
        }
        debug!(after = ?after, polls, "pending at Venafi");
        Ok(e)
    }

    async fn sign_cloud(
        &self,
        c: &CloudClient,
        request: &SignRequest,
        issuer: &Issuer<VenafiIssuerSpec>,
        ctx: &mut SignContext,
    ) -> Result<Issued, SignError> {
        let spec = &issuer.spec;
        let id = match ctx.state(state::CLOUD_REQUEST_ID) {
            Some(id) => id.to_owned(),
            None => {
                if request.object.annotations.contains_key(CUSTOM_FIELDS_ANNOTATION) {
                    return Err(SignError::permanent(format!(
                        "{CUSTOM_FIELDS_ANNOTATION} is a TPP feature: TLS Protect Cloud issuers do not send custom fields; remove the annotation"
                    )));
                }
                let (app, cit) = c.resolve_zone(&spec.zone).await.map_err(|e| cloud_error(e, spec, "zone lookup"))?;
                let id = c
                    .request(&request.csr_pem, &app, &cit, request.duration)
                    .await
                    .map_err(|e| cloud_error(e, spec, "request"))?;
                ctx.set_state(state::CLOUD_REQUEST_ID, id.clone());
                ctx.set_state(state::REQUESTED_AT, jiff::Timestamp::now().to_string());
                ctx.save_state().await.map_err(|e| e.context("saving the Cloud request id"))?;
                id
            }
        };
        let st = c.status(&id).await.map_err(|e| cloud_error(e, spec, "status"))?;
        match st.status.as_str() {
            "ISSUED" => {
                let leaf = st.certificate_ids.first().ok_or_else(|| {
                    SignError::transient(format!("Cloud request {id} is ISSUED without certificateIds"))
                })?;
                match c.contents(leaf).await.map_err(|e| cloud_error(e, spec, "contents"))? {
                    Some(pem) => Issued::from_pem_bundle(&pem)
                        .map_err(|m| SignError::permanent(format!("Cloud certificate {leaf}: {m}"))),
                    None => Err(self.still_pending(
                        spec,
                        ctx,
                        &format!("Cloud certificate {leaf} is not signed yet (409)"),
                    )?),
                }
            }
            s if s == "FAILED" || s.starts_with("REJECTED") || s == "CANCELLED" => {
                let why = st
                    .error_information
                    .as_ref()
                    .and_then(|e| e.get("message"))
                    .and_then(|m| m.as_str())
                    .unwrap_or("no errorInformation.message");
                Err(SignError::permanent(format!("TLS Protect Cloud request {id} is {s}: {why}")))
            }
            s => Err(self.still_pending(spec, ctx, &format!("TLS Protect Cloud request {id} is {s}"))?),
        }
    }
}

/// PEM text from the Secret key `r` names (`ca.crt` by default) for the CA bundle field `field`.
async fn pem_text(res: &Resources, r: &crate::spec::SecretKeySelector, field: &str) -> Result<String, SignError> {
    let key = r.key.as_deref().unwrap_or("ca.crt");
    let bytes = res.secret_key(&r.name, key).await?;
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        SignError::issuer_not_ready(format!(
            "Secret \"{}/{}\" key \"{key}\" ({field}) is not PEM text",
            res.namespace(),
            r.name
        ))
    })
}

/// The TPP `certificates/request` body for `request` (vcert's `prepareRequest` for a user CSR).
pub fn request_body(request: &SignRequest, issuer: &Issuer<VenafiIssuerSpec>) -> Result<RequestBody, SignError> {
    let spec = &issuer.spec;
    let csr = &request.csr;
    let object_name = csr
        .common_name
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| csr.dns_names.first().cloned())
        .or_else(|| csr.uris.first().cloned())
        .or_else(|| csr.emails.first().cloned())
        .or_else(|| csr.ip_addresses.first().map(ToString::to_string))
        .ok_or_else(|| {
            SignError::permanent(
                "the CSR has no common name, DNS name, URI, email or IP address: TPP needs one to name the certificate object",
            )
        })?;
    let mut sans = vec![];
    sans.extend(csr.dns_names.iter().map(|n| San { type_: 2, name: n.clone() }));
    sans.extend(csr.ip_addresses.iter().map(|n| San { type_: 7, name: n.to_string() }));
    sans.extend(csr.uris.iter().map(|n| San { type_: 6, name: n.clone() }));
    sans.extend(csr.emails.iter().map(|n| San { type_: 1, name: n.clone() }));
    let span = jiff::SignedDuration::try_from(request.duration)
        .map_err(|_| SignError::permanent(format!("the requested duration {:?} is too long", request.duration)))?;
    let end = jiff::Timestamp::now()
        .checked_add(span)
        .map_err(|_| SignError::permanent(format!("the requested duration {:?} is too long", request.duration)))?
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut attrs = vec![NameValue { name: "Origin".into(), value: ORIGIN.into() }];
    for a in [
        "Microsoft CA:Specific End Date",
        "DigiCert CA:Specific End Date",
        "EntrustNET CA:Specific End Date",
        "Specific End Date",
    ] {
        attrs.push(NameValue { name: a.into(), value: end.clone() });
    }
    let (key_algorithm, key_bit_size, elliptic_curve) = match &csr.key {
        KeyKind::Rsa { bits } => (Some("RSA".to_owned()), Some(*bits as u32), None),
        KeyKind::EcP256 => (Some("ECC".to_owned()), None, Some("P256".to_owned())),
        KeyKind::EcP384 => (Some("ECC".to_owned()), None, Some("P384".to_owned())),
        _ => (None, None, None),
    };
    let fields = crate::fields::merge(
        &spec.custom_fields,
        issuer.annotations.get(CUSTOM_FIELDS_ANNOTATION).map(String::as_str),
        request.object.annotations.get(CUSTOM_FIELDS_ANNOTATION).map(String::as_str),
        &spec.allowed_overrides,
    )?;
    Ok(RequestBody {
        policy_dn: client::policy_dn(&spec.zone),
        object_name,
        pkcs10: request.csr_pem.clone(),
        subject_alt_names: sans,
        ca_specific_attributes: attrs,
        origin: ORIGIN.into(),
        key_algorithm,
        key_bit_size,
        elliptic_curve,
        custom_fields: fields.into_iter().map(|(name, v)| CustomFieldBody { name, values: vec![v] }).collect(),
        disable_automatic_renewal: true,
        certificate_type: "AUTO".into(),
        reenable: true,
    })
}

/// A TPP error during `op` as the controller's reaction (the [`classify`] table).
pub fn tpp_error(e: VenafiError, spec: &VenafiIssuerSpec, op: &str) -> SignError {
    let msg = format!("TPP {op}: {e}");
    match (classify(&e), e) {
        (_, VenafiError::Auth(inner)) => inner.context(format!("TPP {op}")),
        (Verdict::Transient, _) => SignError::transient(msg),
        (Verdict::AuthFailed, _) => SignError::issuer_not_ready(format!(
            "AuthFailed: {msg}: the credentials in spec.tpp.credentialsRef are refused or lack scope {}",
            client::SCOPE
        )),
        (Verdict::ZoneNotFound, _) => SignError::issuer_not_ready(format!(
            "ZoneNotFound: spec.zone {:?} does not exist in TPP or these credentials cannot see it ({msg}): fix spec.zone or the TPP permissions",
            spec.zone
        )),
        (Verdict::ClickRetry, _) => {
            SignError::permanent(format!("{msg}: fix the problem in TPP, then delete this CertificateRequest"))
        }
        (Verdict::Failed(Some(fix)), _) => SignError::permanent(format!("{msg}: {fix}")),
        (Verdict::Failed(None), _) => SignError::permanent(msg),
    }
}

/// A Cloud error during `op` as the controller's reaction.
pub fn cloud_error(e: VenafiError, spec: &VenafiIssuerSpec, op: &str) -> SignError {
    let msg = format!("TLS Protect Cloud {op}: {e}");
    match e {
        VenafiError::Auth(inner) => inner.context(format!("TLS Protect Cloud {op}")),
        VenafiError::Transport(_) | VenafiError::BadBody(_) => SignError::transient(msg),
        VenafiError::Http { message, .. } if message.starts_with("ZoneNotFound") => {
            SignError::issuer_not_ready(format!("ZoneNotFound: spec.zone {:?}: {message}: fix spec.zone", spec.zone))
        }
        VenafiError::Http { status: 401 | 403, .. } => SignError::issuer_not_ready(format!("AuthFailed: {msg}")),
        VenafiError::Http { status: 408 | 429 | 500..=599, .. } => SignError::transient(msg),
        VenafiError::Http { .. } => SignError::permanent(msg),
    }
}

/// During a check everything but an invalid spec is "not ready": fixing a Secret or the zone at
/// Venafi must bring the issuer back without touching it.
fn for_check(e: SignError) -> SignError {
    match e.reaction {
        certbridge::Reaction::IssuerNotReady | certbridge::Reaction::Pending { .. } => e,
        _ => e.with_reaction(certbridge::Reaction::IssuerNotReady),
    }
}

#[async_trait]
impl Signer for VenafiSigner {
    type Spec = VenafiIssuerSpec;

    async fn sign(
        &self,
        request: &SignRequest,
        issuer: &Issuer<VenafiIssuerSpec>,
        ctx: &mut SignContext,
    ) -> Result<Issued, SignError> {
        self.recall(request, ctx);
        let result = self.sign_with_client(request, issuer, ctx).await;
        self.remember(request, ctx, &result);
        result
    }

    async fn check(
        &self,
        issuer: &Issuer<VenafiIssuerSpec>,
        resources: &Resources,
    ) -> Result<certbridge::Ready, SignError> {
        let entry = self.client(issuer, resources).await?;
        let spec = &issuer.spec;
        // cert-manager's issuer reasons (AuthFailed since v1.21), on the Ready=False condition.
        let reason = |verdict: Verdict, e: SignError| match verdict {
            Verdict::AuthFailed => e.with_reason("AuthFailed"),
            Verdict::ZoneNotFound => e.with_reason("ZoneNotFound"),
            _ => e,
        };
        let tpp = |op: &str, e: VenafiError| reason(classify(&e), for_check(tpp_error(e, spec, op)));
        let cloud = |op: &str, e: VenafiError| {
            let verdict = match &e {
                VenafiError::Auth(_) | VenafiError::Http { status: 401 | 403, .. } => Verdict::AuthFailed,
                VenafiError::Http { message, .. } if message.starts_with("ZoneNotFound") => Verdict::ZoneNotFound,
                _ => Verdict::Transient,
            };
            reason(verdict, for_check(cloud_error(e, spec, op)))
        };
        match &entry.backend {
            Backend::Tpp(c) => {
                let verified = c.verify().await;
                self.persist_refresh_token(issuer, resources, &entry).await;
                verified.map_err(|e| tpp("verify", e))?;
                let policy = c.check_policy(&spec.zone).await.map_err(|e| tpp("checkpolicy", e))?;
                let ca = policy.pointer("/Policy/CertificateAuthority/Value").and_then(|v| v.as_str());
                info!(zone = %spec.zone, ca, auth = c.mode(), "TPP issuer checked");
                Ok(certbridge::Ready::message(match ca {
                    Some(ca) => format!("TPP zone \"{}\" issues from CA {ca}", spec.zone),
                    None => format!("TPP zone \"{}\" is usable (its policy names no CA)", spec.zone),
                }))
            }
            Backend::Cloud(c) => {
                c.verify().await.map_err(|e| cloud("verify", e))?;
                let (app, cit) = c.resolve_zone(&spec.zone).await.map_err(|e| cloud("zone lookup", e))?;
                info!(zone = %spec.zone, app, cit, "TLS Protect Cloud issuer checked");
                Ok(certbridge::Ready::message(format!(
                    "TLS Protect Cloud zone \"{}\" is usable (application id {app}, issuing template id {cit})",
                    spec.zone
                )))
            }
        }
    }

    /// TPP only (see [`crate::revoke`]).
    fn revokes(&self, issuer: &Issuer<VenafiIssuerSpec>) -> bool {
        crate::revoke::supported(&issuer.spec)
    }

    async fn revoke(
        &self,
        certificate_pem: &str,
        request: &certbridge::RequestObject,
        issuer: &Issuer<VenafiIssuerSpec>,
        resources: &Resources,
    ) -> Result<(), SignError> {
        match &self.client(issuer, resources).await?.backend {
            Backend::Tpp(c) => crate::revoke::tpp(c, certificate_pem, request, &issuer.spec).await,
            Backend::Cloud(_) => Err(SignError::permanent("TLS Protect Cloud revocation is not supported")),
        }
    }
}

impl VenafiSigner {
    async fn sign_with_client(
        &self,
        request: &SignRequest,
        issuer: &Issuer<VenafiIssuerSpec>,
        ctx: &mut SignContext,
    ) -> Result<Issued, SignError> {
        let entry = self.client(issuer, ctx.resources()).await?;
        match &entry.backend {
            Backend::Tpp(c) => {
                if issuer.spec.tpp.as_ref().is_some_and(|t| t.persist_refreshed_token == Some(true)) {
                    // Rotate now if due and write the new token back before this request's own
                    // calls: a crash loses a rotated token only between TPP's answer and the
                    // write, not anywhere in the sign. (An error here is the sign's to report.)
                    let _ = c.token().await;
                    self.persist_refresh_token(issuer, ctx.resources(), &entry).await;
                }
                let result = self.sign_tpp(c, request, issuer, ctx).await;
                // A 401 inside the sign may have rotated the token again.
                self.persist_refresh_token(issuer, ctx.resources(), &entry).await;
                result
            }
            Backend::Cloud(c) => self.sign_cloud(c, request, issuer, ctx).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Issuer<VenafiIssuerSpec> {
        let spec: VenafiIssuerSpec = serde_json::from_value(serde_json::json!({
            "zone": "Certificates\\K8s",
            "tpp": {"url": "https://tpp.example.com/vedsdk", "credentialsRef": {"name": "c"}},
        }))
        .unwrap();
        Issuer {
            name: "v".into(),
            namespace: Some("ns".into()),
            scope: certbridge::IssuerScope::Namespaced,
            uid: String::new(),
            generation: 1,
            annotations: Default::default(),
            spec,
        }
    }

    fn request(f: impl FnOnce(&mut rcgen::CertificateParams)) -> SignRequest {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        f(&mut p);
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        SignRequest::from_csr_pem::<&str>(&pem, Duration::from_secs(86400), false, &[]).unwrap()
    }

    #[test]
    fn request_body_follows_vcert() {
        let r = request(|p| {
            p.subject_alt_names.push(rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap()));
            p.subject_alt_names.push(rcgen::SanType::URI("spiffe://x/y".try_into().unwrap()));
            p.subject_alt_names.push(rcgen::SanType::Rfc822Name("a@b.example".try_into().unwrap()));
        });
        let b = request_body(&r, &issuer()).unwrap();
        assert_eq!(b.policy_dn, "\\VED\\Policy\\Certificates\\K8s");
        assert_eq!(b.object_name, "spiffe://x/y", "no CN or DNS name: the first URI names the object");
        let sans: Vec<(u8, &str)> = b.subject_alt_names.iter().map(|s| (s.type_, s.name.as_str())).collect();
        assert_eq!(sans, vec![(7, "10.0.0.1"), (6, "spiffe://x/y"), (1, "a@b.example")]);
        assert_eq!(b.key_algorithm.as_deref(), Some("ECC"));
        assert_eq!(b.elliptic_curve.as_deref(), Some("P256"));
        let names: Vec<&str> = b.ca_specific_attributes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names[0], "Origin");
        assert!(names.contains(&"Microsoft CA:Specific End Date") && names.contains(&"Specific End Date"));
        let end: jiff::Timestamp = b.ca_specific_attributes[1].value.parse().unwrap();
        let hours = (end.as_second() - jiff::Timestamp::now().as_second()) / 3600;
        assert!((23..=24).contains(&hours), "{hours}");
        let empty = request(|_| {});
        assert!(request_body(&empty, &issuer()).unwrap_err().to_string().contains("TPP needs one"));
    }
}
