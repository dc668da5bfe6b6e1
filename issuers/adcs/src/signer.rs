//! The [`Signer`] for AD CS: submits to certsrv, persists the request ID before anything else,
//! polls pending requests, and builds the chain from the CA's own PKCS#7.
//!
//! ## Never submitting twice (as far as certsrv allows)
//! certsrv has no search: a request whose ID is lost cannot be found again. So the ID is written
//! to the request's state ([`SignContext::save_state`], key `req-id`) *as soon as the submit
//! answer is parsed*, before the certificate is fetched or anything else is done, and every later
//! call for a request with an ID only polls `certnew.cer?ReqID=N` — a restarted controller never
//! submits again. One window is left, and the protocol cannot close it: the submit has been sent
//! and certsrv has recorded it, but the answer has not been read and saved yet (crash, timeout,
//! reset, failed state write). The next attempt then submits again. The `submit-attempts` state
//! counter, saved *before* each submit, makes every such resubmission visible in a warning.
//!
//! ## Chain
//! `status.certificate` is the leaf plus the intermediates and `status.ca` the root, both from the
//! CA's `certnew.p7b`. The chain is cached per issuer; a leaf that no cached CA certificate signed
//! (the CA renewed its key) makes the signer fetch the chain again, trying the newest renewal
//! first and older ones after it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tracing::{info, warn};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use certbridge::{Issued, Issuer, IssuerCache, Resources, SignContext, SignError, SignRequest, Signer, async_trait};

use crate::client::{AdcsClient, AdcsError, Auth, ChannelBinding, Fetched};
use crate::pages::{CaError, StatusPage, SubmitPage, hresult};
use crate::spec::{
    AdcsIssuerSpec, ChannelBindingMode, DEFAULT_POLL_SECONDS, DEFAULT_TIMEOUT_SECONDS, GROUP, TEMPLATE_ANNOTATION,
};

/// State keys (stored as `state.adcs.certbridge.io/<key>` on the request).
pub mod state {
    /// certsrv's request ID, saved as soon as the submit answer names it.
    pub const REQ_ID: &str = "req-id";
    /// The template the request was submitted with.
    pub const TEMPLATE: &str = "template";
    /// How many submits were started for this request (saved before each one).
    pub const SUBMIT_ATTEMPTS: &str = "submit-attempts";
}

/// The request condition shown while a certificate manager has not decided.
pub const APPROVAL_CONDITION: &str = "AdcsApproval";

/// The AD CS signer. Clients (with their authenticated connections) and CA chains are kept per
/// issuer; a client (in the framework's [`IssuerCache`]) is rebuilt when the spec or a referenced
/// Secret/ConfigMap changes, built once however many calls ask at the same time, and dropped
/// when the issuer is deleted.
#[derive(Default)]
pub struct AdcsSigner {
    clients: IssuerCache<AdcsClient>,
    chains: Mutex<HashMap<String, Arc<Vec<Vec<u8>>>>>,
}

/// Connection counters summed over all clients (benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// TLS connections opened.
    pub connections: u64,
    /// NTLM handshakes.
    pub handshakes: u64,
    /// HTTP requests (handshake legs included).
    pub requests: u64,
}

fn utf8(bytes: Zeroizing<Vec<u8>>, what: &str) -> Result<Zeroizing<String>, SignError> {
    String::from_utf8(bytes.to_vec())
        .map(|s| Zeroizing::new(s.trim().to_owned()))
        .map_err(|_| SignError::issuer_not_ready(format!("{what} is not UTF-8 text: fix the Secret")))
}

/// The template for `request`: the annotation `adcs.certbridge.io/template` when the issuer's
/// `spec.allowedOverrides` allows it (and its value), else `spec.template`. Any other annotation
/// under `adcs.certbridge.io/` refuses the request (the framework's rule, [`certbridge::overrides`]).
pub fn template(request: &SignRequest, issuer: &Issuer<AdcsIssuerSpec>) -> Result<String, SignError> {
    let spec = &issuer.spec;
    let overrides = certbridge::overrides::resolve(GROUP, &request.object.annotations, &spec.allowed_overrides, &[])
        .map_err(|e| SignError::permanent(format!("{} {}: {e}", issuer.kind(), issuer.display_name())))?;
    let Some(value) = overrides.get(TEMPLATE_ANNOTATION) else {
        return Ok(spec.template.trim().to_owned());
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(SignError::permanent(format!(
            "annotation {GROUP}/{TEMPLATE_ANNOTATION} is empty: remove it or name a template"
        )));
    }
    Ok(value.to_owned())
}

