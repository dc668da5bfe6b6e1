//! Decoding `application/vnd.kubernetes.protobuf` request bodies into JSON.
//!
//! kubectl's typed clients (`kubectl create configmap|secret|namespace|serviceaccount`,
//! `create token`, `certificate approve|deny`) send protobuf bodies, not JSON. The
//! apiserver accepts both, so this server decodes the kinds kubectl sends that way.
//!
//! Hand-written wire decoding with per-kind field tables (tag numbers taken from the
//! Kubernetes `generated.proto` files) instead of depending on `k8s-pb` + `prost`: those
//! compile ~3 MB of generated code for the handful of messages needed here.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// Field value shapes.
enum F {
    Str,
    Bytes,
    Int,
    Bool,
    Time,
    Msg(&'static [Field]),
    MapStrStr,
    MapStrBytes,
    /// `map<string, ExtraValue>` where ExtraValue is `repeated string items = 1`.
    MapStrList,
    RepStr,
    RepMsg(&'static [Field]),
}

struct Field(u32, &'static str, F);

const OWNER_REF: &[Field] = &[
    Field(5, "apiVersion", F::Str),
    Field(1, "kind", F::Str),
    Field(3, "name", F::Str),
    Field(4, "uid", F::Str),
    Field(6, "controller", F::Bool),
    Field(7, "blockOwnerDeletion", F::Bool),
];

const OBJECT_META: &[Field] = &[
    Field(1, "name", F::Str),
    Field(2, "generateName", F::Str),
    Field(3, "namespace", F::Str),
    Field(4, "selfLink", F::Str),
    Field(5, "uid", F::Str),
    Field(6, "resourceVersion", F::Str),
    Field(7, "generation", F::Int),
    Field(8, "creationTimestamp", F::Time),
    Field(9, "deletionTimestamp", F::Time),
    Field(10, "deletionGracePeriodSeconds", F::Int),
    Field(11, "labels", F::MapStrStr),
    Field(12, "annotations", F::MapStrStr),
    Field(13, "ownerReferences", F::RepMsg(OWNER_REF)),
    Field(14, "finalizers", F::RepStr),
];

const CONFIG_MAP: &[Field] = &[
    Field(1, "metadata", F::Msg(OBJECT_META)),
    Field(2, "data", F::MapStrStr),
    Field(3, "binaryData", F::MapStrBytes),
    Field(4, "immutable", F::Bool),
];

const SECRET: &[Field] = &[
    Field(1, "metadata", F::Msg(OBJECT_META)),
    Field(2, "data", F::MapStrBytes),
    Field(3, "type", F::Str),
    Field(4, "stringData", F::MapStrStr),
    Field(5, "immutable", F::Bool),
];

const NAMESPACE: &[Field] = &[
    Field(1, "metadata", F::Msg(OBJECT_META)),
    Field(2, "spec", F::Msg(&[Field(1, "finalizers", F::RepStr)])),
    Field(3, "status", F::Msg(&[Field(1, "phase", F::Str)])),
];

const OBJECT_REF: &[Field] = &[
    Field(1, "kind", F::Str),
    Field(2, "namespace", F::Str),
    Field(3, "name", F::Str),
    Field(4, "uid", F::Str),
    Field(5, "apiVersion", F::Str),
    Field(6, "resourceVersion", F::Str),
    Field(7, "fieldPath", F::Str),
];

const SERVICE_ACCOUNT: &[Field] = &[
    Field(1, "metadata", F::Msg(OBJECT_META)),
    Field(2, "secrets", F::RepMsg(OBJECT_REF)),
    Field(3, "imagePullSecrets", F::RepMsg(&[Field(1, "name", F::Str)])),
    Field(4, "automountServiceAccountToken", F::Bool),
];

const TOKEN_REQUEST: &[Field] = &[
    Field(1, "metadata", F::Msg(OBJECT_META)),
    Field(
        2,
        "spec",
        F::Msg(&[
            Field(1, "audiences", F::RepStr),
            Field(4, "expirationSeconds", F::Int),
            Field(
                3,
                "boundObjectRef",
                F::Msg(&[
                    Field(1, "kind", F::Str),
                    Field(2, "apiVersion", F::Str),
                    Field(3, "name", F::Str),
                    Field(4, "uid", F::Str),
                ]),
            ),
        ]),
    ),
];

const CSR_CONDITION: &[Field] = &[
    Field(1, "type", F::Str),
    Field(6, "status", F::Str),
    Field(2, "reason", F::Str),
    Field(3, "message", F::Str),
    Field(4, "lastUpdateTime", F::Time),
    Field(5, "lastTransitionTime", F::Time),
];

const CSR: &[Field] = &[
    Field(1, "metadata", F::Msg(OBJECT_META)),
    Field(
        2,
        "spec",
        F::Msg(&[
            Field(1, "request", F::Bytes),
            Field(7, "signerName", F::Str),
            Field(8, "expirationSeconds", F::Int),
            Field(5, "usages", F::RepStr),
            Field(2, "username", F::Str),
            Field(3, "uid", F::Str),
            Field(4, "groups", F::RepStr),
            Field(6, "extra", F::MapStrList),
        ]),
    ),
    Field(3, "status", F::Msg(&[Field(1, "conditions", F::RepMsg(CSR_CONDITION)), Field(2, "certificate", F::Bytes)])),
];

const DELETE_OPTIONS: &[Field] = &[
    Field(1, "gracePeriodSeconds", F::Int),
    Field(2, "preconditions", F::Msg(&[Field(1, "uid", F::Str), Field(2, "resourceVersion", F::Str)])),
    Field(3, "orphanDependents", F::Bool),
    Field(4, "propagationPolicy", F::Str),
    Field(5, "dryRun", F::RepStr),
];

fn schema_for(kind: &str) -> Option<&'static [Field]> {
    Some(match kind {
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "TokenRequest" => TOKEN_REQUEST,
        "CertificateSigningRequest" => CSR,
        "DeleteOptions" => DELETE_OPTIONS,
        _ => return None,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()? as usize;
        if n > self.buf.len() {
            return Err("truncated field".into());
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }

    /// Next (tag, wire type), or None at the end.
    fn key(&mut self) -> Result<Option<(u32, u8)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        Ok(Some(((k >> 3) as u32, (k & 7) as u8)))
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            w => Err(format!("unsupported wire type {w}")),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), String> {
        if n > self.buf.len() {
            return Err("truncated field".into());
        }
        self.buf = &self.buf[n..];
        Ok(())
    }
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8".to_string())
}

/// A map entry message: key = 1, value = 2.
fn map_entry(b: &[u8]) -> Result<(String, &[u8]), String> {
    let mut r = Reader { buf: b };
    let (mut k, mut v): (String, &[u8]) = (String::new(), &[]);
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, 2) => k = string(r.bytes()?)?,
            (2, 2) => v = r.bytes()?,
            (_, w) => r.skip(w)?,
        }
    }
    Ok((k, v))
}

