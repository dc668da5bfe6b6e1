//! Prometheus metrics (prometheus-client, OpenMetrics text at `/metrics`):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `certbridge_requests_total` | counter | `kind` (CertificateRequest / CertificateSigningRequest), `issuer_kind`, `issuer` (`ns/name` or `name`), `result` (issued, failed, denied, pending, retry, waiting) |
//! | `certbridge_sign_duration_seconds` | histogram | – (time spent in `Signer::sign`) |
//! | `certbridge_issuer_ready` | gauge (1/0) | `kind`, `namespace`, `name` |
//! | `certbridge_reconcile_errors_total` | counter | `controller` |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub kind: String,
    pub issuer_kind: String,
    pub issuer: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct IssuerLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ControllerLabels {
    pub controller: String,
}

/// The controller's metrics and the registry that serves them.
pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub sign_duration: Histogram,
    pub issuer_ready: Family<IssuerLabels, Gauge>,
    pub reconcile_errors: Family<ControllerLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("certbridge");
        let requests = Family::<RequestLabels, Counter>::default();
        // 5 ms … ~82 s: local signing is milliseconds, remote CAs can take tens of seconds.
        let sign_duration = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        let issuer_ready = Family::<IssuerLabels, Gauge>::default();
        let reconcile_errors = Family::<ControllerLabels, Counter>::default();
        registry.register("requests", "Sign attempts and other request outcomes by result", requests.clone());
        registry.register("sign_duration_seconds", "Time spent in the signer's sign call", sign_duration.clone());
        registry.register("issuer_ready", "1 when the issuer is Ready, else 0", issuer_ready.clone());
        registry.register("reconcile_errors", "Reconcile passes that ended in an error", reconcile_errors.clone());
        Metrics { registry, requests, sign_duration, issuer_ready, reconcile_errors }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub(crate) fn reconcile_error(&self, controller: &str) {
        self.reconcile_errors.get_or_create(&ControllerLabels { controller: controller.to_owned() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed() {
        let m = Metrics::default();
        m.requests
            .get_or_create(&RequestLabels {
                kind: "CertificateRequest".into(),
                issuer_kind: "DemoIssuer".into(),
                issuer: "ns/ca".into(),
                result: "issued".into(),
            })
            .inc();
        m.sign_duration.observe(0.02);
        m.issuer_ready
            .get_or_create(&IssuerLabels { kind: "DemoIssuer".into(), namespace: "ns".into(), name: "ca".into() })
            .set(1);
        m.reconcile_error("certificaterequest");
        let text = m.encode();
        assert!(text.contains(
            "certbridge_requests_total{kind=\"CertificateRequest\",issuer_kind=\"DemoIssuer\",issuer=\"ns/ca\",result=\"issued\"} 1"
        ), "{text}");
        assert!(text.contains("certbridge_sign_duration_seconds_count 1"), "{text}");
        assert!(text.contains("certbridge_issuer_ready{kind=\"DemoIssuer\",namespace=\"ns\",name=\"ca\"} 1"), "{text}");
        assert!(text.contains("certbridge_reconcile_errors_total{controller=\"certificaterequest\"} 1"), "{text}");
    }
}
