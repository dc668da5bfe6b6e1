//! One reconcile pass of a request, whichever its API: gate → validate → issuer readiness → sign →
//! verify → write status, event, metrics. The decisions are `decision::request`'s; what the API
//! contributes (status body, object reference) comes through [`RequestApi`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::Action;
use tracing::Instrument;

use crate::context::SignContext;
use crate::controllers::decision::READY;
use crate::controllers::decision::pending_limit;
use crate::controllers::decision::request::{self as decision, Gate, IssuerState, Outcome, Verdict};
use crate::controllers::request::api::RequestApi;
use crate::controllers::request::span;
use crate::controllers::shared::{Backoff, Error, Shared, action, issuer_ready, typed_issuer};
use crate::controllers::ssa;
use crate::controllers::state::AnnotationState;
use crate::controllers::state_mac;
use crate::controllers::view::{IssuerTarget, RequestView};
use crate::controllers::watch::Cache;
use crate::issuer::{IssuerScope, IssuerSpec};
use crate::metrics::RequestLabels;
use crate::resources::Resources;
use crate::signer::Signer;

/// How long a pass waits for the issuer caches' first list before it backs off.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Context of a request controller.
pub(crate) struct RequestCtx<S: Signer> {
    pub shared: Arc<Shared<S>>,
    /// The namespaced issuer cache; `None` when this controller never serves that kind (Kubernetes
    /// CSRs cannot name it, and `--disable-namespaced-issuers` turns it off), so no watch runs for it.
    pub namespaced_issuers: Option<Cache<DynamicObject>>,
    pub cluster_issuers: Cache<DynamicObject>,
    pub backoff: Backoff,
}

impl<S: Signer> RequestCtx<S> {
    /// The cache of the `scope` kind, if this controller watches it.
    pub(crate) fn issuers(&self, scope: IssuerScope) -> Option<&Cache<DynamicObject>> {
        match scope {
            IssuerScope::Namespaced => self.namespaced_issuers.as_ref(),
            IssuerScope::Cluster => Some(&self.cluster_issuers),
        }
    }
}

/// The backoff key of a request.
pub(crate) fn backoff_key(view: &RequestView) -> String {
    format!("{}/{}", view.kind_name(), view.display_name())
}

/// One reconcile pass for a request that names one of our issuers. `api` serves the request
/// object (used to save the signer's state).
pub(crate) async fn reconcile<S: Signer, R: RequestApi>(
    ctx: &RequestCtx<S>,
    view: RequestView,
    target: IssuerTarget,
    api: Api<R>,
) -> Result<Action, Error> {
    let shared = &ctx.shared;
    let field_manager = shared.settings.field_manager(R::CONTROLLER);
    let key = backoff_key(&view);
    let Some(outcome) = decide(ctx, &view, &target, api.clone(), &field_manager).await? else {
        ctx.backoff.reset(&key);
        return Ok(Action::await_change());
    };
    let finished = matches!(outcome.verdict, Some(Verdict::Issued | Verdict::Failed | Verdict::Denied));
    // A request is issued, failed or denied once: its event never repeats, and is created in the
    // background (see `event_sink`). Reserved before the status write so that a reader who sees
    // the status and flushes the sink sees the event; created only if the write succeeds.
    let ticket = match &outcome.event {
        Some(ev) if finished => {
            let issuer = Some(span::issuer_reference(&shared.kinds, &target));
            Some(shared.reserve_once(ev, object_reference::<R>(&view), issuer).await)
        }
        _ => None,
    };
    if let Some(body) = R::status_body(&view, &outcome, Timestamp::now()) {
        ssa::apply_status(&api, &view.name, &field_manager, body).await?;
    }
    if let Some(ticket) = ticket {
        ticket.commit();
    } else if let Some(ev) = &outcome.event {
        let issuer = Some(span::issuer_reference(&shared.kinds, &target));
        shared.publish_related(ev, &object_reference::<R>(&view), issuer).await;
    }
    if finished {
        shared.saved_states.forget(&view.uid);
    }
    let kind = shared.kinds.get(target.scope);
    if let Some(message) = &outcome.issuer_error {
        shared.issuer_errors.report(kind, &target, message);
    }
    if let Some(verdict) = outcome.verdict {
        shared
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                kind: view.kind_name().to_owned(),
                issuer_kind: kind.names.kind.clone(),
                issuer: match &target.namespace {
                    Some(ns) => format!("{ns}/{}", target.name),
                    None => target.name.clone(),
                },
                result: verdict.label().to_owned(),
            })
            .inc();
    }
    tracing::debug!(verdict = ?outcome.verdict, next = ?outcome.next, "request pass done");
    let result = action(&outcome.next);
    if result.is_ok() {
        ctx.backoff.reset(&key);
    }
    result
}