/// What a certsrv error means for the request: template problems and unparsable requests are
/// permanent (naming the template and the fix), anything else may pass (CA service down, RPC).
pub fn classify(e: &CaError, template: &str, req_id: Option<u64>) -> SignError {
    let what = match req_id {
        Some(id) => format!("AD CS request {id}"),
        None => "AD CS".to_owned(),
    };
    match e.hresult {
        Some(hresult::UNSUPPORTED_CERT_TYPE) => SignError::permanent(format!(
            "{what}: template {template:?} is unknown or not published on this CA ({}): fix spec.template (use the template's name, not its display name) or publish it on the CA",
            e.message
        )),
        Some(hresult::TEMPLATE_DENIED) => SignError::permanent(format!(
            "{what}: the issuer's account may not enroll with template {template:?} ({}): grant it Enroll on the template or use another template",
            e.message
        )),
        Some(hresult::TEMPLATE_CONFLICT) => SignError::permanent(format!(
            "{what}: the request conflicts with template {template:?} ({}): check the template's subject and key requirements",
            e.message
        )),
        Some(hresult::PROPERTY_EMPTY) => SignError::permanent(format!(
            "{what}: certsrv does not know this request ID ({}); delete the CertificateRequest to submit anew",
            e.message
        )),
        _ if e.message.contains("Error Parsing Request") => {
            SignError::permanent(format!("{what}: the CA could not parse the CSR: {}", e.message))
        }
        _ => SignError::transient(format!("{what}: {}", e.message)),
    }
}

/// A wire error as the controller's reaction (on `sign`).
fn wire(e: AdcsError, op: &str) -> SignError {
    match &e {
        AdcsError::Unauthorized(m) => SignError::issuer_not_ready(format!("{op}: credentials refused: {m}")),
        AdcsError::Config(m) => SignError::issuer_not_ready(format!("{op}: {m}")),
        AdcsError::Http { status: 404, path, title, .. } => SignError::issuer_not_ready(format!(
            "{op}: {path} not found (HTTP 404, page {title:?}): is spec.url the certsrv base, e.g. https://ca.example.com/certsrv?"
        )),
        // A load balancer's 429 or HTTP.sys's 503 may say when to come back: no sooner.
        AdcsError::Http { retry_after: Some(d), .. } => SignError::transient(format!("{op}: {e}")).retry_after(*d),
        other => SignError::transient(format!("{op}: {other}")),
    }
}

impl AdcsSigner {
    /// A signer with empty caches.
    pub fn new() -> Self {
        AdcsSigner::default()
    }

