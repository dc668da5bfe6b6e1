//! Prometheus metrics (prometheus-client, OpenMetrics text at `/metrics`):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `certbridge_requests_total` | counter | `kind` (CertificateRequest / CertificateSigningRequest), `issuer_kind`, `issuer` (`ns/name` or `name`), `result` (issued, failed, denied, pending, retry, waiting) |
//! | `certbridge_sign_duration_seconds` | histogram | `issuer_kind`, `issuer`, `result` (issued, pending, retry, failed, issuer_not_ready) — time spent in `Signer::sign` |
//! | `certbridge_issuer_ready` | gauge (1/0) | `kind`, `namespace`, `name` |
//! | `certbridge_reconcile_errors_total` | counter | `controller` |
//! | `certbridge_reconciles_in_flight` | gauge | `controller` — reconciles running now (kube-runtime does not expose its queue) |
//! | `certbridge_requests_unfinished` | gauge | `kind`, `issuer_kind`, `issuer`, `approved` — requests neither issued, failed nor denied, sampled at scrape |
//! | `certbridge_request_oldest_unfinished_age_seconds` | gauge | `kind`, `issuer_kind`, `issuer`, `approved` — age of the oldest of those |
//! | `certbridge_leader` | gauge (1/0) | – — 1 while this replica runs the controllers |
//!
//! Labels are bounded by the number of issuers and controllers: no request name is ever a label.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

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
pub(crate) struct SignLabels {
    pub issuer_kind: String,
    /// `ns/name` or `name`, as in [`RequestLabels::issuer`].
    pub issuer: String,
    pub result: &'static str,
}

/// The requests of one API naming one issuer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BacklogLabels {
    pub kind: &'static str,
    pub issuer_kind: String,
    pub issuer: String,
    /// `"true"` once approved: an unapproved request waits for its approver, not for the issuer.
    pub approved: &'static str,
}

/// The unfinished requests of one [`BacklogLabels`] at a scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Backlog {
    pub count: i64,
    pub oldest_age_seconds: f64,
}

