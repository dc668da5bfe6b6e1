//! The REST verbs (get, list, create, update, patch, delete, deletecollection) over the
//! store, including the write pipeline every mutation goes through:
//! subresource isolation → kind rules → schema → managedFields → no-op check → commit.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

use crate::apply::{Applier, apply, cleanup_entries, conflict_message};
use crate::builtin;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::managed::{Entry, read_entries, track_update, write_entries};
use crate::objects::{self, meta_mut};
use crate::patch::{PatchKind, json_patch, merge_patch, strategic};
use crate::resources::{Kind, ResKey, ResourceDef};
use crate::schema::{self, process_object};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Store;

/// A parsed resource request.
pub(crate) struct Req {
    pub def: Arc<ResourceDef>,
    pub version: String,
    /// Namespace from the URL (None for cluster-scoped resources or all-namespace lists).
    pub ns: Option<String>,
    pub name: Option<String>,
    /// Subresource, "" for the main resource.
    pub sub: String,
    pub query: HashMap<String, String>,
    pub body: Bytes,
    pub content_type: String,
    pub user_agent: String,
    /// The client asked for `meta.k8s.io/v1 Table` (kubectl get).
    pub wants_table: bool,
}

/// A JSON reply with its HTTP status.
pub(crate) type Reply = (u16, Value);

impl Req {
    /// The storage of the request's resource (events.k8s.io events share core events').
    fn key(&self) -> ResKey {
        crate::events::storage_key(&self.def)
    }

    /// The stored object in the form this request's API serves (see `events`), shared with the
    /// store unless that form differs.
    fn current(&self, store: &Store) -> Option<Arc<Value>> {
        let o = store.get_shared(&self.key(), self.ns_key(), self.name())?;
        Some(match crate::events::served(&self.def, o) {
            std::borrow::Cow::Borrowed(_) => o.clone(),
            std::borrow::Cow::Owned(v) => Arc::new(v),
        })
    }

    fn ns_key(&self) -> &str {
        self.ns.as_deref().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun").is_some()
    }

    fn api_version(&self) -> String {
        self.def.api_version(&self.version)
    }

    /// `fieldManager`, else the User-Agent's product token, like the apiserver.
    fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager") {
            return m.to_string();
        }
        let ua = self.user_agent.split('/').next().unwrap_or_default().trim();
        if ua.is_empty() { "unknown".into() } else { ua.to_string() }
    }

    fn schema_root(&self) -> Option<Arc<Value>> {
        self.def.info(&self.version).schema
    }

    fn not_found(&self) -> ApiError {
        ApiError::not_found(&self.def.group, &self.def.plural, self.name())
    }

    pub fn label_selector(&self) -> ApiResult<Option<LabelSelector>> {
        self.q("labelSelector").map(LabelSelector::parse).transpose()
    }

    pub fn field_selector(&self) -> ApiResult<Option<FieldSelector>> {
        let allowed = self.def.info(&self.version).selectable;
        self.q("fieldSelector").map(|s| FieldSelector::parse(s, &allowed)).transpose()
    }
}

/// The object as served at the request's version.
pub(crate) fn present(def: &ResourceDef, version: &str, obj: &Value) -> Value {
    let mut o = crate::events::served(def, obj).into_owned();
    if let Some(m) = o.as_object_mut() {
        m.insert("apiVersion".into(), json!(def.api_version(version)));
        m.insert("kind".into(), json!(def.kind));
    }
    o
}

fn parse_body(req: &Req) -> ApiResult<Value> {
    let ct = req.content_type.split(';').next().unwrap_or_default().trim();
    let v: Value = match ct {
        "application/yaml" => serde_yaml::from_slice(&req.body).map_err(|e| ApiError::bad_request(e.to_string()))?,
        "" | "application/json" | "*/*" => serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(v)
}

fn check_type(req: &Req, obj: &Value) -> ApiResult<()> {
    if let Some(k) = obj.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty())
        && k != req.def.kind
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({})... kind {k:?} is not {:?}",
            obj["apiVersion"].as_str().unwrap_or_default(),
            req.api_version(),
            req.def.kind
        )));
    }
    Ok(())
}