    /// Connection counters summed over the cached clients.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in self.clients.values() {
            let s = c.stats();
            t.connections += s.connections.load(std::sync::atomic::Ordering::Relaxed);
            t.handshakes += s.handshakes.load(std::sync::atomic::Ordering::Relaxed);
            t.requests += s.requests.load(std::sync::atomic::Ordering::Relaxed);
        }
        t
    }

    /// The client for `issuer`, reused while nothing it was built from changed.
    pub async fn client(
        &self,
        issuer: &Issuer<AdcsIssuerSpec>,
        resources: &Resources,
    ) -> Result<Arc<AdcsClient>, SignError> {
        let spec = &issuer.spec;
        let auth_spec = &spec.auth;
        let mut identity: Option<(Zeroizing<String>, Zeroizing<String>)> = None;
        let auth = if let Some(n) = &auth_spec.ntlm {
            let mut data = resources.secret(&n.secret_name).await?;
            let ns = resources.namespace();
            let mut take = |key: &str| -> Result<Zeroizing<String>, SignError> {
                let v = data.remove(key).ok_or_else(|| {
                    SignError::issuer_not_ready(format!(
                        "Secret \"{ns}/{}\" has no key \"{key}\" (spec.auth.ntlm needs username and password, optionally domain)",
                        n.secret_name
                    ))
                })?;
                utf8(v, &format!("Secret \"{ns}/{}\" key \"{key}\"", n.secret_name))
            };
            let username = take("username")?;
            let password = take("password")?;
            let domain = take("domain").ok().filter(|d| !d.is_empty());
            Auth::Ntlm {
                username: username.to_string(),
                domain: domain.map(|d| d.to_string()),
                password,
                channel_binding: match n.channel_binding.unwrap_or(ChannelBindingMode::Auto) {
                    ChannelBindingMode::Auto => ChannelBinding::Auto,
                    ChannelBindingMode::Required => ChannelBinding::Required,
                    ChannelBindingMode::Off => ChannelBinding::Off,
                },
            }
        } else if let Some(k) = &auth_spec.kerberos {
            let timeout =
                Duration::from_secs(u64::from(spec.request_timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS)));
            let data = resources.secret(&k.secret_name).await?;
            // What the client is built from is covered by the Secret's resourceVersion (IssuerCache key).
            let (client, _material) = crate::kerberos::from_secret(k, &spec.url, resources.namespace(), data, timeout)?;
            Auth::Kerberos {
                client,
                channel_binding: match k.channel_binding.unwrap_or(ChannelBindingMode::Auto) {
                    ChannelBindingMode::Auto => ChannelBinding::Auto,
                    ChannelBindingMode::Required => ChannelBinding::Required,
                    ChannelBindingMode::Off => ChannelBinding::Off,
                },
            }
        } else if let Some(b) = &auth_spec.basic {
            let user = utf8(resources.secret_key(&b.secret_name, "username").await?, "basic username")?;
            let pass = utf8(resources.secret_key(&b.secret_name, "password").await?, "basic password")?;
            let header = Zeroizing::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", user.as_str(), pass.as_str()))
            ));
            Auth::Basic { header }
        } else if let Some(c) = &auth_spec.client_certificate {
            let crt = utf8(resources.secret_key(&c.secret_name, "tls.crt").await?, "client certificate tls.crt")?;
            let key = utf8(resources.secret_key(&c.secret_name, "tls.key").await?, "client certificate tls.key")?;
            identity = Some((crt, key));
            Auth::ClientCertificate
        } else {
            return Err(SignError::permanent(
                "spec.auth sets no method: set exactly one of ntlm, clientCertificate, basic",
            ));
        };
        // The framework reads the bundle (missing or not PEM: not ready, naming the object and key).
        let bundle = match &spec.ca_bundle {
            None => None,
            Some(b) => {
                Some(resources.ca_bundle(b).await?.iter().map(|der| certbridge::pki::to_pem(der)).collect::<String>())
            }
        };
        // Every Secret/ConfigMap was read through `resources` above, so the cache key covers them.
        let timeout = Duration::from_secs(u64::from(spec.request_timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS)));
        self.clients
            .get_or_try_insert_with(issuer, resources, || async {
                AdcsClient::new(
                    &spec.url,
                    bundle.as_deref(),
                    identity.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
                    auth,
                    timeout,
                )
                .map_err(|e| SignError::issuer_not_ready(e.to_string()))
            })
            .await
    }

    fn poll_interval(spec: &AdcsIssuerSpec) -> Duration {
        Duration::from_secs(u64::from(spec.poll_interval_seconds.unwrap_or(DEFAULT_POLL_SECONDS)))
    }

    fn waiting(spec: &AdcsIssuerSpec, req_id: u64, template: &str) -> SignError {
        SignError::pending(
            format!("AD CS request {req_id} (template {template:?}) is waiting for a certificate manager's approval"),
            Self::poll_interval(spec),
        )
        .with_condition(APPROVAL_CONDITION, "False", "WaitingForApproval")
    }

    /// Fetches the CA chain, newest renewal first, until one of its certificates signed `leaf`
    /// (any chain when `leaf` is `None`), and caches it.
    async fn refresh_chain(
        &self,
        client: &AdcsClient,
        key: &str,
        leaf: Option<&[u8]>,
    ) -> Result<Arc<Vec<Vec<u8>>>, SignError> {
        let n = client.renewals().await.map_err(|e| wire(e, "reading certcarc.asp"))?;
        for renewal in (0..=n).rev() {
            let chain = client.ca_chain(renewal).await.map_err(|e| wire(e, "downloading the CA chain"))?;
            if leaf.is_none_or(|l| issuing_cert(l, &chain).is_some()) {
                let chain = Arc::new(chain);
                self.chains.lock().expect("lock poisoned").insert(key.to_owned(), chain.clone());
                return Ok(chain);
            }
        }
        Err(SignError::transient(format!(
            "none of the CA's {} chain(s) from certnew.p7b holds the certificate that signed the issued leaf",
            n + 1
        )))
    }

    /// Leaf + intermediates + root, ordered by the framework.
    async fn assemble(&self, client: &AdcsClient, key: &str, leaf: Vec<u8>) -> Result<Issued, SignError> {
        let cached = self.chains.lock().expect("lock poisoned").get(key).cloned();
        let chain = match cached {
            Some(c) if issuing_cert(&leaf, &c).is_some() => c,
            Some(_) => {
                info!("the issued leaf is not signed by the cached CA chain (CA renewed?); fetching it again");
                self.refresh_chain(client, key, Some(&leaf)).await?
            }
            None => self.refresh_chain(client, key, Some(&leaf)).await?,
        };
        let path = chain_path(&leaf, &chain);
        Issued::from_der_certs(path).map_err(|m| SignError::transient(format!("AD CS chain: {m}")))
    }

    async fn poll(
        &self,
        client: &AdcsClient,
        issuer: &Issuer<AdcsIssuerSpec>,
        request: &SignRequest,
        req_id: u64,
        template: &str,
    ) -> Result<Issued, SignError> {
        match client.fetch(req_id).await.map_err(|e| wire(e, &format!("polling AD CS request {req_id}")))? {
            Fetched::Certificate(der) => {
                let (_, x) = X509Certificate::from_der(&der).map_err(|e| {
                    SignError::transient(format!("AD CS request {req_id}: the certificate does not parse: {e}"))
                })?;
                if x.public_key().raw != request.csr.public_key_der.as_slice() {
                    return Err(SignError::permanent(format!(
                        "AD CS request {req_id} answered a certificate for another key than this request's CSR (not stored): the request state {} does not belong to this request, or something between certsrv and this controller swapped the answer",
                        state::REQ_ID
                    )));
                }
                self.assemble(client, &issuer.object_key(), der).await
            }
            Fetched::NotIssued(StatusPage::Pending) => Err(Self::waiting(&issuer.spec, req_id, template)),
            Fetched::NotIssued(StatusPage::Denied(e)) => {
                Err(SignError::permanent(format!("AD CS request {req_id} was denied: {}", e.message)))
            }
            Fetched::NotIssued(StatusPage::Error(e)) => Err(classify(&e, template, Some(req_id))),
            Fetched::NotIssued(StatusPage::Unknown { title }) => Err(SignError::transient(format!(
                "AD CS request {req_id}: certsrv answered with a page this issuer does not understand (title {title:?})"
            ))),
        }
    }
}

