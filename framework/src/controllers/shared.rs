//! What every controller shares: the signer, the client, settings, the event recorder, metrics,
//! the issuer-error channel from request controllers to issuer controllers, the objects each
//! issuer read during its last check, and per-object backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::core::ApiResource;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::controllers::decision::issuer::References as ReferencesState;
use crate::controllers::decision::{EventOut, IssuerCond, Next};
use crate::controllers::view::IssuerTarget;
use crate::issuer::{Issuer, IssuerScope, IssuerSpec, KindNames};
use crate::metrics::Metrics;
use crate::resources::{Reference, ResourceSource};
use crate::signer::Signer;

/// Settings the controllers read.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The identity in Initializing messages: the adapter's API group.
    pub owner: String,
    /// The adapter's API group (state annotations live under it).
    pub group: &'static str,
    pub cluster_resource_namespace: String,
    pub max_retry_duration: Duration,
    pub issuer_recheck_interval: Duration,
    /// Serve the namespaced issuer kind (`--disable-namespaced-issuers` turns it off).
    pub namespaced_issuers: bool,
    pub csr_limits: crate::pki::CsrLimits,
    /// How long a request may stay Pending at the CA before it fails (`--max-pending`).
    pub max_pending: Duration,
}

impl Settings {
    /// Whether the issuer kind of `scope` is served: watched, reconciled, and signed for.
    pub(crate) fn serves(&self, scope: IssuerScope) -> bool {
        match scope {
            IssuerScope::Namespaced => self.namespaced_issuers,
            IssuerScope::Cluster => true,
        }
    }

    /// The field manager of one controller, e.g. `demo.certbridge.io/certificaterequests`.
    pub(crate) fn field_manager(&self, controller: &str) -> String {
        format!("{}/{controller}", self.group)
    }
}

/// One of the adapter's two issuer kinds.
#[derive(Debug, Clone)]
pub(crate) struct Kind {
    pub names: KindNames,
    pub resource: ApiResource,
}

impl Kind {
    pub(crate) fn of<S: IssuerSpec>(scope: IssuerScope) -> Self {
        let names = KindNames::of::<S>(scope);
        let resource = ApiResource {
            group: names.group.to_owned(),
            version: crate::issuer::API_VERSION.to_owned(),
            api_version: names.api_version(),
            kind: names.kind.clone(),
            plural: names.plural.clone(),
        };
        Kind { names, resource }
    }

    /// The cache key of an issuer of this kind.
    pub(crate) fn object_ref(&self, target: &IssuerTarget) -> ObjectRef<DynamicObject> {
        let r = ObjectRef::new_with(&target.name, self.resource.clone());
        match &target.namespace {
            Some(ns) => r.within(ns),
            None => r,
        }
    }

    /// Kubernetes' NotFound wording, which issuer-lib puts in the Pending message.
    pub(crate) fn not_found(&self, name: &str) -> String {
        format!("{}.{} \"{name}\" not found", self.names.plural, self.names.group)
    }
}

/// Both kinds.
#[derive(Debug, Clone)]
pub(crate) struct Kinds {
    pub namespaced: Kind,
    pub cluster: Kind,
}

impl Kinds {
    pub(crate) fn of<S: IssuerSpec>() -> Self {
        Kinds { namespaced: Kind::of::<S>(IssuerScope::Namespaced), cluster: Kind::of::<S>(IssuerScope::Cluster) }
    }

    pub(crate) fn get(&self, scope: IssuerScope) -> &Kind {
        match scope {
            IssuerScope::Namespaced => &self.namespaced,
            IssuerScope::Cluster => &self.cluster,
        }
    }
}

/// Issuer problems found while signing, waiting for the issuer controller (issuer-lib's
/// `EventSource.ReportError`): the message is kept until the issuer's next reconcile takes it,
/// and the issuer is queued for reconciliation at once.
#[derive(Default)]
pub(crate) struct IssuerErrors {
    errors: Mutex<HashMap<IssuerTarget, String>>,
    triggers: Mutex<HashMap<IssuerScope, mpsc::UnboundedSender<ObjectRef<DynamicObject>>>>,
}

