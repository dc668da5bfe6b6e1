//! cert-manager.io/v1 `CertificateRequest`, field for field as in cert-manager's
//! `pkg/apis/certmanager/v1/types_certificaterequest.go`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The spec of a cert-manager `CertificateRequest`. cert-manager makes all of it immutable.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "CertificateRequest",
    namespaced,
    status = "CertificateRequestStatus",
    schema = "disabled",
    shortname = "cr"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestSpec {
    /// Requested lifetime as a Go duration string (`"2160h0m0s"`); 90 days when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The issuer asked to sign.
    pub issuer_ref: IssuerRef,
    /// The PEM CSR (base64 on the wire, PEM bytes once decoded).
    pub request: ByteString,
    /// Whether a CA certificate is requested (adds `cert sign`).
    #[serde(default, rename = "isCA", skip_serializing_if = "std::ops::Not::not")]
    pub is_ca: bool,
    /// Requested usages in cert-manager's spelling (`"digital signature"`, `"server auth"`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usages: Vec<String>,
    /// Set by cert-manager's webhook: who created the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Set by cert-manager's webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Set by cert-manager's webhook.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Set by cert-manager's webhook.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// A reference to the issuer of a `CertificateRequest`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuerRef {
    /// Issuer name.
    pub name: String,
    /// Issuer kind (cert-manager defaults it to `Issuer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Issuer API group (cert-manager defaults it to `cert-manager.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The status of a `CertificateRequest`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestStatus {
    /// `Ready`, `Approved`, `Denied`, `InvalidRequest` and any adapter-specific condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<CertificateRequestCondition>,
    /// The PEM chain, leaf first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<ByteString>,
    /// The PEM CA that issued the chain (best effort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<ByteString>,
    /// When the request failed or was denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_time: Option<Time>,
}

/// One condition of a `CertificateRequest`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestCondition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl CertificateRequest {
    /// The condition of type `type_`, if present.
    pub fn condition(&self, type_: &str) -> Option<&CertificateRequestCondition> {
        self.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_cert_manager_json() {
        let json = serde_json::json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {
                "duration": "2160h0m0s",
                "issuerRef": {"name": "ca", "kind": "DemoIssuer", "group": "demo.certbridge.io"},
                "request": "LS0tLS1CRUdJTg==",
                "isCA": true,
                "usages": ["digital signature", "server auth"],
                "username": "alice", "groups": ["system:authenticated"], "extra": {"k": ["v"]}
            },
            "status": {
                "conditions": [{"type": "Approved", "status": "True", "reason": "cert-manager.io",
                                "message": "ok", "lastTransitionTime": "2024-01-02T03:04:05Z"}],
                "failureTime": "2024-01-02T03:04:05Z"
            }
        });
        let cr: CertificateRequest = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(cr.spec.request.0, b"-----BEGIN");
        assert!(cr.spec.is_ca);
        assert_eq!(cr.spec.issuer_ref.kind.as_deref(), Some("DemoIssuer"));
        assert_eq!(cr.condition("Approved").unwrap().status, "True");
        assert_eq!(serde_json::to_value(&cr).unwrap(), json);
    }
}
