//! What every CA fault matrix (the adapters' `tests/it/matrix.rs`) watches and bounds, so each
//! matrix keeps only what is its CA's own: how a fault is injected and what the CA counted.
//!
//! A row switches a fault on, creates one approved request, records with [`RowWatch::during`]
//! what the request's and the issuer's Ready conditions went through, clears the fault and waits
//! with [`RowWatch::until`] for the request to settle. [`sign_attempts`] and [`backoff_bound`]
//! bound the retries; [`leaf_has_key`] checks the certificate.

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject};

use crate::api::CertificateRequest;
use crate::runtime::ControllerHandle;

/// The controller's first retry delay, doubled after each attempt (its transient backoff).
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The most sign attempts the controller's backoff (a first try, then 500 ms doubling) allows in
/// `window`, plus one for a pass the issuer's status change may trigger.
pub fn backoff_bound(window: Duration) -> u64 {
    let (mut at, mut delay, mut n) = (Duration::ZERO, FIRST_RETRY, 1u64);
    while at + delay <= window {
        at += delay;
        delay *= 2;
        n += 1;
    }
    n + 1
}

/// Asserts that row `name` made no more sign attempts in `window` than the backoff allows: a
/// fault must never cause a retry storm.
pub fn assert_within_backoff(name: &str, attempts: u64, window: Duration) {
    let bound = backoff_bound(window);
    assert!(attempts <= bound, "{name}: {attempts} sign attempts in {window:?}, over the backoff bound {bound}");
}