impl IssuerErrors {
    /// The trigger stream for one issuer kind.
    pub(crate) fn subscribe(&self, scope: IssuerScope) -> mpsc::UnboundedReceiver<ObjectRef<DynamicObject>> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut t) = self.triggers.lock() {
            t.insert(scope, tx);
        }
        rx
    }

    pub(crate) fn report(&self, kind: &Kind, target: &IssuerTarget, message: &str) {
        if let Ok(mut e) = self.errors.lock() {
            e.insert(target.clone(), message.to_owned());
        }
        self.recheck(kind, target);
    }

    /// Queues `target` for reconciliation without reporting an error: a Ready issuer is checked
    /// again at once (see `outage`).
    pub(crate) fn recheck(&self, kind: &Kind, target: &IssuerTarget) {
        if let Ok(t) = self.triggers.lock()
            && let Some(tx) = t.get(&target.scope)
        {
            let _ = tx.send(kind.object_ref(target));
        }
    }

    /// Takes the reported error of `target`, clearing it.
    pub(crate) fn take(&self, target: &IssuerTarget) -> Option<String> {
        self.errors.lock().ok()?.remove(target)
    }
}

/// What each issuer read during its last check, with the `resourceVersion` it saw, to re-check
/// the issuer when one of them changes (even a Failed one: see [`crate::controllers::decision::issuer::issuer_gate`]).
#[derive(Default)]
pub(crate) struct References {
    by_issuer: Mutex<HashMap<IssuerTarget, Observed>>,
}

struct Observed {
    versions: BTreeMap<Reference, Option<String>>,
    changed: bool,
}

impl References {
    /// What the check of `target` just read.
    pub(crate) fn set(&self, target: &IssuerTarget, versions: BTreeMap<Reference, Option<String>>) {
        if let Ok(mut m) = self.by_issuer.lock() {
            m.insert(target.clone(), Observed { versions, changed: false });
        }
    }

    /// `reference` now has `version` (`None`: deleted): the issuers of `scope` that read it, the
    /// ones that saw another version marked changed.
    pub(crate) fn touched(
        &self,
        scope: IssuerScope,
        reference: &Reference,
        version: Option<&str>,
    ) -> Vec<IssuerTarget> {
        let Ok(mut m) = self.by_issuer.lock() else { return vec![] };
        let mut readers = Vec::new();
        for (t, o) in m.iter_mut().filter(|(t, _)| t.scope == scope) {
            if let Some(seen) = o.versions.get(reference) {
                if seen.as_deref() != version {
                    o.changed = true;
                }
                readers.push(t.clone());
            }
        }
        readers
    }

    /// Whether what `target` read changed since its last check (and forget that it did).
    pub(crate) fn take(&self, target: &IssuerTarget) -> ReferencesState {
        let Ok(mut m) = self.by_issuer.lock() else { return ReferencesState::Unknown };
        match m.get_mut(target).map(|o| std::mem::take(&mut o.changed)) {
            None => ReferencesState::Unknown,
            Some(true) => ReferencesState::Changed,
            Some(false) => ReferencesState::Unchanged,
        }
    }

    /// Forgets a deleted issuer.
    pub(crate) fn remove(&self, target: &IssuerTarget) {
        if let Ok(mut m) = self.by_issuer.lock() {
            m.remove(target);
        }
    }
}

/// Per-object exponential backoff for reconcile errors: 500 ms doubling up to 5 minutes, reset
/// by any pass that ends without an error.
#[derive(Default)]
pub(crate) struct Backoff {
    attempts: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(300);

    pub(crate) fn next(&self, key: &str) -> Duration {
        let Ok(mut m) = self.attempts.lock() else { return Self::MAX };
        let n = m.entry(key.to_owned()).or_insert(0);
        let delay = Self::BASE.saturating_mul(1u32 << (*n).min(20)).min(Self::MAX);
        *n = n.saturating_add(1);
        delay
    }

    pub(crate) fn reset(&self, key: &str) {
        if let Ok(mut m) = self.attempts.lock() {
            m.remove(key);
        }
    }
}