pub(crate) fn get(store: &Store, req: &Req) -> ApiResult<Value> {
    let obj = store.get(&req.key(), req.ns_key(), req.name()).ok_or_else(|| req.not_found())?;
    Ok(present(&req.def, &req.version, obj))
}

/// Lists matching objects; the list's resourceVersion is the store's current one.
/// `limit`/`continue` paginate by (namespace, name) over the live state.
pub(crate) fn list(store: &Store, req: &Req) -> ApiResult<ListReply> {
    let ls = req.label_selector()?;
    let fs = req.field_selector()?;
    let start_after: Option<(String, String)> = match req.q("continue") {
        Some(c) => {
            let raw = objects::unb64(c)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            let (ns, name) = raw.split_once('/').ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            Some((ns.to_string(), name.to_string()))
        }
        None => None,
    };
    let limit: Option<usize> = req.q("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0);
    let mut items = Vec::new();
    let mut next = None;
    for o in store.list_after_shared(&req.key(), req.ns.as_deref(), start_after.as_ref()) {
        let shown = crate::events::served(&req.def, o);
        if !ls.as_ref().is_none_or(|s| s.matches(&shown)) || !fs.as_ref().is_none_or(|s| s.matches(&shown)) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            let last: &Value = items.last().map(|o: &Arc<Value>| &**o).expect("limit > 0");
            next = Some(objects::b64(
                format!("{}/{}", objects::namespace(last).unwrap_or_default(), objects::name(last).unwrap_or_default())
                    .as_bytes(),
            ));
            break;
        }
        // The stored object itself (shared), unless serving changed it (Events' field names).
        items.push(match shown {
            std::borrow::Cow::Borrowed(_) => o.clone(),
            std::borrow::Cow::Owned(v) => Arc::new(v),
        });
    }
    Ok(ListReply {
        api_version: req.api_version(),
        list_kind: req.def.list_kind.clone(),
        item_api_version: req.def.api_version(&req.version),
        kind: req.def.kind.clone(),
        resource_version: store.current_rv().to_string(),
        next,
        items,
    })
}

/// A list as served. It holds the stored objects (shared) and is serialised after the store's
/// lock is released, each item with the `apiVersion` and `kind` of the version asked for: copying
/// every object to set those two fields ([`present`]) and freeing the copies was most of the
/// cost of a controller's initial list of 10,000 requests (BENCHMARKS.md, issue 16).
pub(crate) struct ListReply {
    api_version: String,
    list_kind: String,
    item_api_version: String,
    kind: String,
    resource_version: String,
    /// The `continue` token of the next page.
    next: Option<String>,
    items: Vec<Arc<Value>>,
}

impl Serialize for ListReply {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Meta<'a>(&'a ListReply);
        impl Serialize for Meta<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                if let Some(next) = &self.0.next {
                    m.serialize_entry("continue", next)?;
                }
                m.serialize_entry("resourceVersion", &self.0.resource_version)?;
                m.end()
            }
        }
        struct Items<'a>(&'a ListReply);
        impl Serialize for Items<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let (api_version, kind) = (self.0.item_api_version.as_str(), self.0.kind.as_str());
                s.collect_seq(self.0.items.iter().map(|obj| Served { api_version, kind, obj }))
            }
        }
        // The keys in the order `json!` (a sorted map) wrote them.
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("apiVersion", &self.api_version)?;
        m.serialize_entry("items", &Items(self))?;
        m.serialize_entry("kind", &self.list_kind)?;
        m.serialize_entry("metadata", &Meta(self))?;
        m.end()
    }
}

/// A stored object serialised with `apiVersion` and `kind` replaced, without copying it.
struct Served<'a> {
    api_version: &'a str,
    kind: &'a str,
    obj: &'a Value,
}

impl Serialize for Served<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some(fields) = self.obj.as_object() else { return self.obj.serialize(s) };
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("apiVersion", self.api_version)?;
        m.serialize_entry("kind", self.kind)?;
        for (k, v) in fields.iter().filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind")) {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// POST to the collection.
