//! Shared helpers for the testkit integration tests.
#![allow(dead_code)]

use std::time::Duration;

use base64::Engine as _;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{Value, json};

/// A syntactically valid PEM CSR block (content is not a real CSR; the server only checks
/// the PEM framing, like the CRD's `format: byte`).
pub fn fake_csr_pem() -> String {
    let body =
        base64::engine::general_purpose::STANDARD.encode(b"not really a DER certification request but good enough");
    format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n")
}

pub fn fake_cert_pem() -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(b"not really a DER certificate");
    format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
}

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

pub fn cr_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    )
}

pub fn cr_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &cr_resource())
}

/// A valid CertificateRequest body.
pub fn certificate_request(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name},
        "spec": {
            "request": b64(&fake_csr_pem()),
            "issuerRef": {"name": "my-issuer", "kind": "SimpleIssuer", "group": "testing.certbridge.io"},
            "usages": ["digital signature", "key encipherment"]
        }
    }))
    .expect("valid DynamicObject")
}

/// Extracts the API error of a kube-rs result.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Upper bound for waiting on asynchronous events; tests never sleep to assert.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn conditions(obj: &Value) -> Vec<(String, String)> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["type"].as_str().unwrap_or_default().to_string(),
                        c["status"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