/// Everything the controllers share.
pub(crate) struct Shared<S: Signer> {
    pub signer: Arc<S>,
    pub client: kube::Client,
    pub settings: Settings,
    pub kinds: Kinds,
    pub source: Arc<dyn ResourceSource>,
    pub recorder: Recorder,
    /// Creates the once-per-request events in the background ([`Shared::reserve_once`]).
    pub events: crate::controllers::event_sink::EventSink,
    pub metrics: Arc<Metrics>,
    pub issuer_errors: IssuerErrors,
    pub references: References,
    /// Authenticates the per-request state (`state_auth`; key from the controller's Secret).
    pub state_key: Arc<crate::state_auth::StateKey>,
    /// The last state this process saved per request (`state_cache`).
    pub saved_states: Arc<crate::controllers::state_cache::SavedStates>,
    /// Transient sign errors per issuer, to re-check an issuer during a CA outage (`outage`).
    pub outages: crate::controllers::outage::Outages,
}

impl<S: Signer> Shared<S> {
    /// The namespace an issuer reads Secrets/ConfigMaps in.
    pub(crate) fn resource_namespace(&self, target: &IssuerTarget) -> String {
        match target.scope {
            IssuerScope::Namespaced => target.namespace.clone().unwrap_or_default(),
            IssuerScope::Cluster => self.settings.cluster_resource_namespace.clone(),
        }
    }

    /// Publishes an event; a failure is logged, never fatal.
    pub(crate) async fn publish(&self, ev: &EventOut, reference: &k8s_openapi::api::core::v1::ObjectReference) {
        self.publish_related(ev, reference, None).await
    }

    /// [`Shared::publish`] with the event's `related` object (a request's issuer): the note stays
    /// issuer-lib's exact message, and the issuer is on the event as an object reference instead.
    pub(crate) async fn publish_related(
        &self,
        ev: &EventOut,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
    ) {
        let event = Event {
            type_: if ev.warning { EventType::Warning } else { EventType::Normal },
            reason: ev.reason.to_owned(),
            note: Some(truncate(&ev.note, 1000)),
            action: ev.action.to_owned(),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!(error = %e, reason = ev.reason, "cannot publish event");
        }
    }