/// The certificate in `chain` that signed `leaf`, if any.
fn issuing_cert<'a>(leaf: &[u8], chain: &'a [Vec<u8>]) -> Option<&'a [u8]> {
    let (_, l) = X509Certificate::from_der(leaf).ok()?;
    chain.iter().map(Vec::as_slice).find(|c| {
        X509Certificate::from_der(c).is_ok_and(|(_, ca)| {
            ca.subject().as_raw() == l.issuer().as_raw() && l.verify_signature(Some(ca.public_key())).is_ok()
        })
    })
}

/// `leaf` and, from `chain`, the certificates up its signature path (other certificates of the
/// bag are left out: the framework refuses certificates outside the leaf's chain).
fn chain_path(leaf: &[u8], chain: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut path = vec![leaf.to_vec()];
    while path.len() <= chain.len() {
        let cur = path.last().expect("non-empty");
        match issuing_cert(cur, chain) {
            Some(next) if !path.iter().any(|p| p == next) => path.push(next.to_vec()),
            _ => break,
        }
    }
    path
}

/// The subject of the CA certificate that issues (the first non-self-signed certificate of the
/// bag, else the first one), for messages.
fn ca_subject(chain: &[Vec<u8>]) -> String {
    let parsed: Vec<_> = chain.iter().filter_map(|c| X509Certificate::from_der(c).ok().map(|(_, x)| x)).collect();
    parsed
        .iter()
        .find(|x| x.subject().as_raw() != x.issuer().as_raw())
        .or(parsed.first())
        .map(|x| x.subject().to_string())
        .unwrap_or_default()
}

#[async_trait]
impl Signer for AdcsSigner {
    type Spec = AdcsIssuerSpec;