pub(crate) fn create(store: &mut Store, req: &Req) -> ApiResult<Reply> {
    let mut obj = parse_body(req)?;
    check_type(req, &obj)?;
    if req.def.namespaced {
        let url_ns = req.ns.clone().ok_or_else(|| {
            ApiError::method_not_allowed("the server does not allow this method on the requested resource")
        })?;
        match objects::namespace(&obj) {
            Some(n) if n != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta_mut(&mut obj).insert("namespace".into(), json!(url_ns));
            }
        }
    } else {
        meta_mut(&mut obj).remove("namespace");
    }
    if objects::resource_version(&obj).is_some() {
        return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
    }
    if objects::name(&obj).is_none() {
        match objects::meta_str(&obj, "generateName") {
            Some(g) => {
                let n = format!("{g}{}", objects::name_suffix());
                meta_mut(&mut obj).insert("name".into(), json!(n));
            }
            None => {
                return Err(ApiError::invalid(
                    &req.def.kind,
                    &req.def.group,
                    "",
                    &[FieldError::required("metadata.name", "name or generateName is required")],
                ));
            }
        }
    }
    builtin::stamp_new(&req.def, &mut obj);
    if req.def.has_status() && req.def.class != Kind::Namespace {
        // The status of a new object comes from controllers, never from the creator.
        obj.as_object_mut().expect("object").remove("status");
    }
    builtin::prepare_create(&req.def, &mut obj);
    finish_write(store, req, None, obj, None)
}

/// PUT to an object or subresource.
pub(crate) fn update(store: &mut Store, req: &Req) -> ApiResult<Reply> {
    let old = req.current(store).ok_or_else(|| req.not_found())?;
    let new = parse_body(req)?;
    check_type(req, &new)?;
    match objects::resource_version(&new) {
        Some(rv) if Some(rv) != objects::resource_version(&old) => {
            return Err(ApiError::modified(&req.def.group, &req.def.plural, req.name()));
        }
        None if req.def.is_custom() => {
            return Err(ApiError::invalid(
                &req.def.kind,
                &req.def.group,
                req.name(),
                &[FieldError::invalid("metadata.resourceVersion", json!(0), "must be specified for an update")],
            ));
        }
        _ => {}
    }
    finish_write(store, req, Some(&*old), new, None)
}

