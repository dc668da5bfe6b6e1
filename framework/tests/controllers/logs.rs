//! `--log-format json`: every line of a request's pass, the adapter's own included, carries the
//! request and issuer fields under the names README "Logs" documents.

use certbridge::IssuerScope;
use certbridge::testing::{approve, certificate_request, create_certificate_request, wait_ready};
use kube::ResourceExt;

use crate::support::*;

#[tokio::test]
async fn json_lines_of_a_sign_carry_the_request_and_issuer_fields() {
    let logs = &crate::subscriber::global().logs;

    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    let (pem, _) = csr("logged.example.com");
    let req = certificate_request::<TestSpec>(NS, "logged", &pem, IssuerScope::Namespaced, "ca");
    let created = create_certificate_request(&env.client, &req).await.unwrap();
    approve(&env.client, NS, "logged").await.unwrap();
    wait_ready(&env.client, NS, "logged", TIMEOUT).await.unwrap();
    // An issuer whose check fails: the framework logs why, in the issuer's span.
    let broken = TestSpec { secret_name: Some("missing".into()), ..TestSpec::default() };
    certbridge::testing::create_issuer(&env.client, IssuerScope::Namespaced, NS, "broken-for-logs", &broken)
        .await
        .unwrap();
    certbridge::testing::wait_issuer_not_ready::<TestSpec>(
        &env.client,
        IssuerScope::Namespaced,
        NS,
        "broken-for-logs",
        None,
        TIMEOUT,
    )
    .await
    .unwrap();
    env.stop().await;

    let uid = created.uid().expect("the API server set a uid");
    let lines = logs.lines();
    let signing = lines
        .iter()
        .find(|l| l["message"] == "test signer: signing" && l["request.name"] == "logged")
        .unwrap_or_else(|| panic!("the adapter's sign line is missing from {lines:#?}"));
    for (field, want) in [
        ("level", "INFO"),
        ("name", "sign"),
        ("controller", "certificaterequests"),
        ("request.namespace", NS),
        ("request.name", "logged"),
        ("request.uid", uid.as_str()),
        ("issuer.kind", "TestIssuer"),
        ("issuer.namespace", NS),
        ("issuer.name", "ca"),
    ] {
        assert_eq!(signing[field], want, "{field} in {signing}");
    }
    assert!(signing["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{signing}");
    assert!(signing["target"].as_str().is_some_and(|t| t.starts_with("controllers")), "{signing}");
    // The adapter's own field is there too, and nothing is nested under span objects.
    assert!(signing.get("profile").is_some() && signing.get("span").is_none(), "{signing}");

    // The issuer reconcile's lines carry the issuer the same way (and no request).
    let checked = lines
        .iter()
        .find(|l| l["message"] == "issuer check did not pass" && l["issuer.name"] == "broken-for-logs")
        .unwrap_or_else(|| panic!("the failed check's line is missing from {lines:#?}"));
    for (field, want) in [
        ("name", "reconcile"),
        ("controller", "TestIssuer"),
        ("issuer.kind", "TestIssuer"),
        ("issuer.namespace", NS),
        ("target", "certbridge::controllers::issuer"),
    ] {
        assert_eq!(checked[field], want, "{field} in {checked}");
    }
    assert!(checked["issuer.uid"].as_str().is_some_and(|u| !u.is_empty()), "{checked}");
    assert!(checked.get("request.uid").is_none() && checked.get("error").is_some(), "{checked}");
}