    /// Reserves an event that is sent once per object (a request's final Issued/Failed/Denied):
    /// it is created in the background once the returned ticket is committed, after the status
    /// write it reports (see `event_sink`). It bypasses kube's [`Recorder`] and its series cache:
    /// the recorder keeps every event for 6 minutes to count repeats and scans the whole cache on
    /// each publish, so at 100 requests/s it held ~36,000 events and its scan was the
    /// controller's hottest function (issue 16). Repeating events (retries, waits) still go
    /// through [`Shared::publish`].
    pub(crate) async fn reserve_once(
        &self,
        ev: &EventOut,
        reference: k8s_openapi::api::core::v1::ObjectReference,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
    ) -> crate::controllers::event_sink::Ticket {
        self.events.reserve(ev, reference, related).await
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Errors that end a reconcile pass (and trigger backoff).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Retry(String),
    /// Retry with backoff, but no sooner than the duration (the CA's `Retry-After`).
    #[error("{0}")]
    RetryNoSooner(String, Duration),
}

impl Error {
    /// The earliest retry this error allows, if it sets one.
    pub(crate) fn no_sooner_than(&self) -> Option<Duration> {
        match self {
            Error::RetryNoSooner(_, d) => Some(*d),
            _ => None,
        }
    }
}

/// The reconcile result for a decision's `next`.
pub(crate) fn action(next: &Next) -> Result<kube::runtime::controller::Action, Error> {
    use kube::runtime::controller::Action;
    match next {
        Next::Done => Ok(Action::await_change()),
        Next::After(d) => Ok(Action::requeue(*d)),
        Next::Backoff(msg) => Err(Error::Retry(msg.clone())),
        Next::BackoffNoSooner(msg, d) => Err(Error::RetryNoSooner(msg.clone(), *d)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LenientCondition {
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    observed_generation: i64,
    #[serde(default)]
    last_transition_time: Option<Timestamp>,
}

/// The Ready condition of an issuer object.
pub(crate) fn issuer_ready(obj: &DynamicObject) -> Option<IssuerCond> {
    let conditions = obj.data.get("status")?.get("conditions")?.clone();
    let conditions: Vec<LenientCondition> = serde_json::from_value(conditions).ok()?;
    conditions.into_iter().find(|c| c.type_ == "Ready").map(|c| IssuerCond {
        status: c.status,
        reason: c.reason,
        message: c.message,
        observed_generation: c.observed_generation,
        last_transition_time: c.last_transition_time,
    })
}

/// The typed issuer; the error names the spec field that does not fit `S`.
pub(crate) fn typed_issuer<S: IssuerSpec>(obj: &DynamicObject, scope: IssuerScope) -> Result<Issuer<S>, String> {
    let spec = obj.data.get("spec").cloned().unwrap_or(serde_json::Value::Null);
    let spec: S = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "spec".to_owned() } else { format!("spec.{path}") };
        format!("invalid issuer spec: {path}: {}", e.inner())
    })?;
    Ok(Issuer {
        name: obj.metadata.name.clone().unwrap_or_default(),
        namespace: match scope {
            IssuerScope::Namespaced => obj.metadata.namespace.clone(),
            IssuerScope::Cluster => None,
        },
        scope,
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        generation: obj.metadata.generation.unwrap_or(0),
        annotations: obj.metadata.annotations.clone().unwrap_or_default(),
        spec,
    })
}

/// The target an issuer object is.
pub(crate) fn issuer_target(obj: &DynamicObject, scope: IssuerScope) -> IssuerTarget {
    IssuerTarget {
        scope,
        name: obj.metadata.name.clone().unwrap_or_default(),
        namespace: match scope {
            IssuerScope::Namespaced => obj.metadata.namespace.clone(),
            IssuerScope::Cluster => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemars::JsonSchema;
    use serde::Serialize;

    #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Spec {
        url: String,
        auth: Auth,
    }
    #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    struct Auth {
        token_secret: String,
        ttl: u32,
    }
    impl IssuerSpec for Spec {
        const GROUP: &'static str = "demo.certbridge.io";
        const NAME: &'static str = "Demo";
    }

    fn obj(spec: serde_json::Value, status: serde_json::Value) -> DynamicObject {
        let kind = Kind::of::<Spec>(IssuerScope::Namespaced);
        let mut o = DynamicObject::new("ca", &kind.resource).within("ns");
        o.metadata.generation = Some(3);
        o.data = serde_json::json!({ "spec": spec, "status": status });
        o
    }

    #[test]
    fn bad_spec_names_the_field_path() {
        let o = obj(serde_json::json!({"url": "https://ca", "auth": {"tokenSecret": "t", "ttl": "ten"}}), json_null());
        let e = typed_issuer::<Spec>(&o, IssuerScope::Namespaced).unwrap_err();
        assert!(e.starts_with("invalid issuer spec: spec.auth.ttl: invalid type"), "{e}");
        let o = obj(serde_json::json!({"url": "https://ca"}), json_null());
        let e = typed_issuer::<Spec>(&o, IssuerScope::Namespaced).unwrap_err();
        assert!(e.contains("missing field `auth`"), "{e}");
        let o = obj(serde_json::json!({"url": "https://ca", "auth": {"tokenSecret": "t", "ttl": 10}}), json_null());
        let i = typed_issuer::<Spec>(&o, IssuerScope::Namespaced).unwrap();
        assert_eq!((i.generation, i.namespace.as_deref(), i.spec.auth.ttl), (3, Some("ns"), 10));
    }

    fn json_null() -> serde_json::Value {
        serde_json::Value::Null
    }

    #[test]
    fn ready_condition_is_read_leniently() {
        let o = obj(
            json_null(),
            serde_json::json!({"conditions": [
                {"type": "Other", "status": "True"},
                {"type": "Ready", "status": "True", "reason": "Checked", "observedGeneration": 3,
                 "lastTransitionTime": "2024-01-01T00:00:00Z"}
            ]}),
        );
        let c = issuer_ready(&o).unwrap();
        assert_eq!((c.status.as_str(), c.observed_generation), ("True", 3));
        assert!(issuer_ready(&obj(json_null(), json_null())).is_none());
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.next("a"), Duration::from_millis(500));
        assert_eq!(b.next("a"), Duration::from_secs(1));
        assert_eq!(b.next("a"), Duration::from_secs(2));
        assert_eq!(b.next("b"), Duration::from_millis(500));
        b.reset("a");
        assert_eq!(b.next("a"), Duration::from_millis(500));
        for _ in 0..40 {
            b.next("c");
        }
        assert_eq!(b.next("c"), Duration::from_secs(300));
    }
}
