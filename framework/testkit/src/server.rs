//! HTTP front end (axum): URL parsing into (group, version, namespace, resource, name,
//! subresource), verb mapping, fault hooks, and JSON/Table responses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::faults::{FaultAction, Faults, Verb};
use crate::resources::Kind;
use crate::rest::{self, Req};
use crate::store::Store;
use crate::token::{self, TokenSigner};

/// State shared by all requests.
pub(crate) struct Shared {
    store: Mutex<Store>,
    pub faults: Faults,
    pub shutdown: CancellationToken,
    pub bookmark_interval: Duration,
    pub signer: TokenSigner,
    pub base_url: String,
}

impl Shared {
    pub fn new(
        store: Store,
        faults: Faults,
        shutdown: CancellationToken,
        bookmark_interval: Duration,
        signer: TokenSigner,
        base_url: String,
    ) -> Self {
        Shared { store: Mutex::new(store), faults, shutdown, bookmark_interval, signer, base_url }
    }

    /// The store lock; a panic in another request must not wedge the server.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).layer(DefaultBodyLimit::max(16 * 1024 * 1024)).with_state(shared)
}

fn json_response(code: u16, v: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "response build failed").into_response())
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(shared, method, uri, headers, body).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn not_found_path() -> ApiError {
    ApiError::new(404, "NotFound", "the server could not find the requested resource")
}