/// PATCH (merge, JSON, strategic, or server-side apply).
pub(crate) fn patch(store: &mut Store, req: &Req) -> ApiResult<Reply> {
    let kind = PatchKind::from_content_type(&req.content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(&req.content_type))?;
    let old = req.current(store);
    if kind == PatchKind::Apply {
        return server_side_apply(store, req, old);
    }
    let old = old.ok_or_else(|| req.not_found())?;
    let mut new = Value::clone(&old);
    match kind {
        PatchKind::Json => json_patch(&mut new, &req.body).map_err(|e| {
            ApiError::new(
                422,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {e}"),
            )
        })?,
        PatchKind::Merge => {
            let p: Value = serde_json::from_slice(&req.body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            merge_patch(&mut new, &p);
        }
        PatchKind::Strategic => {
            if req.def.is_custom() {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            let p: Value = serde_json::from_slice(&req.body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            strategic(&mut new, &p, req.schema_root().as_deref());
        }
        PatchKind::Apply => unreachable!("handled above"),
    }
    if objects::resource_version(&new) != objects::resource_version(&old) && objects::resource_version(&new).is_some() {
        return Err(ApiError::modified(&req.def.group, &req.def.plural, req.name()));
    }
    finish_write(store, req, Some(&*old), new, None)
}

fn server_side_apply(store: &mut Store, req: &Req, old: Option<Arc<Value>>) -> ApiResult<Reply> {
    let mut applied: Value =
        serde_yaml::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request("apply patch must be an object"));
    }
    let Some(manager) = req.q("fieldManager") else {
        return Err(ApiError::bad_request("PATCH requests using server-side apply must specify a fieldManager"));
    };
    check_type(req, &applied)?;
    if applied.get("apiVersion").and_then(Value::as_str).is_none_or(str::is_empty)
        || applied.get("kind").and_then(Value::as_str).is_none_or(str::is_empty)
    {
        return Err(ApiError::bad_request("apiVersion and kind must be set in an apply patch"));
    }
    if let Some(n) = objects::name(&applied)
        && n != req.name()
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            req.name()
        )));
    }
    if let Some(old) = &old
        && let Some(rv) = objects::resource_version(&applied)
        && Some(rv) != objects::resource_version(old)
    {
        return Err(ApiError::modified(&req.def.group, &req.def.plural, req.name()));
    }
    {
        let m = meta_mut(&mut applied);
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "deletionTimestamp",
            "selfLink",
        ] {
            m.remove(f);
        }
        m.insert("name".into(), json!(req.name()));
        if req.def.namespaced {
            m.insert("namespace".into(), json!(req.ns_key()));
        } else {
            m.remove("namespace");
        }
    }
    // Fields a subresource cannot change are not part of what this manager applies.
    if let Some(o) = applied.as_object_mut() {
        if req.sub == "status" {
            o.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            if let Some(Value::Object(m)) = o.get_mut("metadata") {
                m.retain(|k, _| k == "name" || k == "namespace");
            }
        } else if req.def.has_status() {
            o.remove("status");
        }
    }
    let root = req.schema_root();
    if req.def.info(&req.version).enforce_schema
        && let Some(r) = root.as_deref()
    {
        prune_unknown(r, &mut applied);
    }
    let fresh;
    let live: &Value = match &old {
        Some(o) => o,
        None => {
            if !req.sub.is_empty() {
                return Err(req.not_found());
            }
            fresh = json!({"apiVersion": req.api_version(), "kind": req.def.kind, "metadata": {"name": req.name(), "namespace": req.ns}});
            &fresh
        }
    };
    let entries = old.as_deref().map(read_entries).unwrap_or_default();
    let who = Applier {
        manager,
        subresource: &req.sub,
        api_version: &req.api_version(),
        force: req.q("force") == Some("true"),
    };
    let (mut merged, entries) = apply(live, &applied, entries, &who, root.as_deref()).map_err(|conflicts| {
        let mut e = ApiError::new(409, "Conflict", conflict_message(&conflicts));
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version), "field": crate::managed::display_path(&c.path)}))
            .collect();
        e.details = Some(json!({"name": req.name(), "group": req.def.group, "kind": req.def.plural, "causes": causes}));
        e
    })?;
    match old {
        Some(o) => finish_write(store, req, Some(&*o), merged, Some(entries)),
        None => {
            if let Some(m) = merged.get_mut("metadata").and_then(Value::as_object_mut)
                && m.get("namespace").is_some_and(Value::is_null)
            {
                m.remove("namespace");
            }
            builtin::stamp_new(&req.def, &mut merged);
            builtin::prepare_create(&req.def, &mut merged);
            finish_write(store, req, None, merged, Some(entries))
        }
    }
}

fn prune_unknown(root: &Value, obj: &mut Value) {
    let mut pruned = Vec::new();
    if let Some(o) = obj.as_object_mut() {
        let keys: Vec<String> = o.keys().cloned().collect();
        for k in keys {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match schema::child(Some(root), &k) {
                Some(s) => {
                    if let Some(v) = o.get_mut(&k) {
                        schema::prune(s, v, &k, &mut pruned);
                    }
                }
                None => {
                    o.remove(&k);
                }
            }
        }
    }
}

/// Whether the spec-ish content (everything except metadata, and status when it is a
/// subresource) differs: compared in place, since objects carry large status fields (a
/// certificate chain) that copying would only throw away.
fn generation_content_differs(def: &ResourceDef, old: &Value, new: &Value) -> bool {
    let counted = |k: &String| k != "metadata" && !(def.has_status() && k == "status");
    match (old.as_object(), new.as_object()) {
        (Some(o), Some(n)) => {
            let mut a = o.iter().filter(|(k, _)| counted(k));
            let mut b = n.iter().filter(|(k, _)| counted(k));
            loop {
                match (a.next(), b.next()) {
                    (None, None) => return false,
                    (Some(x), Some(y)) if x == y => {}
                    _ => return true,
                }
            }
        }
        _ => old != new,
    }
}