fn time(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader { buf: b };
    // Go marshals the zero time as an empty message; JSON spells it null (omitted).
    let mut secs = None;
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, 0) => secs = Some(r.varint()? as i64),
            (_, w) => r.skip(w)?,
        }
    }
    let Some(secs) = secs else { return Ok(Value::Null) };
    let t = jiff::Timestamp::from_second(secs).map_err(|e| e.to_string())?;
    Ok(json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

fn message(b: &[u8], fields: &[Field]) -> Result<Value, String> {
    let mut r = Reader { buf: b };
    let mut out = Map::new();
    let b64 = |x: &[u8]| json!(base64::engine::general_purpose::STANDARD.encode(x));
    while let Some((tag, wire)) = r.key()? {
        let Some(Field(_, name, shape)) = fields.iter().find(|f| f.0 == tag) else {
            r.skip(wire)?;
            continue;
        };
        let name = name.to_string();
        match (shape, wire) {
            (F::Str, 2) => {
                out.insert(name, json!(string(r.bytes()?)?));
            }
            (F::Bytes, 2) => {
                out.insert(name, b64(r.bytes()?));
            }
            (F::Int, 0) => {
                out.insert(name, json!(r.varint()? as i64));
            }
            (F::Bool, 0) => {
                out.insert(name, json!(r.varint()? != 0));
            }
            (F::Time, 2) => {
                let t = time(r.bytes()?)?;
                if !t.is_null() {
                    out.insert(name, t);
                }
            }
            (F::Msg(s), 2) => {
                out.insert(name, message(r.bytes()?, s)?);
            }
            (F::RepStr, 2) => {
                let s = string(r.bytes()?)?;
                out.entry(name).or_insert_with(|| json!([])).as_array_mut().ok_or("bad repeated")?.push(json!(s));
            }
            (F::RepMsg(s), 2) => {
                let m = message(r.bytes()?, s)?;
                out.entry(name).or_insert_with(|| json!([])).as_array_mut().ok_or("bad repeated")?.push(m);
            }
            (F::MapStrStr | F::MapStrBytes | F::MapStrList, 2) => {
                let (k, v) = map_entry(r.bytes()?)?;
                let value = match shape {
                    F::MapStrStr => json!(string(v)?),
                    F::MapStrBytes => b64(v),
                    _ => message(v, &[Field(1, "items", F::RepStr)])?.get("items").cloned().unwrap_or(json!([])),
                };
                out.entry(name).or_insert_with(|| json!({})).as_object_mut().ok_or("bad map")?.insert(k, value);
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a `k8s\0`-prefixed `runtime.Unknown` envelope into the JSON object it carries.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let inner = body.strip_prefix(b"k8s\0").ok_or("missing protobuf magic prefix")?;
    let mut r = Reader { buf: inner };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, 2) => {
                let tm = message(r.bytes()?, &[Field(1, "apiVersion", F::Str), Field(2, "kind", F::Str)])?;
                api_version = tm["apiVersion"].as_str().unwrap_or_default().to_string();
                kind = tm["kind"].as_str().unwrap_or_default().to_string();
            }
            (2, 2) => raw = r.bytes()?,
            (_, w) => r.skip(w)?,
        }
    }
    let schema = schema_for(&kind)
        .ok_or_else(|| format!("protobuf encoding of kind {kind:?} is not supported by kube-sim; use JSON"))?;
    let mut v = message(raw, schema)?;
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}
