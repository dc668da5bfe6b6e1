//! Revocation on delete, for both request APIs: a request annotated `<group>/revoke-on-delete:
//! "true"` whose issuer's signer [revokes](crate::Signer::revokes) gets the finalizer
//! `<group>/revoke-on-delete`; when it is deleted, its certificate is revoked through
//! [`Signer::revoke`](crate::Signer::revoke) before the finalizer is removed.
//!
//! Deletion is never blocked for good: a permanent error, a missing issuer or nothing issued
//! releases the request at once, and retries of a transient error stop [`GIVE_UP_AFTER`] after
//! the deletion (each release that did not revoke records a Warning event). Requests without the
//! annotation never get the finalizer.
//!
//! The finalizer is added with server-side apply under its own field manager (so it never touches
//! the finalizers of others or the signer's state annotations) and removed with a merge patch
//! carrying the `resourceVersion` just read (a concurrent change is a conflict, retried). Both
//! need only `patch` on the request resource, which the controller already has for its state.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use crate::controllers::decision::EventOut;
use crate::controllers::request::api::RequestApi;
use crate::controllers::request::pass::{self, RequestCtx};
use crate::controllers::shared::{Error, typed_issuer};
use crate::controllers::view::IssuerTarget;
use crate::error::Reaction;
use crate::issuer::IssuerSpec;
use crate::request::RequestObject;
use crate::resources::Resources;
use crate::signer::Signer;

/// The annotation key and finalizer name, both under the adapter's group.
pub(crate) const NAME: &str = "revoke-on-delete";

/// How long after the deletion a request is kept for a revocation that keeps failing transiently.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);

/// How long a pass waits for the issuer caches' first list (as the sign pass does).
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// `<group>/revoke-on-delete`.
pub(crate) fn finalizer(group: &str) -> String {
    format!("{group}/{NAME}")
}

/// What should wake a request: the pass's fingerprint, plus whether it is being deleted (a
/// finished request's deletion changes nothing the pass looks at).
pub(crate) fn fingerprint<R: RequestApi>(request: &R) -> u64 {
    pass::fingerprint(&request.view()).wrapping_add(u64::from(request.meta().deletion_timestamp.is_some()))
}

/// Runs before the sign pass of a request naming one of our issuers. `Some(action)`: the request
/// is being deleted and holds our finalizer; this pass was its revocation. `None`: go on with the
/// sign pass (after adding the finalizer, when the request asks for it).
pub(crate) async fn before_pass<S: Signer, R: RequestApi>(
    ctx: &RequestCtx<S>,
    request: &R,
    target: &IssuerTarget,
) -> Result<Option<Action>, Error> {
    let group = ctx.shared.settings.group;
    let name = finalizer(group);
    let meta = request.meta();
    // The cached copy keeps this finalizer (and only it) through pruning.
    let held = meta.finalizers.iter().flatten().any(|f| *f == name);
    if meta.deletion_timestamp.is_some() {
        return Ok(match held {
            true => Some(on_delete::<S, R>(ctx, request, target).await?),
            false => None,
        });
    }
    let view = request.view();
    if held || request.finished() || view.annotations.get(&name).map(String::as_str) != Some("true") {
        return Ok(None);
    }
    let Some(issuer) = issuer::<S>(ctx, target).await? else { return Ok(None) };
    if !ctx.shared.signer.revokes(&issuer) {
        tracing::debug!("revoke-on-delete asked for, but this issuer cannot revoke; no finalizer");
        return Ok(None);
    }
    let mut body = json!({
        "apiVersion": R::api_version(&()),
        "kind": R::kind(&()),
        "metadata": { "name": view.name, "finalizers": [name] },
    });
    if let Some(ns) = &view.namespace {
        body["metadata"]["namespace"] = json!(ns);
    }
    let params = PatchParams::apply(&ctx.shared.settings.field_manager(NAME)).force();
    dynamic_api::<R>(&ctx.shared.client, view.namespace.as_deref())
        .patch(&view.name, &params, &Patch::Apply(body))
        .await?;
    tracing::info!(finalizer = %name, "finalizer added: the certificate is revoked when this request is deleted");
    Ok(None)
}