/// The shared tail of every write. `applied` carries managedFields computed by SSA;
/// otherwise ownership is tracked as an Update by the request's manager.
fn finish_write(
    store: &mut Store,
    req: &Req,
    old: Option<&Value>,
    mut new: Value,
    applied: Option<Vec<Entry>>,
) -> ApiResult<Reply> {
    let def = &req.def;
    let sub = req.sub.as_str();
    if let Some(o) = new.as_object_mut() {
        o.insert("apiVersion".into(), json!(req.api_version()));
        o.insert("kind".into(), json!(def.kind));
    }
    if let Some(old) = old {
        if let Some(n) = objects::name(&new)
            && n != req.name()
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                req.name()
            )));
        }
        if def.namespaced
            && let Some(n) = objects::namespace(&new)
            && n != req.ns_key()
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        // Subresource isolation.
        if sub == "status" && def.class != Kind::Csr {
            let status = new.get("status").cloned();
            let mf = new.pointer("/metadata/managedFields").cloned();
            new = old.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
            if let Some(mf) = mf {
                meta_mut(&mut new).insert("managedFields".into(), mf);
            }
        } else if sub.is_empty() && def.has_status() && def.class != Kind::Csr && def.class != Kind::Crd {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
        }
        let om = objects::meta(old).cloned().unwrap_or_default();
        let nm = meta_mut(&mut new);
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match om.get(f) {
                Some(v) => nm.insert(f.into(), v.clone()),
                None => nm.remove(f),
            };
        }
        nm.insert("resourceVersion".into(), om.get("resourceVersion").cloned().unwrap_or(Value::Null));
        if objects::is_deleting(old) {
            let of = objects::finalizers(old);
            if objects::finalizers(&new).iter().any(|f| !of.contains(f)) {
                return Err(ApiError::invalid(
                    &def.kind,
                    &def.group,
                    req.name(),
                    &[FieldError::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
    } else if store.get(&req.key(), req.ns_key(), objects::name(&new).unwrap_or_default()).is_some() {
        return Err(ApiError::already_exists(&def.group, &def.plural, objects::name(&new).unwrap_or_default()));
    }

    let name = objects::name(&new).unwrap_or_default().to_string();
    if old.is_none() {
        if def.namespaced {
            let ns = objects::namespace(&new).unwrap_or_default();
            let ns_key = ResKey { group: String::new(), plural: "namespaces".into() };
            if store.get(&ns_key, "", ns).is_none() {
                return Err(ApiError::not_found("", "namespaces", ns));
            }
        }
        let mut errs: Vec<FieldError> = builtin::validate_name(def, &name).into_iter().collect();
        errs.extend(builtin::validate_labels(&new));
        if !errs.is_empty() {
            return Err(ApiError::invalid(&def.kind, &def.group, &name, &errs));
        }
    } else {
        let errs = builtin::validate_labels(&new);
        if !errs.is_empty() {
            return Err(ApiError::invalid(&def.kind, &def.group, &name, &errs));
        }
    }

    builtin::on_write(def, old, &mut new, sub)?;

    let info = def.info(&req.version);
    if info.enforce_schema
        && let Some(root) = info.schema.as_deref()
    {
        let (pruned, errs) = process_object(root, &mut new);
        if !errs.is_empty() {
            return Err(ApiError::invalid(&def.kind, &def.group, &name, &errs));
        }
        if !pruned.is_empty() && req.q("fieldValidation") == Some("Strict") {
            let list: Vec<String> = pruned.iter().map(|p| format!("unknown field {p:?}")).collect();
            return Err(ApiError::bad_request(format!("strict decoding error: {}", list.join(", "))));
        }
    }

    if let Some(old) = old
        && def.tracks_generation
        && generation_content_differs(def, old, &new)
    {
        let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
        meta_mut(&mut new).insert("generation".into(), json!(g));
    }

    let root = info.schema.as_deref();
    let entries = match applied {
        Some(mut e) => {
            cleanup_entries(&new, &mut e, root);
            e
        }
        None => {
            let prev = old.map(read_entries).unwrap_or_default();
            track_update(old, &new, prev, &req.manager(), sub, &req.api_version(), root)
        }
    };
    write_entries(&mut new, &entries);

    if let Some(old) = old {
        if new == *old {
            return Ok((200, present(def, &req.version, old)));
        }
        if objects::is_deleting(&new) && objects::finalizers(&new).is_empty() {
            if req.dry_run() {
                return Ok((200, present(def, &req.version, &new)));
            }
            let gone = store.remove(&req.key(), req.ns_key(), &name).ok_or_else(|| req.not_found())?;
            after_delete(store, def, &gone);
            return Ok((200, present(def, &req.version, &gone)));
        }
    }
    if req.dry_run() {
        return Ok((if old.is_some() { 200 } else { 201 }, present(def, &req.version, &new)));
    }
    let stored = store.put(&req.key(), crate::events::to_storage(def, new));
    after_write(store, def, &stored);
    Ok((if old.is_some() { 200 } else { 201 }, present(def, &req.version, &stored)))
}

fn after_write(store: &mut Store, def: &ResourceDef, obj: &Value) {
    if def.class == Kind::Crd
        && let Some(d) = crate::crd::def_from_crd(obj)
    {
        store.registry.insert(d);
    }
}

fn after_delete(store: &mut Store, def: &ResourceDef, obj: &Value) {
    if def.class == Kind::Crd
        && let Some(d) = crate::crd::def_from_crd(obj)
    {
        let key = d.key();
        store.registry.remove(&key);
        store.drop_resource(&key);
    }
}

/// DELETE of one object: with finalizers it only gains a deletionTimestamp.
pub(crate) fn delete(store: &mut Store, req: &Req) -> ApiResult<Reply> {
    let old = store.get(&req.key(), req.ns_key(), req.name()).cloned().ok_or_else(|| req.not_found())?;
    let opts: Value =
        if req.body.is_empty() { json!({}) } else { serde_json::from_slice(&req.body).unwrap_or_else(|_| json!({})) };
    delete_one(store, req, old, &opts)
}

fn delete_one(store: &mut Store, req: &Req, old: Value, opts: &Value) -> ApiResult<Reply> {
    let def = &req.def;
    let name = objects::name(&old).unwrap_or_default().to_string();
    let ns = objects::namespace(&old).unwrap_or_default().to_string();
    if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str) {
        let actual = objects::meta_str(&old, "uid").unwrap_or_default();
        if uid != actual {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                &name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
            ));
        }
    }
    if let Some(rv) = opts.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
        let actual = objects::resource_version(&old).unwrap_or_default();
        if rv != actual {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                &name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    let dry = req.dry_run() || opts.get("dryRun").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if !objects::finalizers(&old).is_empty() {
        if objects::is_deleting(&old) {
            return Ok((200, present(def, &req.version, &old)));
        }
        let mut new = old.clone();
        let m = meta_mut(&mut new);
        m.insert("deletionTimestamp".into(), json!(objects::now_time()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        if def.tracks_generation {
            let g = m.get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            m.insert("generation".into(), json!(g));
        }
        if dry {
            return Ok((200, present(def, &req.version, &new)));
        }
        let stored = store.put(&req.key(), new);
        return Ok((200, present(def, &req.version, &stored)));
    }
    if dry {
        return Ok((200, present(def, &req.version, &old)));
    }
    let gone = store.remove(&req.key(), &ns, &name).ok_or_else(|| req.not_found())?;
    after_delete(store, def, &gone);
    Ok((200, present(def, &req.version, &gone)))
}

/// DELETE on a collection, honouring label/field selectors.
pub(crate) fn delete_collection(store: &mut Store, req: &Req) -> ApiResult<Reply> {
    let ls = req.label_selector()?;
    let fs = req.field_selector()?;
    let victims: Vec<Value> = store
        .list(&req.key(), req.ns.as_deref())
        .filter(|o| {
            let shown = crate::events::served(&req.def, o);
            ls.as_ref().is_none_or(|s| s.matches(&shown)) && fs.as_ref().is_none_or(|s| s.matches(&shown))
        })
        .cloned()
        .collect();
    let opts: Value =
        if req.body.is_empty() { json!({}) } else { serde_json::from_slice(&req.body).unwrap_or_else(|_| json!({})) };
    let mut items = Vec::new();
    for v in victims {
        let (_, o) = delete_one(store, req, v, &opts)?;
        items.push(o);
    }
    Ok((
        200,
        json!({"apiVersion": req.api_version(), "kind": req.def.list_kind, "metadata": {"resourceVersion": store.current_rv().to_string()}, "items": items}),
    ))
}