/// Completed sign calls so far, read from the controller's own metrics. The histogram has one
/// series per label set (issuer kind, issuer, result), so every series is summed: reading an
/// unlabelled line gave 0 once the labels came, and made a matrix's retry bound vacuous.
pub fn sign_attempts(handle: &ControllerHandle) -> u64 {
    let text = (handle.metrics_renderer())();
    text.lines()
        .filter(|l| l.starts_with("certbridge_sign_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// An object's Ready condition as `("<status> <reason>", message)`; `("-", "")` when it has none.
pub fn ready_state(obj: &serde_json::Value) -> (String, String) {
    obj.pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            (
                format!("{} {}", c["status"].as_str().unwrap_or(""), c["reason"].as_str().unwrap_or("")),
                c["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .unwrap_or_else(|| ("-".into(), String::new()))
}

/// Whether the first certificate of `chain_pem` carries the key of `csr_pem`.
pub fn leaf_has_key(chain_pem: &str, csr_pem: &str) -> bool {
    let issued = crate::Issued { chain_pem: chain_pem.to_owned(), ca_pem: None };
    let csr = crate::Csr::from_pem(csr_pem).map(|c| c.public_key_der).ok();
    csr.is_some() && issued.leaf_public_key_der().ok() == csr
}

/// Creates the approved request `name` (a fresh P-256 key for `<name>.<domain>`) in `namespace`
/// naming the namespaced issuer `issuer` of kind `S`; returns its CSR.
pub async fn create_approved<S: crate::IssuerSpec>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    issuer: &str,
    domain: &str,
) -> String {
    use crate::testing::{approve, certificate_request, create_certificate_request, generate_csr};
    let (csr, _) = generate_csr(&crate::KeyKind::EcP256, &[&format!("{name}.{domain}")]).expect("a CSR");
    let cr = certificate_request::<S>(namespace, name, &csr, crate::IssuerScope::Namespaced, issuer);
    create_certificate_request(client, &cr).await.expect("the request is created");
    approve(client, namespace, name).await.expect("the request is approved");
    csr
}

/// The certificate chain request `name` carries, if any.
pub async fn chain(client: &kube::Client, namespace: &str, name: &str) -> Option<String> {
    let cr = Api::<CertificateRequest>::namespaced(client.clone(), namespace).get(name).await.expect("the request");
    cr.status.and_then(|s| s.certificate).and_then(|c| String::from_utf8(c.0).ok()).filter(|c| !c.is_empty())
}

/// What a row saw.
#[derive(Debug, Default, Clone)]
pub struct Watched {
    /// The request's Ready states during the fault, each change once (`"False Pending"`, ...).
    pub request_states: Vec<String>,
    /// The issuer's Ready states during the fault.
    pub issuer_states: Vec<String>,
    /// Every certificate the request carried, during and after the fault, each change once.
    pub certificates: Vec<String>,
    /// Every distinct Ready message of either object, during and after the fault.
    pub messages: Vec<String>,
}

/// The request's Ready condition at the last look.
#[derive(Debug, Default, Clone)]
pub struct RequestReady {
    /// `True`, `False`, `Unknown`, or empty when there is none.
    pub status: String,
    /// The condition's reason (`Issued`, `Pending`, `Failed`, ...).
    pub reason: String,
    /// The condition's message.
    pub message: String,
}

/// Looks at one request and its issuer while a row runs.
pub struct RowWatch {
    requests: Api<CertificateRequest>,
    issuers: Api<DynamicObject>,
    request: String,
    issuer: String,
}

impl RowWatch {
    /// Watches request `request` (in `namespace`) and issuer `issuer` of `issuers` (from
    /// [`crate::testing::issuer_api`]).
    pub fn new(
        client: &kube::Client,
        namespace: &str,
        request: &str,
        issuers: Api<DynamicObject>,
        issuer: &str,
    ) -> Self {
        RowWatch {
            requests: Api::namespaced(client.clone(), namespace),
            issuers,
            request: request.to_owned(),
            issuer: issuer.to_owned(),
        }
    }

    /// One look; states are recorded only when `states` (during the fault).
    async fn look(&self, w: &mut Watched, states: bool) -> RequestReady {
        let cr = serde_json::to_value(self.requests.get(&self.request).await.expect("the row's request"))
            .expect("a request serializes");
        let iss = serde_json::to_value(self.issuers.get(&self.issuer).await.expect("the row's issuer"))
            .expect("an issuer serializes");
        for (obj, list) in [(&cr, &mut w.request_states), (&iss, &mut w.issuer_states)] {
            let (state, message) = ready_state(obj);
            if states && list.last() != Some(&state) {
                list.push(state);
            }
            if !w.messages.contains(&message) {
                w.messages.push(message);
            }
        }
        if let Some(c) = cr.pointer("/status/certificate").and_then(|c| c.as_str()).filter(|c| !c.is_empty())
            && w.certificates.last().map(String::as_str) != Some(c)
        {
            w.certificates.push(c.to_owned());
        }
        let ready = cr
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
        let field = |k: &str| ready.and_then(|c| c[k].as_str()).unwrap_or("").to_owned();
        RequestReady { status: field("status"), reason: field("reason"), message: field("message") }
    }

    /// Looks every 100 ms for `window` (the fault is on).
    pub async fn during(&self, window: Duration) -> Watched {
        let (t, mut w) = (Instant::now(), Watched::default());
        while t.elapsed() < window {
            self.look(&mut w, true).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        w
    }

    /// After the fault cleared: looks every 50 ms until `settled` holds for the request's Ready
    /// condition, and returns how long that took and the condition; `None` after `cap`.
    /// Certificates and messages keep being recorded in `w`.
    pub async fn until(
        &self,
        w: &mut Watched,
        cap: Duration,
        settled: impl Fn(&RequestReady) -> bool,
    ) -> Option<(Duration, RequestReady)> {
        let cleared = Instant::now();
        loop {
            let ready = self.look(w, false).await;
            if settled(&ready) {
                let at = cleared.elapsed();
                // The certificate may have been written after this look's read of it.
                self.look(w, false).await;
                return Some((at, ready));
            }
            if cleared.elapsed() > cap {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_bound_follows_the_controllers_backoff() {
        // Attempts at 0, 0.5, 1.5, 3.5, 7.5 s (next at 15.5 s), plus one.
        assert_eq!(backoff_bound(Duration::from_secs(15)), 6);
        assert_eq!(backoff_bound(Duration::from_secs(4)), 5);
        assert_eq!(backoff_bound(Duration::from_millis(400)), 2);
    }

    #[test]
    fn ready_state_reads_status_reason_and_message() {
        let obj = serde_json::json!({"status": {"conditions": [
            {"type": "Approved", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "Pending", "message": "waiting"}
        ]}});
        assert_eq!(ready_state(&obj), ("False Pending".into(), "waiting".into()));
        assert_eq!(ready_state(&serde_json::json!({})), ("-".into(), String::new()));
    }
}
