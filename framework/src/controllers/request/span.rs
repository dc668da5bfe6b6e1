//! The `reconcile` span of one request pass: every log line, and every span exported over OTLP,
//! of that pass — the adapter's `sign` included — carries the request's identity and its issuer.
//!
//! Field names are part of the documented `--log-format json` schema (README "Logs"): `controller`,
//! `request.namespace`, `request.name`, `request.uid`, `issuer.kind`, `issuer.namespace`,
//! `issuer.name`. A request naming another controller's issuer has no issuer fields.

use k8s_openapi::api::core::v1::ObjectReference;
use tracing::Span;
use tracing::field::Empty;

use crate::controllers::request::api::RequestApi;
use crate::controllers::shared::Kinds;
use crate::controllers::view::IssuerTarget;

/// The span a reconcile of `request` runs in (kube-rs's span-per-object idiom), with the issuer
/// it names when that is one of `kinds`.
pub(crate) fn reconcile<R: RequestApi>(request: &R, kinds: &Kinds) -> Span {
    let meta = request.meta();
    let span = tracing::info_span!(
        "reconcile",
        controller = R::CONTROLLER,
        request.namespace = meta.namespace.as_deref(),
        request.name = meta.name.as_deref().unwrap_or_default(),
        request.uid = meta.uid.as_deref().unwrap_or_default(),
        issuer.kind = Empty,
        issuer.namespace = Empty,
        issuer.name = Empty,
    );
    if let Ok(Some(target)) = request.target(kinds) {
        record_issuer(&span, kinds, &target);
    }
    span
}

fn record_issuer(span: &Span, kinds: &Kinds, target: &IssuerTarget) {
    span.record("issuer.kind", kinds.get(target.scope).names.kind.as_str());
    if let Some(ns) = &target.namespace {
        span.record("issuer.namespace", ns.as_str());
    }
    span.record("issuer.name", target.name.as_str());
}

/// The child span of one call into the adapter (`sign`), so a slow CA or HSM shows in a trace.
/// [`record_sign`] marks it with the answer.
pub(crate) fn sign() -> Span {
    tracing::info_span!("sign", sign.result = Empty, otel.status_code = Empty, otel.status_description = Empty)
}

/// Records what `sign` answered on its span: `sign.result` (the sign histogram's `result` label)
/// and, for an error, the OpenTelemetry span status (`tracing-opentelemetry` maps the `otel.*`
/// fields), so a failing CA call shows as an error in a trace.
pub(crate) fn record_sign<T>(span: &Span, result: &Result<T, crate::error::SignError>) {
    span.record("sign.result", crate::metrics::sign_result(result));
    if let Err(e) = result {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", e.message.as_str());
    }
}

/// The issuer as an event's `related` object: a request's events keep issuer-lib's exact notes
/// (what cert-manager users compare against), and `regarding` already names the request with its
/// uid, so the issuer goes here rather than into the note.
pub(crate) fn issuer_reference(kinds: &Kinds, target: &IssuerTarget) -> ObjectReference {
    let kind = kinds.get(target.scope);
    ObjectReference {
        api_version: Some(kind.resource.api_version.clone()),
        kind: Some(kind.resource.kind.clone()),
        name: Some(target.name.clone()),
        namespace: target.namespace.clone(),
        ..Default::default()
    }
}
