//! In-memory object storage with one resourceVersion counter for the whole store and a
//! bounded event history for watches.
//!
//! All mutation happens under one mutex (see [`crate::server::Shared`]); every commit
//! bumps the counter, stamps `metadata.resourceVersion`, appends to the history and
//! broadcasts, so watchers observe a single total order. Watches older than the retained
//! history get 410 Gone, as with etcd compaction.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use tokio::sync::broadcast;

use crate::objects::meta_mut;
use crate::resources::{Registry, ResKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub key: ResKey,
    pub kind: EventType,
    pub object: Arc<Value>,
    /// The previous state (for MODIFIED), so selector watches can synthesise ADDED/DELETED.
    pub old: Option<Arc<Value>>,
    /// `object` serialised, once for every watcher that serves it as stored (see `watch`).
    pub json: OnceLock<bytes::Bytes>,
}

/// (namespace or "", name)
pub(crate) type ObjKey = (String, String);

pub(crate) struct Store {
    pub registry: Registry,
    rv: u64,
    /// Shared with the change log and watchers: a write stores its object once, never copies it.
    objects: HashMap<ResKey, BTreeMap<ObjKey, Arc<Value>>>,
    log: VecDeque<Arc<Change>>,
    history: usize,
    /// Highest resourceVersion no longer in `log`; watches from before it are Gone.
    compacted: u64,
    tx: broadcast::Sender<Arc<Change>>,
}

impl Store {
    pub fn new(registry: Registry, history: usize, tx: broadcast::Sender<Arc<Change>>) -> Self {
        Store {
            registry,
            rv: 1,
            objects: HashMap::new(),
            log: VecDeque::new(),
            history: history.max(1),
            compacted: 1,
            tx,
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &ResKey, ns: &str, name: &str) -> Option<&Value> {
        self.get_shared(key, ns, name).map(|o| &**o)
    }

    /// [`Store::get`], as the shared stored object (a reader that must outlive the lock, such as
    /// a write about to replace it, takes it without copying it).
    pub fn get_shared(&self, key: &ResKey, ns: &str, name: &str) -> Option<&Arc<Value>> {
        self.objects.get(key)?.get(&(ns.to_string(), name.to_string()))
    }

    /// Objects of a resource, optionally restricted to one namespace, in (namespace, name) order.
    pub fn list<'a>(&'a self, key: &ResKey, ns: Option<&'a str>) -> impl Iterator<Item = &'a Value> + 'a {
        self.list_after(key, ns, None)
    }

    /// [`Store::list`] from the object after `after` (a list's `continue` point): a page starts
    /// where the previous one ended instead of scanning every object before it, as etcd's range
    /// reads do.
    pub fn list_after<'a>(
        &'a self,
        key: &ResKey,
        ns: Option<&'a str>,
        after: Option<&ObjKey>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.list_after_shared(key, ns, after).map(|v| &**v)
    }

    /// [`Store::list_after`], as the shared stored objects (a list reply that is serialised after
    /// the lock is released holds them without copying them).
    pub fn list_after_shared<'a>(
        &'a self,
        key: &ResKey,
        ns: Option<&'a str>,
        after: Option<&ObjKey>,
    ) -> impl Iterator<Item = &'a Arc<Value>> + 'a {
        use std::ops::Bound;
        let from = match after {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        self.objects
            .get(key)
            .into_iter()
            .flat_map(move |m| m.range((from.clone(), Bound::Unbounded)))
            .filter(move |((ons, _), _)| ns.is_none_or(|n| n == ons))
            .map(|(_, v)| v)
    }

    fn record(&mut self, key: &ResKey, kind: EventType, object: Arc<Value>, old: Option<Arc<Value>>) {
        let change = Arc::new(Change { rv: self.rv, key: key.clone(), kind, object, old, json: OnceLock::new() });
        self.log.push_back(change.clone());
        while self.log.len() > self.history {
            if let Some(c) = self.log.pop_front() {
                self.compacted = c.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(change);
    }

    /// Stores `obj` (new or replacing) under a fresh resourceVersion and emits ADDED/MODIFIED.
    pub fn put(&mut self, key: &ResKey, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        let ns = crate::objects::namespace(&obj).unwrap_or_default().to_string();
        let name = crate::objects::name(&obj).unwrap_or_default().to_string();
        let obj = Arc::new(obj);
        let old = self.objects.entry(key.clone()).or_default().insert((ns, name), obj.clone());
        let kind = if old.is_some() { EventType::Modified } else { EventType::Added };
        self.record(key, kind, obj.clone(), old);
        obj
    }

    /// Deletes an object and emits DELETED carrying the deletion's resourceVersion.
    pub fn remove(&mut self, key: &ResKey, ns: &str, name: &str) -> Option<Arc<Value>> {
        let obj = self.objects.get_mut(key)?.remove(&(ns.to_string(), name.to_string()))?;
        let mut obj = Arc::unwrap_or_clone(obj);
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        let obj = Arc::new(obj);
        self.record(key, EventType::Deleted, obj.clone(), None);
        Some(obj)
    }

    /// Deletes every object of a resource (CRD removal).
    pub fn drop_resource(&mut self, key: &ResKey) {
        let keys: Vec<ObjKey> = self.objects.get(key).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        for (ns, name) in keys {
            self.remove(key, &ns, &name);
        }
        self.objects.remove(key);
    }

    /// Changes after `since`, or `None` when `since` predates the retained history.
    pub fn since(&self, since: u64) -> Option<Vec<Arc<Change>>> {
        if since < self.compacted {
            return None;
        }
        Some(self.log.iter().filter(|c| c.rv > since).cloned().collect())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_page_starts_after_the_continue_point_in_any_namespace() {
        let (tx, _) = broadcast::channel(16);
        let mut store = Store::new(Registry::default(), 100, tx);
        let key = ResKey { group: String::new(), plural: "configmaps".into() };
        for (ns, name) in [("a", "x"), ("a", "y"), ("b", "w"), ("b", "x"), ("c", "a")] {
            store.put(&key, json!({"metadata": {"namespace": ns, "name": name}}));
        }
        let names = |it: Box<dyn Iterator<Item = &Value> + '_>| -> Vec<String> {
            it.map(|o| {
                format!("{}/{}", o["metadata"]["namespace"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap())
            })
            .collect()
        };
        let after = ("a".to_string(), "y".to_string());
        assert_eq!(names(Box::new(store.list_after(&key, None, Some(&after)))), ["b/w", "b/x", "c/a"]);
        let after = ("b".to_string(), "w".to_string());
        assert_eq!(names(Box::new(store.list_after(&key, Some("b"), Some(&after)))), ["b/x"]);
        assert_eq!(names(Box::new(store.list_after(&key, Some("a"), Some(&after)))), Vec::<String>::new());
        assert_eq!(names(Box::new(store.list(&key, Some("a")))), ["a/x", "a/y"]);
        // A continue point that is no longer stored still pages from where it was.
        let gone = ("a".to_string(), "z".to_string());
        assert_eq!(names(Box::new(store.list_after(&key, None, Some(&gone)))), ["b/w", "b/x", "c/a"]);
    }
}
