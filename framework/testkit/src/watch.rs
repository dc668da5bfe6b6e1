//! Watch streams: `?watch=true` with resourceVersion semantics, bookmarks, streaming
//! lists (`sendInitialEvents`), selectors, `timeoutSeconds` and 410 Gone.
//!
//! The backlog and the live subscription are taken under the store lock, so a watch
//! sees every change after its starting resourceVersion exactly once, in order.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{ApiError, ApiResult};
use crate::objects;
use crate::resources::{ResKey, ResourceDef};
use crate::rest::{Req, present};
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::Shared;
use crate::store::{Change, EventType};

struct Filter {
    /// The resource as the request names it: selectors see objects in its API's form.
    def: Arc<ResourceDef>,
    key: ResKey,
    ns: Option<String>,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    fn matches(&self, o: &Value) -> bool {
        let o = &*crate::events::served(&self.def, o);
        self.ns.as_deref().is_none_or(|n| objects::namespace(o) == Some(n))
            && self.labels.as_ref().is_none_or(|s| s.matches(o))
            && self.fields.as_ref().is_none_or(|s| s.matches(o))
    }

    /// The event a watcher with this filter sees for a change, if any. A MODIFIED that
    /// moves an object into or out of the selection becomes ADDED or DELETED.
    fn translate(&self, c: &Change) -> Option<EventType> {
        if c.key != self.key {
            return None;
        }
        let now = self.matches(&c.object);
        match c.kind {
            EventType::Added | EventType::Deleted => now.then_some(c.kind),
            EventType::Modified => {
                let before = c.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
        }
    }
}

fn line(v: &Value) -> Bytes {
    let mut s = serde_json::to_vec(v).unwrap_or_default();
    s.push(b'\n');
    Bytes::from(s)
}

fn event(ty: &str, obj: Value) -> Bytes {
    line(&json!({"type": ty, "object": obj}))
}

/// How event objects are rendered: plain, or as one-row Tables for `kubectl get -w`.
#[derive(Clone)]
struct Render {
    def: Arc<ResourceDef>,
    version: String,
    /// `def.api_version(version)`, what a served object's `apiVersion` says.
    api_version: String,
    table: Option<Option<String>>,
}

impl Render {
    /// The watch event of a committed change. An object this watch serves exactly as stored (no
    /// Table, no events.k8s.io renaming, stored at the watched version — the common case) is
    /// serialised once per change for every watcher and the response, not copied and serialised
    /// per watcher.
    fn change(&self, ty: EventType, c: &Change) -> Bytes {
        let o = &*c.object;
        let as_stored = self.table.is_none()
            && self.def.class != crate::resources::Kind::Event
            && o.get("apiVersion").and_then(Value::as_str) == Some(self.api_version.as_str())
            && o.get("kind").and_then(Value::as_str) == Some(self.def.kind.as_str());
        if !as_stored {
            return event(ty.as_str(), self.object(o));
        }
        let json = c.json.get_or_init(|| Bytes::from(serde_json::to_vec(o).unwrap_or_default()));
        let mut line = Vec::with_capacity(json.len() + 40);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(ty.as_str().as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(json);
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }

    fn object(&self, o: &Value) -> Value {
        let obj = present(&self.def, &self.version, o);
        match &self.table {
            None => obj,
            Some(include) => {
                let rv = objects::resource_version(&obj).unwrap_or_default().to_string();
                crate::table::table(&self.def, &self.version, &[obj], &rv, include.as_deref())
            }
        }
    }
}

fn bookmark(def: &ResourceDef, version: &str, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event("BOOKMARK", json!({"kind": def.kind, "apiVersion": def.api_version(version), "metadata": meta}))
}

/// Starts a watch; the response body streams newline-delimited watch events.
pub(crate) fn watch(shared: Arc<Shared>, req: Req) -> ApiResult<Response> {
    let mut fields = req.field_selector()?;
    if let Some(n) = &req.name {
        // Legacy watch on a single object: same as a metadata.name field selector.
        let allowed = vec!["metadata.name".to_string()];
        fields = Some(FieldSelector::parse(&format!("metadata.name={n}"), &allowed)?);
    }
    let filter = Filter {
        def: req.def.clone(),
        key: crate::events::storage_key(&req.def),
        ns: req.ns.clone(),
        labels: req.label_selector()?,
        fields,
    };
    let bookmarks = req.q("allowWatchBookmarks") == Some("true");
    let send_initial = req.q("sendInitialEvents") == Some("true");
    if send_initial && req.q("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::new(
            422,
            "Invalid",
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    let timeout = req.q("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).map(Duration::from_secs);
    let rv_param = req.q("resourceVersion").map(str::to_string);
    let (def, version) = (req.def.clone(), req.version.clone());
    let render = Render {
        def: def.clone(),
        version: version.clone(),
        api_version: def.api_version(&version),
        table: req.wants_table.then(|| req.q("includeObject").map(String::from)),
    };

    let (initial, mut rx, start_rv, gone) = {
        let store = shared.lock();
        let rx = store.subscribe();
        let current = store.current_rv();
        let from_scratch = send_initial || rv_param.as_deref().is_none_or(|r| r == "0");
        if from_scratch {
            let objs: Vec<Bytes> = store
                .list(&filter.key, filter.ns.as_deref())
                .filter(|o| filter.matches(o))
                .map(|o| event("ADDED", render.object(o)))
                .collect();
            (objs, rx, current, None)
        } else {
            let since: u64 = rv_param
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {:?}", rv_param)))?;
            match store.since(since) {
                Some(changes) => {
                    let evs = changes
                        .iter()
                        .filter_map(|c| {
                            filter.translate(c).map(|t| event(t.as_str(), present(&def, &version, &c.object)))
                        })
                        .collect();
                    (evs, rx, current, None)
                }
                None => {
                    let err = ApiError::gone(format!("too old resource version: {since} ({current})"));
                    (vec![], rx, current, Some(err))
                }
            }
        }
    };

    let (tx, out) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    let cancel = shared.faults.watch_token();
    let shutdown = shared.shutdown.clone();
    let interval = shared.bookmark_interval;
    tokio::spawn(async move {
        if let Some(err) = gone {
            let _ = tx.send(Ok(event("ERROR", err.to_status()))).await;
            return;
        }
        for e in initial {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
        if send_initial && tx.send(Ok(bookmark(&def, &version, start_rv, true))).await.is_err() {
            return;
        }
        let mut last_rv = start_rv;
        let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(365 * 24 * 3600)));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = cancel.cancelled() => return,
                _ = shutdown.cancelled() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(Ok(bookmark(&def, &version, last_rv, false))).await.is_err() {
                        return;
                    }
                }
                r = rx.recv() => match r {
                    Ok(c) => {
                        last_rv = last_rv.max(c.rv);
                        if let Some(t) = filter.translate(&c)
                            && tx.send(Ok(render.change(t, &c))).await.is_err()
                        {
                            return;
                        }
                    }
                    // Fell behind or the server is going away: end the stream, the client re-watches.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let body = Body::from_stream(ReceiverStream::new(out));
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}