async fn handle(shared: Arc<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let path = uri.path().trim_end_matches('/');
    let query: HashMap<String, String> =
        serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();

    // Non-resource endpoints.
    match segs.as_slice() {
        ["version"] => return Ok(json_response(200, &discovery::version())),
        ["healthz" | "livez" | "readyz", ..] => return Ok(Response::new(Body::from("ok"))),
        ["api"] => {
            let addr = shared.base_url.split_once("://").map_or(shared.base_url.as_str(), |(_, a)| a).to_string();
            return Ok(json_response(200, &discovery::api_versions(&addr)));
        }
        ["apis"] => return Ok(json_response(200, &discovery::group_list(&shared.lock().registry))),
        [".well-known", "openid-configuration"] => {
            return Ok(json_response(200, &shared.signer.openid_configuration(&shared.base_url)));
        }
        ["openid", "v1", "jwks"] => return Ok(json_response(200, &shared.signer.jwks())),
        ["openapi", "v3"] => return Ok(json_response(200, &crate::openapi::index(&shared.lock().registry))),
        ["openapi", "v3", "api", v] => {
            let doc = crate::openapi::group_version_doc(&shared.lock().registry, "", v).ok_or_else(not_found_path)?;
            return Ok(json_response(200, &doc));
        }
        ["openapi", "v3", "apis", g, v] => {
            let doc = crate::openapi::group_version_doc(&shared.lock().registry, g, v).ok_or_else(not_found_path)?;
            return Ok(json_response(200, &doc));
        }
        ["api", "v1"] => {
            let doc = discovery::resource_list(&shared.lock().registry, "", "v1").ok_or_else(not_found_path)?;
            return Ok(json_response(200, &doc));
        }
        ["apis", g] => {
            return Ok(json_response(200, &discovery::group(&shared.lock().registry, g).ok_or_else(not_found_path)?));
        }
        ["apis", g, v] => {
            let doc = discovery::resource_list(&shared.lock().registry, g, v).ok_or_else(not_found_path)?;
            return Ok(json_response(200, &doc));
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found_path()),
    };
    let (ns, resource, name, sub) = match rest {
        ["namespaces", ns, res, tail @ ..] if !(tail.is_empty() && matches!(*res, "status" | "finalize")) => {
            (Some(ns.to_string()), *res, tail.first().map(|s| s.to_string()), tail.get(1).map(|s| s.to_string()))
        }
        [res, tail @ ..] => (None, *res, tail.first().map(|s| s.to_string()), tail.get(1).map(|s| s.to_string())),
        [] => return Err(not_found_path()),
    };
    if rest.len() > 5 {
        return Err(not_found_path());
    }
    let def = shared.lock().registry.lookup(group, version, resource).ok_or_else(not_found_path)?;
    if def.namespaced != ns.is_some() && (name.is_some() || !def.namespaced) {
        return Err(not_found_path());
    }
    let sub = sub.unwrap_or_default();
    if !sub.is_empty() && !def.has_sub(&sub) {
        return Err(not_found_path());
    }
    let is_watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (&method, name.is_some()) {
        (&Method::GET, _) if is_watch => Verb::Watch,
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, false) => Verb::Create,
        (&Method::POST, true) if sub == "token" => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
    };
    let allowed = if sub.is_empty() {
        def.verbs.contains(&verb.as_str())
    } else {
        def.subresources.iter().any(|(s, vs)| *s == sub && vs.contains(&verb.as_str()))
    };
    if !allowed {
        return Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource"));
    }

    match shared.faults.on_request(verb, &def.plural, &sub) {
        Some(FaultAction::Error { code, reason, message }) => return Err(ApiError::new(code, &reason, message)),
        Some(FaultAction::Latency(d)) => tokio::time::sleep(d).await,
        None => {}
    }

    // kubectl's typed clients send protobuf; everything downstream speaks JSON.
    let mut content_type = header("content-type");
    let mut body = body;
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        let v = crate::protobuf::decode(&body).map_err(|e| ApiError::new(415, "UnsupportedMediaType", e))?;
        body = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        content_type = "application/json".into();
    }
    let accept = header("accept");
    let wants_table = accept.split(',').next().is_some_and(|a| a.contains("as=Table"));
    let req = Req {
        def: def.clone(),
        version: version.to_string(),
        ns,
        name,
        sub,
        query,
        body,
        content_type,
        user_agent: header("user-agent"),
        wants_table,
    };

    if verb == Verb::Watch {
        return crate::watch::watch(shared.clone(), req);
    }
    let (code, value) = {
        let mut store = shared.lock();
        match verb {
            Verb::Get => {
                let obj = rest::get(&store, &req)?;
                if wants_table {
                    let rv = obj
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    (200, crate::table::table(&def, version, &[obj], &rv, req.q("includeObject")))
                } else {
                    (200, obj)
                }
            }
            Verb::List => {
                let list = rest::list(&store, &req)?;
                if !wants_table {
                    // Serialised from the shared stored objects once the lock is released.
                    drop(store);
                    return Ok(json_response(200, &list));
                }
                let mut list = serde_json::to_value(&list).unwrap_or_default();
                let items = match list["items"].take() {
                    Value::Array(items) => items,
                    _ => Vec::new(),
                };
                let rv =
                    list.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default().to_string();
                let mut t = crate::table::table(&def, version, &items, &rv, req.q("includeObject"));
                if let Some(c) = list.pointer("/metadata/continue") {
                    t["metadata"]["continue"] = c.clone();
                }
                (200, t)
            }
            Verb::Create if req.sub == "token" => {
                let name = req.name.clone().unwrap_or_default();
                let ns = req.ns.clone().unwrap_or_default();
                (201, token::token_request(&store, &shared.signer, &ns, &name, &req.body)?)
            }
            Verb::Create if def.class == Kind::Review => (201, review(&store, &shared.signer, &req)?),
            Verb::Create => rest::create(&mut store, &req)?,
            Verb::Update => rest::update(&mut store, &req)?,
            Verb::Patch => rest::patch(&mut store, &req)?,
            Verb::Delete => rest::delete(&mut store, &req)?,
            Verb::DeleteCollection => rest::delete_collection(&mut store, &req)?,
            Verb::Watch => unreachable!("handled above"),
        }
    };
    Ok(json_response(code, &value))
}

/// Create-only review resources: TokenReview and SubjectAccessReview are real (the latter
/// evaluates stored RBAC, see `crate::rbac`); SelfSubjectAccessReview always allows (every
/// caller is the administrator here).
fn review(store: &Store, signer: &TokenSigner, req: &Req) -> ApiResult<Value> {
    match req.def.plural.as_str() {
        "tokenreviews" => token::token_review(store, signer, &req.body),
        "subjectaccessreviews" => {
            crate::rbac::subject_access_review(store, &req.def.api_version(&req.version), &req.body)
        }
        _ => {
            let mut v: Value = serde_json::from_slice(&req.body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            v["status"] = json!({"allowed": true, "reason": "kube-sim performs no authorization"});
            v["apiVersion"] = json!(req.def.api_version(&req.version));
            v["kind"] = json!(req.def.kind);
            Ok(v)
        }
    }
}