/// The typed issuer a request names, from the request controller's cache; `None` when it is not
/// there or does not parse (the pass reports that).
async fn issuer<S: Signer>(
    ctx: &RequestCtx<S>,
    target: &IssuerTarget,
) -> Result<Option<crate::Issuer<S::Spec>>, Error> {
    let kind = ctx.shared.kinds.get(target.scope);
    let Some(cache) = ctx.issuers(target.scope) else { return Ok(None) };
    if tokio::time::timeout(CACHE_SYNC_TIMEOUT, cache.ready.wait()).await.is_err() {
        return Err(Error::Retry(format!("the {} cache has not synced yet", kind.names.kind)));
    }
    let Some(obj) = cache.store.get(&kind.object_ref(target)) else { return Ok(None) };
    Ok(typed_issuer::<S::Spec>(&obj, target.scope).ok().filter(|i| i.spec.validate().is_ok()))
}

/// The revocation pass of a deleted request holding our finalizer.
async fn on_delete<S: Signer, R: RequestApi>(
    ctx: &RequestCtx<S>,
    request: &R,
    target: &IssuerTarget,
) -> Result<Action, Error> {
    let shared = &ctx.shared;
    let name = finalizer(shared.settings.group);
    let meta = request.meta();
    let api = dynamic_api::<R>(&shared.client, meta.namespace.as_deref());
    // The cache holds a pruned copy (no certificate): read the object itself.
    let Some(obj) = api.get_opt(meta.name.as_deref().unwrap_or_default()).await? else {
        return Ok(Action::await_change());
    };
    if !obj.metadata.finalizers.iter().flatten().any(|f| *f == name) {
        return Ok(Action::await_change());
    }
    let release = |warning: Option<String>| release::<S, R>(ctx, &api, &obj, &name, warning);
    let Some(certificate) = issued_pem(&obj) else {
        tracing::info!("deleted before a certificate was issued: nothing to revoke");
        return release(None).await;
    };
    if let Err(why) = for_the_requests_key(&obj, &certificate) {
        return release(Some(format!("the certificate was NOT revoked: {why}"))).await;
    }
    let deleted = obj.metadata.deletion_timestamp.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
    if given_up(deleted, Timestamp::now()) {
        return release(Some(format!(
            "the certificate was NOT revoked: revocation kept failing for {} min after the deletion; revoke it at the CA by hand",
            GIVE_UP_AFTER.as_secs() / 60
        )))
        .await;
    }
    let Some(issuer) = issuer::<S>(ctx, target).await? else {
        return release(Some(format!(
            "the certificate was NOT revoked: {} is missing or invalid; revoke it at the CA by hand",
            shared.kinds.get(target.scope).not_found(&target.name)
        )))
        .await;
    };
    if !shared.signer.revokes(&issuer) {
        return release(Some(format!(
            "the certificate was NOT revoked: issuer {} can no longer revoke (its spec changed); revoke it at the CA by hand",
            target.name
        )))
        .await;
    }
    let object = request_object(request, &obj);
    let resources = Resources::new(shared.source.clone(), shared.resource_namespace(target));
    match shared.signer.revoke(&certificate, &object, &issuer, &resources).await {
        Ok(()) => {
            tracing::info!("certificate revoked");
            let note = "certificate revoked at the CA".to_owned();
            shared
                .publish(
                    &EventOut { warning: false, reason: "Revoked", action: "Revoke", note },
                    &object_reference::<R>(&obj),
                )
                .await;
            release(None).await
        }
        Err(e) if e.reaction == Reaction::Permanent => {
            release(Some(format!("the certificate was NOT revoked: {e}"))).await
        }
        Err(e) => {
            tracing::info!(error = %e, "revocation did not succeed; retrying");
            match e.reaction {
                Reaction::Pending { requeue_after } if !requeue_after.is_zero() => Ok(Action::requeue(requeue_after)),
                _ => Err(Error::Retry(format!("revoking the certificate: {e}"))),
            }
        }
    }
}