/// Samples the request controllers' stores at each scrape.
pub(crate) type BacklogSampler = Box<dyn Fn() -> Vec<(BacklogLabels, Backlog)> + Send + Sync>;

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
    pub sign_duration: Family<SignLabels, Histogram>,
    pub issuer_ready: Family<IssuerLabels, Gauge>,
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    pub in_flight: Family<ControllerLabels, Gauge>,
    pub leader: Gauge,
    unfinished: Family<BacklogLabels, Gauge>,
    oldest_unfinished: Family<BacklogLabels, Gauge<f64, AtomicU64>>,
    /// Refill `unfinished` and `oldest_unfinished` at each scrape; the lock also keeps two
    /// concurrent scrapes from clearing each other's samples.
    samplers: Mutex<Vec<BacklogSampler>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("certbridge");
        let requests = Family::<RequestLabels, Counter>::default();
        // 5 ms … ~82 s: local signing is milliseconds, remote CAs can take tens of seconds.
        let sign_duration = Family::<SignLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 15))) as fn() -> Histogram,
        );
        let issuer_ready = Family::<IssuerLabels, Gauge>::default();
        let reconcile_errors = Family::<ControllerLabels, Counter>::default();
        let in_flight = Family::<ControllerLabels, Gauge>::default();
        let leader = Gauge::default();
        let unfinished = Family::<BacklogLabels, Gauge>::default();
        let oldest_unfinished = Family::<BacklogLabels, Gauge<f64, AtomicU64>>::default();
        registry.register("requests", "Sign attempts and other request outcomes by result", requests.clone());
        registry.register("sign_duration_seconds", "Time spent in the signer's sign call", sign_duration.clone());
        registry.register("issuer_ready", "1 when the issuer is Ready, else 0", issuer_ready.clone());
        registry.register("reconcile_errors", "Reconcile passes that ended in an error", reconcile_errors.clone());
        registry.register("reconciles_in_flight", "Reconciles running now", in_flight.clone());
        registry.register(
            "leader",
            "1 while this replica runs the controllers (holds the leader lease)",
            leader.clone(),
        );
        registry.register(
            "requests_unfinished",
            "Requests naming the issuer that are neither issued, failed nor denied",
            unfinished.clone(),
        );
        registry.register(
            "request_oldest_unfinished_age_seconds",
            "Age of the oldest request naming the issuer that is neither issued, failed nor denied",
            oldest_unfinished.clone(),
        );
        Metrics {
            registry,
            requests,
            sign_duration,
            issuer_ready,
            reconcile_errors,
            in_flight,
            leader,
            unfinished,
            oldest_unfinished,
            samplers: Mutex::default(),
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub(crate) fn encode(&self) -> String {
        let samplers = self.samplers.lock().unwrap_or_else(|p| p.into_inner());
        // Requests that finished since the last scrape must not keep their series.
        self.unfinished.clear();
        self.oldest_unfinished.clear();
        for (labels, backlog) in samplers.iter().flat_map(|sample| sample()) {
            self.unfinished.get_or_create(&labels).set(backlog.count);
            self.oldest_unfinished.get_or_create(&labels).set(backlog.oldest_age_seconds);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Records one sign call of `issuer_kind` `issuer` (see [`issuer_label`]).
    pub(crate) fn sign_observed(&self, issuer_kind: &str, issuer: String, result: &'static str, seconds: f64) {
        self.sign_duration
            .get_or_create(&SignLabels { issuer_kind: issuer_kind.to_owned(), issuer, result })
            .observe(seconds);
    }

    /// Adds a request controller's backlog to every scrape.
    pub(crate) fn sample_backlog(&self, sampler: BacklogSampler) {
        self.samplers.lock().unwrap_or_else(|p| p.into_inner()).push(sampler);
    }

    /// Counts a running reconcile of `controller` until the guard is dropped.
    pub(crate) fn in_flight(&self, controller: &str) -> InFlight {
        let gauge = self.in_flight.get_or_create(&ControllerLabels { controller: controller.to_owned() }).clone();
        gauge.inc();
        InFlight(gauge)
    }

    pub(crate) fn reconcile_error(&self, controller: &str) {
        self.reconcile_errors.get_or_create(&ControllerLabels { controller: controller.to_owned() }).inc();
    }
}

/// One reconcile in flight (see [`Metrics::in_flight`]).
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `result` label of a sign call's duration: what the adapter answered.
pub(crate) fn sign_result<T>(result: &Result<T, crate::error::SignError>) -> &'static str {
    use crate::error::Reaction;
    match result {
        Ok(_) => "issued",
        Err(e) => match e.reaction {
            Reaction::Pending { .. } => "pending",
            Reaction::Transient => "retry",
            Reaction::Permanent => "failed",
            Reaction::IssuerNotReady => "issuer_not_ready",
        },
    }
}

/// The `issuer` label: `ns/name` for a namespaced issuer, `name` for a cluster issuer.
pub(crate) fn issuer_label(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// What `/metrics` shows on a replica that waits for the leader lease and runs no controllers yet.
pub(crate) fn follower_text() -> String {
    let mut registry = Registry::with_prefix("certbridge");
    registry.register(
        "leader",
        "1 while this replica runs the controllers (holds the leader lease)",
        Gauge::<i64>::default(),
    );
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
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
        m.sign_duration
            .get_or_create(&SignLabels { issuer_kind: "DemoIssuer".into(), issuer: "ns/ca".into(), result: "issued" })
            .observe(0.02);
        m.issuer_ready
            .get_or_create(&IssuerLabels { kind: "DemoIssuer".into(), namespace: "ns".into(), name: "ca".into() })
            .set(1);
        m.reconcile_error("certificaterequest");
        let text = m.encode();
        assert!(text.contains(
            "certbridge_requests_total{kind=\"CertificateRequest\",issuer_kind=\"DemoIssuer\",issuer=\"ns/ca\",result=\"issued\"} 1"
        ), "{text}");
        assert!(
            text.contains(
                "certbridge_sign_duration_seconds_count{issuer_kind=\"DemoIssuer\",issuer=\"ns/ca\",result=\"issued\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("certbridge_issuer_ready{kind=\"DemoIssuer\",namespace=\"ns\",name=\"ca\"} 1"), "{text}");
        assert!(text.contains("certbridge_reconcile_errors_total{controller=\"certificaterequest\"} 1"), "{text}");
    }
}

#[cfg(test)]
mod backlog_tests {
    use super::*;

    fn labels(issuer: &str) -> BacklogLabels {
        BacklogLabels {
            kind: "CertificateRequest",
            issuer_kind: "DemoIssuer".into(),
            issuer: issuer.into(),
            approved: "true",
        }
    }

    #[test]
    fn backlog_is_sampled_at_each_scrape_and_finished_issuers_drop_out() {
        let m = Metrics::default();
        let round = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = round.clone();
        m.sample_backlog(Box::new(move || match r.load(std::sync::atomic::Ordering::SeqCst) {
            0 => vec![
                (labels("ns/a"), Backlog { count: 3, oldest_age_seconds: 90.5 }),
                (labels("ns/b"), Backlog { count: 1, oldest_age_seconds: 2.0 }),
            ],
            _ => vec![(labels("ns/a"), Backlog { count: 1, oldest_age_seconds: 120.0 })],
        }));
        let first = m.encode();
        assert!(first.contains("certbridge_requests_unfinished{kind=\"CertificateRequest\",issuer_kind=\"DemoIssuer\",issuer=\"ns/a\",approved=\"true\"} 3"), "{first}");
        assert!(first.contains("certbridge_request_oldest_unfinished_age_seconds{kind=\"CertificateRequest\",issuer_kind=\"DemoIssuer\",issuer=\"ns/b\",approved=\"true\"} 2.0"), "{first}");
        round.store(1, std::sync::atomic::Ordering::SeqCst);
        let second = m.encode();
        assert!(second.contains("certbridge_request_oldest_unfinished_age_seconds{kind=\"CertificateRequest\",issuer_kind=\"DemoIssuer\",issuer=\"ns/a\",approved=\"true\"} 120.0"), "{second}");
        assert!(!second.contains("issuer=\"ns/b\""), "a finished backlog keeps no series: {second}");
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops_and_followers_show_leader_zero() {
        let m = Metrics::default();
        let a = m.in_flight("certificaterequests");
        let b = m.in_flight("certificaterequests");
        assert!(m.encode().contains("certbridge_reconciles_in_flight{controller=\"certificaterequests\"} 2"));
        drop((a, b));
        assert!(m.encode().contains("certbridge_reconciles_in_flight{controller=\"certificaterequests\"} 0"));
        assert!(m.encode().contains("certbridge_leader 0"));
        m.leader.set(1);
        assert!(m.encode().contains("certbridge_leader 1"));
        let follower = follower_text();
        assert!(follower.contains("certbridge_leader 0") && follower.ends_with("# EOF\n"), "{follower}");
    }
}