    async fn sign(
        &self,
        request: &SignRequest,
        issuer: &Issuer<AdcsIssuerSpec>,
        ctx: &mut SignContext,
    ) -> Result<Issued, SignError> {
        let client = self.client(issuer, ctx.resources()).await?;
        if let Some(id) = ctx.state(state::REQ_ID) {
            // Submitted before (maybe by a controller that has since restarted): only poll.
            let req_id: u64 = id
                .parse()
                .map_err(|_| SignError::permanent(format!("request state {}={id:?} is not a number", state::REQ_ID)))?;
            let template = ctx.state(state::TEMPLATE).unwrap_or(&issuer.spec.template).to_owned();
            return self.poll(&client, issuer, request, req_id, &template).await;
        }
        let template = template(request, issuer)?;
        let attempts: u32 = ctx.state(state::SUBMIT_ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(0);
        if attempts > 0 {
            warn!(
                attempts,
                "an earlier submit of this request may have reached the CA without its answer being saved; certsrv has no search, so submitting again"
            );
        }
        ctx.set_state(state::TEMPLATE, template.clone());
        ctx.set_state(state::SUBMIT_ATTEMPTS, (attempts + 1).to_string());
        ctx.save_state().await.map_err(|e| e.context("saving the submit marker before calling AD CS"))?;
        info!(template = %template, "submitting the CSR to AD CS");
        let page = client.submit(&request.csr_pem, &template).await.map_err(|e| wire(e, "submitting to AD CS"))?;
        let req_id = match &page {
            SubmitPage::Issued { req_id } | SubmitPage::Pending { req_id } | SubmitPage::Denied { req_id, .. } => {
                Some(*req_id)
            }
            _ => None,
        };
        if let Some(id) = req_id {
            // Before anything else: from here on, a restart only polls.
            ctx.set_state(state::REQ_ID, id.to_string());
            if let Err(e) = ctx.save_state().await {
                warn!(req_id = id, error = %e, "AD CS recorded the request but its ID could not be saved; the controller keeps it in memory for the next attempt, a restart before it is saved submits again");
                return Err(e.context(format!("saving AD CS request ID {id}")));
            }
            info!(req_id = id, "AD CS request ID saved");
        }
        match page {
            SubmitPage::Issued { req_id } => self.poll(&client, issuer, request, req_id, &template).await,
            SubmitPage::Pending { req_id } => Err(Self::waiting(&issuer.spec, req_id, &template)),
            SubmitPage::Denied { req_id, message } => {
                let e = CaError {
                    hresult: crate::pages::text(&message).split_whitespace().find_map(|w| {
                        w.trim_end_matches(',').strip_prefix("0x").and_then(|h| u32::from_str_radix(h, 16).ok())
                    }),
                    message,
                };
                Err(match classify(&e, &template, Some(req_id)) {
                    t if t.reaction == certbridge::Reaction::Transient => {
                        SignError::permanent(format!("AD CS request {req_id} was denied: {}", e.message))
                    }
                    other => other,
                })
            }
            SubmitPage::Error(e) => Err(classify(&e, &template, None)),
            SubmitPage::Unknown { title } => Err(SignError::transient(format!(
                "AD CS answered the submit with a page this issuer does not understand (title {title:?}); no certificate taken from it"
            ))),
        }
    }

    async fn check(
        &self,
        issuer: &Issuer<AdcsIssuerSpec>,
        resources: &Resources,
    ) -> Result<certbridge::Ready, SignError> {
        let client = self.client(issuer, resources).await?;
        let not_ready = |e: SignError| match e.reaction {
            certbridge::Reaction::Transient => e.with_reaction(certbridge::Reaction::IssuerNotReady),
            _ => e,
        };
        client.probe().await.map_err(|e| not_ready(wire(e, &format!("authenticating to {}", issuer.spec.url))))?;
        let chain = self.refresh_chain(&client, &issuer.object_key(), None).await.map_err(not_ready)?;
        let ca = ca_subject(&chain);
        info!(ca = %ca, auth = client.auth_name(), "AD CS issuer checked");
        Ok(certbridge::Ready::message(match ca.is_empty() {
            false => format!("signing with AD CS CA {ca}"),
            true => format!("signing with AD CS at {} (its CA certificate has no readable subject)", issuer.spec.url),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AllowedOverride, AuthSpec, NtlmAuth};

    fn issuer(overrides: Vec<AllowedOverride>) -> Issuer<AdcsIssuerSpec> {
        Issuer {
            name: "adcs".into(),
            namespace: Some("ns".into()),
            scope: certbridge::IssuerScope::Namespaced,
            uid: "u".into(),
            generation: 1,
            annotations: Default::default(),
            spec: AdcsIssuerSpec {
                url: "https://ca/certsrv".into(),
                template: "WebServer".into(),
                allowed_overrides: overrides,
                auth: AuthSpec {
                    ntlm: Some(NtlmAuth { secret_name: "c".into(), channel_binding: None }),
                    ..Default::default()
                },
                ca_bundle: None,
                poll_interval_seconds: None,
                request_timeout_seconds: None,
            },
        }
    }

    fn request(annotation: Option<&str>) -> SignRequest {
        let (pem, _) = certbridge::testing::generate_csr(&certbridge::KeyKind::EcP256, &["a.example.com"]).unwrap();
        let mut r = SignRequest::from_csr_pem::<&str>(&pem, Duration::from_secs(3600), false, &[]).unwrap();
        if let Some(a) = annotation {
            r.object.annotations.insert(format!("{GROUP}/{TEMPLATE_ANNOTATION}"), a.into());
        }
        r
    }

    fn reaction(e: &SignError) -> &'static str {
        match e.reaction {
            certbridge::Reaction::Pending { .. } => "pending",
            certbridge::Reaction::Permanent => "permanent",
            certbridge::Reaction::IssuerNotReady => "issuer-not-ready",
            certbridge::Reaction::Transient => "transient",
        }
    }

    #[test]
    fn template_overrides_follow_allowed_overrides() {
        assert_eq!(template(&request(None), &issuer(vec![])).unwrap(), "WebServer");
        let e = template(&request(Some("SubCA")), &issuer(vec![])).unwrap_err();
        assert_eq!(reaction(&e), "permanent");
        assert!(e.to_string().contains("spec.allowedOverrides"), "{e}");
        let any = vec![AllowedOverride { name: "template".into(), values: vec![] }];
        assert_eq!(template(&request(Some("Other")), &issuer(any)).unwrap(), "Other");
        let some = vec![AllowedOverride { name: "template".into(), values: vec!["A".into()] }];
        assert_eq!(template(&request(Some("A")), &issuer(some.clone())).unwrap(), "A");
        let e = template(&request(Some("SubCA")), &issuer(some)).unwrap_err();
        assert!(e.to_string().contains("allows template only to be one of [\"A\"]"), "{e}");
        assert_eq!(reaction(&template(&request(Some(" ")), &issuer(vec![])).unwrap_err()), "permanent");
    }

    #[test]
    fn errors_are_classified() {
        let e = |h: u32, m: &str| CaError { hresult: Some(h), message: m.into() };
        let t = classify(&e(hresult::UNSUPPORTED_CERT_TYPE, "x"), "Nope", None);
        assert_eq!(reaction(&t), "permanent");
        assert!(t.to_string().contains("\"Nope\"") && t.to_string().contains("spec.template"));
        assert!(classify(&e(hresult::TEMPLATE_DENIED, "x"), "T", None).to_string().contains("Enroll"));
        assert_eq!(reaction(&classify(&e(hresult::TEMPLATE_CONFLICT, "x"), "T", None)), "permanent");
        let parse = CaError { hresult: Some(0x8009310b), message: "Error Parsing Request bad tag".into() };
        assert_eq!(reaction(&classify(&parse, "T", None)), "permanent");
        let rpc = CaError { hresult: Some(0x800706ba), message: "The RPC server is unavailable.".into() };
        assert_eq!(reaction(&classify(&rpc, "T", None)), "transient");
        assert_eq!(reaction(&wire(AdcsError::Unauthorized("x".into()), "op")), "issuer-not-ready");
        assert!(wire(AdcsError::Unauthorized("x".into()), "op").to_string().contains("credentials refused"));
        assert_eq!(reaction(&wire(AdcsError::Transport("reset".into()), "op")), "transient");
        let busy =
            |retry_after| AdcsError::Http { status: 429, path: "/certsrv/".into(), title: "".into(), retry_after };
        let e = wire(busy(Some(Duration::from_secs(7))), "op");
        assert_eq!((reaction(&e), e.retry_after), ("transient", Some(Duration::from_secs(7))));
        assert!(e.to_string().contains("HTTP 429") && e.to_string().contains("Retry-After 7 s"), "{e}");
        assert_eq!(wire(busy(None), "op").retry_after, None);
    }
}
