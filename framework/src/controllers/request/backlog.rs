//! The request backlog metrics (`certbridge_requests_unfinished`,
//! `certbridge_request_oldest_unfinished_age_seconds`), sampled from a request controller's store
//! at each scrape: what "requests pending longer than expected" alerts on, without a series per
//! request.

use std::collections::HashMap;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::Store;

use crate::controllers::decision::APPROVED;
use crate::controllers::request::api::RequestApi;
use crate::controllers::shared::Kinds;
use crate::controllers::view::RequestView;
use crate::issuer::IssuerScope;
use crate::metrics::{Backlog, BacklogLabels, BacklogSampler, issuer_label};

/// Samples the unfinished requests of `store` that name one of `kinds` this controller serves
/// (`namespaced`: whether it serves the namespaced kind), per issuer.
pub(crate) fn sampler<R: RequestApi>(store: Store<R>, kinds: Kinds, namespaced: bool) -> BacklogSampler {
    Box::new(move || {
        let now = Timestamp::now();
        let mut backlog: HashMap<BacklogLabels, Backlog> = HashMap::new();
        // `finished` first: the store is mostly finished requests, and it needs no view.
        for request in store.state().iter().filter(|r| !r.finished()) {
            let Ok(Some(target)) = request.target(&kinds) else { continue };
            if target.scope == IssuerScope::Namespaced && !namespaced {
                continue;
            }
            let view = request.view();
            if settled(&view) {
                continue;
            }
            let labels = BacklogLabels {
                kind: view.kind_name(),
                issuer_kind: kinds.get(target.scope).names.kind.clone(),
                issuer: issuer_label(target.namespace.as_deref(), &target.name),
                approved: if approved(&view) { "true" } else { "false" },
            };
            let age = view.created.map_or(0.0, |c| now.duration_since(c).as_secs_f64().max(0.0));
            let entry = backlog.entry(labels).or_default();
            entry.count += 1;
            entry.oldest_age_seconds = entry.oldest_age_seconds.max(age);
        }
        backlog.into_iter().collect()
    })
}

/// Failed or denied: final although `finished` (which means "no issuer change concerns it any
/// more" to the controller) may not say so for every API.
fn settled(view: &RequestView) -> bool {
    view.conditions.iter().any(|c| {
        c.status == "True" && matches!(c.type_.as_str(), "Denied" | "Failed")
            || c.type_ == "Ready" && matches!(c.reason.as_str(), "Failed" | "Denied")
    })
}

fn approved(view: &RequestView) -> bool {
    view.conditions.iter().any(|c| c.type_ == APPROVED && c.status == "True")
}