/// Removes our finalizer, with a Warning event saying why the certificate was not revoked when
/// `warning` is set.
async fn release<S: Signer, R: RequestApi>(
    ctx: &RequestCtx<S>,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    finalizer: &str,
    warning: Option<String>,
) -> Result<Action, Error> {
    remove_finalizer(api, obj, finalizer).await?;
    if let Some(note) = warning {
        tracing::warn!(note, "request released without revoking its certificate");
        let ev = EventOut { warning: true, reason: "RevokeFailed", action: "Revoke", note };
        ctx.shared.publish(&ev, &object_reference::<R>(obj)).await;
    }
    Ok(Action::await_change())
}

/// Removes `finalizer`, guarded by the `resourceVersion` just read.
async fn remove_finalizer(api: &Api<DynamicObject>, obj: &DynamicObject, finalizer: &str) -> Result<(), Error> {
    let rest: Vec<&String> = obj.metadata.finalizers.iter().flatten().filter(|f| *f != finalizer).collect();
    let patch = json!({ "metadata": { "resourceVersion": obj.metadata.resource_version, "finalizers": rest } });
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    match api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether retries stop: [`GIVE_UP_AFTER`] has passed since the deletion (a deletion time in the
/// future, from clock skew, counts as now).
fn given_up(deleted: Timestamp, now: Timestamp) -> bool {
    let waited = now.duration_since(deleted);
    !waited.is_negative() && waited.unsigned_abs() > GIVE_UP_AFTER
}

/// Only a certificate for the key of the request's own CSR is revoked: `status.certificate` is
/// not proof that this issuer signed it for this request (whoever may write a request's status
/// could put another team's certificate there), while the CSR's key is what was signed.
fn for_the_requests_key(obj: &DynamicObject, certificate: &str) -> Result<(), String> {
    let csr = obj
        .data
        .pointer("/spec/request")
        .and_then(|v| v.as_str())
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|der| String::from_utf8(der).ok())
        .ok_or("the request has no readable spec.request")?;
    let csr = crate::pki::Csr::from_pem(&csr).map_err(|e| format!("spec.request: {e}"))?;
    let issued = crate::pki::Issued { chain_pem: certificate.to_owned(), ca_pem: None };
    match issued.leaf_public_key_der()? == csr.public_key_der {
        true => Ok(()),
        false => Err("status.certificate is not for the key of this request's CSR".into()),
    }
}

/// `status.certificate` as PEM text, if there is one.
fn issued_pem(obj: &DynamicObject) -> Option<String> {
    let b64 = obj.data.pointer("/status/certificate")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok().filter(|pem| pem.contains("-----BEGIN CERTIFICATE-----"))
}

/// The request as [`Signer::revoke`] sees it, with its annotations as stored (the cached copy of
/// a finished request has lost them).
fn request_object<R: RequestApi>(request: &R, obj: &DynamicObject) -> RequestObject {
    let view = request.view();
    RequestObject {
        kind: view.kind,
        name: view.name,
        namespace: view.namespace,
        uid: view.uid,
        annotations: obj.metadata.annotations.clone().unwrap_or_default(),
    }
}

fn dynamic_api<R: RequestApi>(client: &kube::Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<R>(&());
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

fn object_reference<R: RequestApi>(obj: &DynamicObject) -> ObjectReference {
    ObjectReference {
        api_version: Some(R::api_version(&()).into_owned()),
        kind: Some(R::kind(&()).into_owned()),
        name: obj.metadata.name.clone(),
        namespace: obj.metadata.namespace.clone(),
        uid: obj.metadata.uid.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stop_an_hour_after_the_deletion() {
        let deleted: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert!(!given_up(deleted, at("2026-01-01T10:59:59Z")));
        assert!(!given_up(deleted, at("2026-01-01T11:00:00Z")));
        assert!(given_up(deleted, at("2026-01-01T11:00:01Z")));
        assert!(!given_up(deleted, at("2026-01-01T08:00:00Z")), "clock skew: a deletion in the future is now");
    }
}
