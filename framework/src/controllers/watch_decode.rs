//! Decoding watched requests without their `metadata.managedFields` (issue 16).
//!
//! Every object the API server sends carries its managedFields: a JSON tree per field manager
//! (`fieldsV1`) that `serde_json` turns into nested maps of owned strings, only for [`prune`] to
//! drop them at once. A profile of the request controller's initial list of 20,000 requests put
//! about 30 % of its CPU in building and freeing those trees, and every status update's watch
//! event carries them again. [`WithoutManagedFields`] wraps the watched type so that the decoder
//! skips that one key of `metadata` without building anything (serde's `IgnoredAny`) and decodes
//! everything else with the type's own `Deserialize`.
//!
//! Why not a crate: serde has no "skip this path" adaptor, and the request types' `Deserialize`
//! impls are derived (kube's `CustomResource`, k8s-openapi) and must keep managedFields for every
//! other reader (adapters, tests, the CLI). The adaptor below is two `MapAccess` filters, one for
//! the object's keys (to find `metadata`) and one for `metadata`'s keys.
//!
//! [`prune`]: crate::controllers::prune

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer, StrDeserializer};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// A watched `K` decoded without `metadata.managedFields` (always `None` in it). Only the
/// request watch uses it; [`into_event`](Self::into_event) unwraps the watcher's events.
#[derive(Clone, Debug)]
pub(crate) struct WithoutManagedFields<K>(pub K);

impl<K> WithoutManagedFields<K> {
    /// The watcher's event for the object inside.
    pub(crate) fn into_event(event: kube::runtime::watcher::Event<Self>) -> kube::runtime::watcher::Event<K> {
        use kube::runtime::watcher::Event;
        match event {
            Event::Apply(o) => Event::Apply(o.0),
            Event::Delete(o) => Event::Delete(o.0),
            Event::Init => Event::Init,
            Event::InitApply(o) => Event::InitApply(o.0),
            Event::InitDone => Event::InitDone,
        }
    }
}

/// The API facts are `K`'s: the wrapper is only a way to decode it.
impl<K: kube::Resource> kube::Resource for WithoutManagedFields<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        self.0.meta_mut()
    }
}

impl<'de, K: Deserialize<'de>> Deserialize<'de> for WithoutManagedFields<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor(PhantomData)).map(WithoutManagedFields)
    }
}

/// Decodes `K` from the object's map, with `metadata`'s value filtered.
struct ObjectVisitor<K>(PhantomData<K>);

impl<'de, K: Deserialize<'de>> Visitor<'de> for ObjectVisitor<K> {
    type Value = K;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<K, A::Error> {
        K::deserialize(MapAccessDeserializer::new(ObjectKeys { map, metadata_next: false }))
    }
}

/// The object's keys, passed through; the value after `metadata` goes through [`Metadata`].
struct ObjectKeys<A> {
    map: A,
    metadata_next: bool,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ObjectKeys<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, A::Error> {
        let Some(key) = self.map.next_key::<Key<'de>>()? else { return Ok(None) };
        self.metadata_next = key.as_str() == "metadata";
        key.feed(seed).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        if std::mem::take(&mut self.metadata_next) {
            self.map.next_value_seed(Metadata(seed))
        } else {
            self.map.next_value_seed(seed)
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// `metadata`'s value, decoded by the type's own seed through [`MetadataDeserializer`].
struct Metadata<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Metadata<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(MetadataDeserializer(deserializer))
    }
}

/// The deserializer of `metadata`'s value: a map or struct read through it loses `managedFields`.
/// The types ask for `ObjectMeta` (kube's derive) or `Option<ObjectMeta>` (k8s-openapi), so an
/// option is unwrapped to the same filter; any other shape is not object metadata and goes to the
/// inner deserializer as it is, to fail there as it would without the filter.
struct MetadataDeserializer<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MetadataDeserializer<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(MetadataMap(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(MetadataMap(visitor))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_option(MetadataOption(visitor))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct seq tuple tuple_struct enum identifier ignored_any
    }
}

/// Hands the type's visitor `metadata`'s map without `managedFields`.
struct MetadataMap<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for MetadataMap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(MetadataKeys(map))
    }
}

/// `Option<ObjectMeta>`: `Some` goes through the filter again.
struct MetadataOption<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for MetadataOption<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(MetadataDeserializer(deserializer))
    }
}

