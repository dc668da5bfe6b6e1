//! The metrics the alerts need beyond counters: the backlog of unfinished requests per issuer,
//! sign latency per issuer and answer, reconciles in flight, and leadership.

use certbridge::IssuerScope;
use certbridge::testing::{approve, certificate_request, create_certificate_request, wait_condition};

use crate::support::*;

/// The value of the sample `series` (name and labels, exactly as exposed), if exposed.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_request_pending_at_the_ca_shows_in_the_backlog_until_it_is_issued() {
    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    env.signer.push([Step::AsyncSubmit]);
    let (pem, _) = csr("slow.example.com");
    let req = certificate_request::<TestSpec>(NS, "slow", &pem, IssuerScope::Namespaced, "ca");
    create_certificate_request(&env.client, &req).await.unwrap();
    let handle = env.handle.as_ref().unwrap();
    let unapproved = "{kind=\"CertificateRequest\",issuer_kind=\"TestIssuer\",issuer=\"team/ca\",approved=\"false\"}";
    // Waiting for its approver: in the backlog, as not approved (once the store has it).
    let seen = async {
        while sample(&handle.metrics_text(), &format!("certbridge_requests_unfinished{unapproved}")) != Some(1.0) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    assert!(tokio::time::timeout(TIMEOUT, seen).await.is_ok(), "{}", handle.metrics_text());
    approve(&env.client, NS, "slow").await.unwrap();
    wait_condition(&env.client, NS, "slow", "Ready", "False", Some("Pending"), TIMEOUT).await.unwrap();

    let labels = "{kind=\"CertificateRequest\",issuer_kind=\"TestIssuer\",issuer=\"team/ca\",approved=\"true\"}";
    let text = handle.metrics_text();
    assert_eq!(sample(&text, &format!("certbridge_requests_unfinished{labels}")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &format!("certbridge_requests_unfinished{unapproved}")), None, "{text}");
    let age = sample(&text, &format!("certbridge_request_oldest_unfinished_age_seconds{labels}"));
    assert!(age.is_some_and(|a| a >= 0.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "certbridge_sign_duration_seconds_count{issuer_kind=\"TestIssuer\",issuer=\"team/ca\",result=\"pending\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "certbridge_leader"), Some(1.0), "{text}");

    // Issued on the next pass: the backlog series goes away with it.
    env.signer.push([Step::AsyncSubmit]);
    let api: kube::Api<certbridge::api::CertificateRequest> = kube::Api::namespaced(env.client.clone(), NS);
    let patch = serde_json::json!({"metadata": {"annotations": {"poke": "1"}}});
    api.patch("slow", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    certbridge::testing::wait_ready(&env.client, NS, "slow", TIMEOUT).await.unwrap();
    // The controller's store sees the issued request a moment after the API server does.
    let gone = async {
        while sample(&handle.metrics_text(), &format!("certbridge_requests_unfinished{labels}")).is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    assert!(tokio::time::timeout(TIMEOUT, gone).await.is_ok(), "{}", handle.metrics_text());
    let text = handle.metrics_text();
    assert_eq!(sample(&text, &format!("certbridge_request_oldest_unfinished_age_seconds{labels}")), None);
    // Exact counting is metrics.rs's unit test; here: reconciles were counted, none is leaked
    // beyond the controller's concurrency.
    let in_flight = sample(&text, "certbridge_reconciles_in_flight{controller=\"certificaterequests\"}");
    assert!(in_flight.is_some_and(|n| (0.0..=4.0).contains(&n)), "{text}");
    env.stop().await;
}