async fn decide<S: Signer, R: RequestApi>(
    ctx: &RequestCtx<S>,
    view: &RequestView,
    target: &IssuerTarget,
    api: Api<R>,
    field_manager: &str,
) -> Result<Option<Outcome>, Error> {
    let shared = &ctx.shared;
    match decision::gate(view) {
        Gate::Ignore(why) => {
            tracing::debug!(why, "ignoring request");
            return Ok(None);
        }
        Gate::Write(outcome) => return Ok(Some(outcome)),
        Gate::Continue => {}
    }
    // A request that can never be signed fails at once, whatever its issuer's state.
    let request = match view.sign_request_within(&shared.settings.csr_limits) {
        Ok(r) => r,
        Err(problem) => return Ok(Some(decision::invalid_request(view, &problem))),
    };

    let kind = shared.kinds.get(target.scope);
    let Some(cache) = ctx.issuers(target.scope) else {
        // Not reached: a request naming a kind this controller does not watch is ignored earlier.
        tracing::debug!(kind = %kind.names.kind, "this controller does not serve the issuer kind");
        return Ok(None);
    };
    if tokio::time::timeout(CACHE_SYNC_TIMEOUT, cache.ready.wait()).await.is_err() {
        return Err(Error::Retry(format!("the {} cache has not synced yet", kind.names.kind)));
    }
    let issuer_obj = cache.store.get(&kind.object_ref(target));
    let state = match &issuer_obj {
        None => IssuerState::Missing(kind.not_found(&target.name)),
        Some(obj) => decision::issuer_state(issuer_ready(obj).as_ref(), obj.metadata.generation.unwrap_or(0)),
    };
    if let Some(outcome) = decision::waiting_for_issuer(view, &state) {
        return Ok(Some(outcome));
    }
    let Some(issuer_obj) = issuer_obj else { return Ok(None) };
    let issuer = match typed_issuer::<S::Spec>(&issuer_obj, target.scope) {
        // Validated here too (the adapter never validates): the issuer controller may not have
        // caught up with a spec change yet.
        Ok(i) if i.spec.validate().is_ok() => i,
        _ => return Ok(decision::waiting_for_issuer(view, &IssuerState::Outdated)),
    };

    let group = shared.settings.group;
    // Only state this controller wrote (its MAC verifies) reaches the signer.
    let (saved, rejected) = state_mac::verified_state(&shared.state_key, view, group);
    if let Some(ev) = &rejected {
        shared.publish(ev, &object_reference::<R>(view)).await;
    }
    let store =
        AnnotationState::new(api, view, group, field_manager, shared.state_key.clone(), shared.saved_states.clone());
    let resources = Resources::new(shared.source.clone(), shared.resource_namespace(target));
    let mut sign_ctx = SignContext::new(resources, saved, Some(Arc::new(store)));
    if let Some(unsaved) = shared.saved_states.unsaved(&view.uid) {
        tracing::info!("handing sign the state a failed save could not write");
        sign_ctx.restore_unsaved(unsaved);
    }
    let started = Instant::now();
    let sign_span = span::sign();
    let result = shared.signer.sign(&request, &issuer, &mut sign_ctx).instrument(sign_span.clone()).await;
    span::record_sign(&sign_span, &result);
    let issuer_label = crate::metrics::issuer_label(target.namespace.as_deref(), &target.name);
    let sign_result = crate::metrics::sign_result(&result);
    shared.metrics.sign_observed(&kind.names.kind, issuer_label, sign_result, started.elapsed().as_secs_f64());
    if shared.outages.observe(target, &result, Instant::now()) {
        tracing::info!("repeated transient sign errors for this issuer; checking it again now");
        shared.issuer_errors.recheck(kind, target);
    }
    // Saved whatever the outcome: an asynchronous CA's request ID must survive a restart.
    let saved = sign_ctx.save_state().await;
    let result = decision::after_save(result, saved).and_then(|issued| decision::verify_issued(&request, issued));
    let now = Timestamp::now();
    let result = pending_limit::bound(view, result, now, shared.settings.max_pending);
    if let Err(e) = &result {
        tracing::info!(error = %e, "sign did not succeed");
    }
    Ok(Some(decision::after_sign(view, result, now, shared.settings.max_retry_duration)))
}

/// The reference events are published on: the API's own `apiVersion` and `kind`.
fn object_reference<R: RequestApi>(view: &RequestView) -> ObjectReference {
    ObjectReference {
        api_version: Some(R::api_version(&()).into_owned()),
        kind: Some(R::kind(&()).into_owned()),
        name: Some(view.name.clone()),
        namespace: view.namespace.clone(),
        uid: (!view.uid.is_empty()).then(|| view.uid.clone()),
        ..Default::default()
    }
}

/// A fingerprint of what should wake a request (issuer-lib's request predicate): annotations,
/// the set of conditions and every condition's status, Ready's left out, and the certificate.
/// issuer-lib counts Ready's appearance, because its Initializing write must wake the pass that
/// signs; we never write Initializing (see `decision::request`), so the Ready condition only ever
/// appears with a pass's own result — a pending answer must not re-run `sign` before the requeue
/// it asked for, nor an issuer problem before the issuer is re-checked.
pub(crate) fn fingerprint(view: &RequestView) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // The signer's own state annotations (and their MAC) are left out: saving state must not
    // re-run `sign` before the requeue it asked for.
    for (k, v) in &view.annotations {
        if !k.starts_with("state.") && !k.starts_with("statemac.") {
            (k, v).hash(&mut h);
        }
    }
    for c in view.conditions.iter().filter(|c| c.type_ != READY) {
        c.type_.hash(&mut h);
        c.status.hash(&mut h);
    }
    view.has_certificate.hash(&mut h);
    h.finish()
}

/// A fingerprint of what should wake the requests waiting on an issuer: its Ready condition's
/// status and observed generation, and its generation.
pub(crate) fn issuer_readiness_fingerprint(obj: &DynamicObject) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.metadata.generation.hash(&mut h);
    if let Some(c) = issuer_ready(obj) {
        c.status.hash(&mut h);
        c.observed_generation.hash(&mut h);
    }
    Some(h.finish())
}