/// `metadata`'s keys but `managedFields`, whose value is skipped without being built.
struct MetadataKeys<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for MetadataKeys<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, A::Error> {
        while let Some(key) = self.0.next_key::<Key<'de>>()? {
            if key.as_str() == "managedFields" {
                self.0.next_value::<IgnoredAny>()?;
                continue;
            }
            return key.feed(seed).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

/// A map key, borrowed from the input where the decoder can (serde's own `Cow<str>` always
/// copies), so that reading each key in order to pass it on costs no allocation.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Key<'de> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    /// Hands the key to the type's own field seed.
    fn feed<S: DeserializeSeed<'de>, E: serde::de::Error>(self, seed: S) -> Result<S::Value, E> {
        match self {
            Key::Borrowed(s) => seed.deserialize(BorrowedStrDeserializer::new(s)),
            Key::Owned(s) => seed.deserialize(StrDeserializer::new(&s)),
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    use serde_json::json;

    use super::*;
    use crate::api::CertificateRequest;

    fn object() -> serde_json::Value {
        json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest",
            "spec": {
                "issuerRef": {"name": "ca", "kind": "ExampleIssuer", "group": "example.certbridge.io"},
                "request": "LS0tLS1CRUdJTg==",
                "usages": ["server auth"]
            },
            "metadata": {
                "name": "r",
                "namespace": "team-a",
                "resourceVersion": "7",
                "annotations": {"managedFields": "an annotation, kept", "x\"y": "escaped key"},
                "managedFields": [{
                    "manager": "cert-manager", "operation": "Apply", "apiVersion": "cert-manager.io/v1",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}}}}}
                }],
                "uid": "u-1"
            },
            "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "ok"}]}
        })
    }

    #[test]
    fn the_object_decodes_as_the_type_does_but_for_managed_fields() {
        let text = serde_json::to_string(&object()).unwrap();
        let full: CertificateRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(full.metadata.managed_fields.as_ref().map(Vec::len), Some(1), "the fixture carries them");
        let WithoutManagedFields(lean) =
            serde_json::from_str::<WithoutManagedFields<CertificateRequest>>(&text).unwrap();
        let mut expected = full.clone();
        expected.metadata.managed_fields = None;
        assert_eq!(serde_json::to_value(&lean).unwrap(), serde_json::to_value(&expected).unwrap());
        // Only metadata's own key goes: an annotation of that name, and keys that need unescaping
        // (decoded into owned strings), stay.
        let annotations = lean.metadata.annotations.unwrap();
        assert_eq!(annotations["managedFields"], "an annotation, kept");
        assert_eq!(annotations["x\"y"], "escaped key");
    }

    #[test]
    fn a_watch_event_and_a_cluster_scoped_kind_decode_too() {
        let mut csr = json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": "c", "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"request": "LS0tLS1CRUdJTg==", "signerName": "example.certbridge.io/cluster.ca"}
        });
        let event = json!({"type": "ADDED", "object": csr.clone()});
        let kube::core::WatchEvent::Added(WithoutManagedFields(lean)) =
            serde_json::from_value::<kube::core::WatchEvent<WithoutManagedFields<CertificateSigningRequest>>>(event)
                .unwrap()
        else {
            panic!("not an ADDED event")
        };
        csr["metadata"].as_object_mut().unwrap().remove("managedFields");
        assert_eq!(serde_json::to_value(&lean).unwrap(), csr);
    }

    #[test]
    fn bad_input_fails_as_it_would_without_the_filter() {
        for bad in [json!({"metadata": 3}), json!([1]), json!({"metadata": {"name": 5}})] {
            let without = serde_json::from_value::<WithoutManagedFields<CertificateRequest>>(bad.clone());
            let with = serde_json::from_value::<CertificateRequest>(bad.clone());
            assert!(without.is_err() && with.is_err(), "{bad}");
        }
        // Missing or null metadata is no error the types themselves would not make (k8s-openapi
        // reads `Option<ObjectMeta>`, kube's derive `ObjectMeta`).
        let spec = json!({"issuerRef": {"name": "ca"}, "request": "", "signerName": "a/b"});
        for object in [json!({"spec": spec}), json!({"metadata": null, "spec": spec})] {
            let text = object.to_string();
            assert_eq!(
                serde_json::from_str::<WithoutManagedFields<CertificateRequest>>(&text).is_ok(),
                serde_json::from_str::<CertificateRequest>(&text).is_ok(),
                "{text}"
            );
            assert_eq!(
                serde_json::from_str::<WithoutManagedFields<CertificateSigningRequest>>(&text).is_ok(),
                serde_json::from_str::<CertificateSigningRequest>(&text).is_ok(),
                "{text}"
            );
        }
    }
}
