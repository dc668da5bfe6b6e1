//! The signer against the simulator, without a cluster: each auth mode, one login for many
//! requests, 202 and pending pickup across a restart, click-Retry recovery, token expiry mid-run,
//! custom fields, the error table end to end, maximum pending time, Cloud, the checks, and a TPP
//! object taken over by another request with the same common name.

use std::time::Duration;

use certbridge::{SignContext, Signer};
use certbridge_venafi::VenafiSigner;
use certbridge_venafi::signer::state;
use certbridge_venafi::sim::{Fault, Issuance, RequestAnswer};
use certbridge_venafi::spec::{AllowedOverride, CustomField};
use serde_json::json;

use crate::common::*;

fn assert_chain(sim: &certbridge_venafi::sim::VenafiSim, issued: &certbridge::Issued, csr: &str) {
    let blocks = pem::parse_many(&issued.chain_pem).unwrap();
    assert_eq!(blocks.len(), 2, "leaf + issuing CA, leaf first, no root");
    assert_eq!(blocks[1].contents(), sim.ca_der().as_slice());
    let csr_key = certbridge::Csr::from_pem(csr).unwrap().public_key_der;
    assert_eq!(issued.leaf_public_key_der().unwrap(), csr_key);
    let root = pem::parse(sim.root_pem()).unwrap();
    assert_eq!(pem::parse(issued.ca_pem.as_deref().unwrap()).unwrap().contents(), root.contents(), "status.ca = root");
}

#[tokio::test]
async fn each_auth_mode_issues_with_one_login() {
    for auth in [Auth::Password, Auth::AccessToken, Auth::RefreshToken, Auth::ApiKey, Auth::ServiceAccount] {
        let sim = sim().await;
        let res = resources(&sim, auth);
        let iss = issuer(spec(&sim, auth));
        let signer = VenafiSigner::new();
        signer.check(&iss, &res).await.unwrap_or_else(|e| panic!("{auth:?} check: {e}"));
        for i in 0..3 {
            let r = request(&format!("a{i}.example.com"), &[]);
            let issued = signer
                .sign(&r, &iss, &mut SignContext::offline(res.clone()))
                .await
                .unwrap_or_else(|e| panic!("{auth:?}: {e}"));
            assert_chain(&sim, &issued, &r.csr_pem);
            assert_eq!(sim.requests_for(&r.csr_pem), 1, "{auth:?}");
        }
        let (logins, refreshes, verifies) = (sim.logins(), sim.refreshes(), sim.calls("verify"));
        match auth {
            Auth::Password => assert_eq!((logins, refreshes), (1, 0), "one login for a check and three requests"),
            Auth::RefreshToken => assert_eq!((logins, refreshes), (0, 1), "one refresh for everything"),
            Auth::AccessToken => assert_eq!((logins, refreshes, verifies), (0, 0, 1), "verified once"),
            Auth::ServiceAccount => assert_eq!(sim.calls("cloud-token"), 1, "one Cloud token"),
            Auth::ApiKey => assert_eq!(sim.calls("cloud-token"), 0),
        }
        assert!(sim.violations().is_empty(), "{auth:?}: {:?}", sim.violations());
    }
}

#[tokio::test]
async fn request_202_and_pending_survive_a_restart_and_issue_once() {
    let sim = sim().await;
    sim.set_request_answer(RequestAnswer::Accepted202);
    sim.set_issuance(Issuance::Approval);
    let res = resources(&sim, Auth::Password);
    let iss = issuer(spec(&sim, Auth::Password));
    let r = request("slow.example.com", &[]);
    let store = Store::default();
    let mut ctx = ctx(&res, Default::default(), &store);
    let e = VenafiSigner::new().sign(&r, &iss, &mut ctx).await.unwrap_err();
    let (requeue_after, reason) = pending_of(&e).unwrap_or_else(|| panic!("{e:?}"));
    assert!(reason.contains("being processed, Status: Post CSR, Stage: 500."), "reason phrase verbatim: {reason}");
    assert_eq!(requeue_after, Duration::from_secs(1));
    // The pickup ID was saved right after the request, before the first retrieve.
    let dn = "\\VED\\Policy\\Certificates\\Kubernetes\\slow.example.com";
    assert!(store.0.lock().unwrap().iter().any(|s| st(s, state::PICKUP_ID) == Some(dn)), "{:?}", store.last());
    // Saved state after a pass: what a restarted controller loads.
    let mut saved = ctx.state_map().clone();
    for n in 0..3 {
        let signer = VenafiSigner::new(); // a new process each time
        let mut c = certbridge::SignContext::new(res.clone(), saved.clone(), None);
        let e = signer.sign(&r, &iss, &mut c).await.unwrap_err();
        let (requeue_after, _) = pending_of(&e).unwrap_or_else(|| panic!("{e:?}"));
        assert_eq!(requeue_after, Duration::from_secs(1), "capped by retrieveInterval 1s (pass {n})");
        saved = c.state_map().clone();
    }
    sim.approve_all();
    let mut c = certbridge::SignContext::new(res.clone(), saved, None);
    let issued = VenafiSigner::new().sign(&r, &iss, &mut c).await.unwrap();
    assert_chain(&sim, &issued, &r.csr_pem);
    assert_eq!((sim.requests_for(&r.csr_pem), sim.issued_for(&r.csr_pem)), (1, 1), "requested and issued once");
    assert_eq!(sim.retrieves_for(&r.csr_pem), 5);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test]
async fn a_restart_between_request_and_saving_adopts_the_object() {
    let sim = sim().await;
    sim.set_issuance(Issuance::Approval);
    let res = resources(&sim, Auth::Password);
    let iss = issuer(spec(&sim, Auth::Password));
    let r = request("crash.example.com", &[]);
    let store = Store::default();
    let mut c = ctx(&res, Default::default(), &store);
    VenafiSigner::new().sign(&r, &iss, &mut c).await.unwrap_err();
    // The controller died after the marker save, before the pickup ID save.
    let marker = store.saved(0);
    assert!(st(&marker, state::REQUEST_DN).is_some() && st(&marker, state::PICKUP_ID).is_none(), "{marker:?}");
    sim.approve_all();
    let mut c = certbridge::SignContext::new(res.clone(), marker, None);
    VenafiSigner::new().sign(&r, &iss, &mut c).await.unwrap();
    assert_eq!(sim.requests_for(&r.csr_pem), 1, "looked before requesting again");
}

#[tokio::test]
async fn a_tpp_object_taken_over_by_another_request_fails_naming_the_clash() {
    let sim = sim().await;
    sim.set_issuance(Issuance::Approval);
    let res = resources(&sim, Auth::Password);
    let iss = issuer(spec(&sim, Auth::Password));
    let signer = VenafiSigner::new();
    // Two keys, one common name: TPP's one object for that name is re-enrolled by the second.
    let (a, b) = (request("shared.example.com", &[]), request("shared.example.com", &[]));
    let (mut ca, mut cb) = (SignContext::offline(res.clone()), SignContext::offline(res.clone()));
    assert_eq!(reaction(&signer.sign(&a, &iss, &mut ca).await.unwrap_err()), "pending");
    assert_eq!(reaction(&signer.sign(&b, &iss, &mut cb).await.unwrap_err()), "pending");
    sim.approve_all();
    let issued = signer.sign(&b, &iss, &mut cb).await.unwrap();
    assert_chain(&sim, &issued, &b.csr_pem);
    let e = signer.sign(&a, &iss, &mut ca).await.unwrap_err();
    assert_eq!(reaction(&e), "permanent", "{e}");
    assert!(e.message.contains("another key") && e.message.contains("shared.example.com"), "{e}");
}

#[tokio::test]
async fn a_rebuilt_client_continues_the_tokens_of_the_one_it_replaces() {
    let sim = sim().await;
    let mut objects = secrets(&sim, Auth::RefreshToken, NS);
    // Resources as the API server would serve them, at a given resourceVersion of the Secrets.
    let at = |objects: &[k8s_openapi::api::core::v1::Secret], rv: &str| {
        let mut s = objects.to_vec();
        s.iter_mut().for_each(|x| x.metadata.resource_version = Some(rv.into()));
        certbridge::Resources::from_objects(NS, s, vec![])
    };
    let iss = issuer(spec(&sim, Auth::RefreshToken));
    let signer = VenafiSigner::new();
    let sign = async |iss: &certbridge::Issuer<_>, res: certbridge::Resources, cn: &str| {
        signer.sign(&request(cn, &[]), iss, &mut SignContext::offline(res)).await
    };
    sign(&iss, at(&objects, "1"), "r1.example.com").await.unwrap();
    assert_eq!(sim.refreshes(), 1, "the Secret's refresh token is used up: TPP rotated it");
    // The Secret changes without touching the token (a label, say), then the issuer's spec: each
    // builds a new client, and each continues the tokens instead of the dead Secret token.
    sign(&iss, at(&objects, "2"), "r2.example.com").await.expect("after a Secret change");
    let mut iss2 = iss.clone();
    iss2.generation = 2;
    sign(&iss2, at(&objects, "2"), "r3.example.com").await.expect("after a spec change");
    assert_eq!((sim.logins(), sim.refreshes()), (0, 1), "one token lineage across both rebuilds");
    // Someone puts a new refresh token into the Secret: that one is used.
    let fresh = sim.mint_tokens().1;
    objects[0] = secret_in(NS, "creds", &[("refresh-token", &fresh), ("client-id", "certbridge")]);
    sign(&iss2, at(&objects, "3"), "r4.example.com").await.expect("with the new token");
    assert_eq!(sim.refreshes(), 2, "started from the Secret's new token");

    // Username/password: a spec change does not log in again.
    let sim = super::common::sim().await;
    let res = resources(&sim, Auth::Password);
    let iss = issuer(spec(&sim, Auth::Password));
    let signer = VenafiSigner::new();
    signer.sign(&request("p1.example.com", &[]), &iss, &mut SignContext::offline(res.clone())).await.unwrap();
    let mut iss2 = iss.clone();
    iss2.generation = 2;
    signer.sign(&request("p2.example.com", &[]), &iss2, &mut SignContext::offline(res.clone())).await.unwrap();
    assert_eq!(sim.logins(), 1);
}

#[tokio::test]
async fn a_pass_on_a_stale_copy_of_the_request_does_not_request_again() {
    let sim = sim().await;
    sim.set_request_answer(RequestAnswer::Accepted202);
    sim.set_issuance(Issuance::Approval);
    let res = resources(&sim, Auth::Password);
    let iss = issuer(spec(&sim, Auth::Password));
    let signer = VenafiSigner::new();
    let mut r = request("stale.example.com", &[]);
    r.object.uid = "uid-stale".into();
    let store = Store::default();
    let e = signer.sign(&r, &iss, &mut ctx(&res, Default::default(), &store)).await.unwrap_err();
    assert_eq!(reaction(&e), "pending", "{e}");
    assert!(st(&store.last(), state::PICKUP_ID).is_some());
    // The controller's watch cache still holds the request as it was before the state was saved
    // (no annotations): the next passes continue from the pickup ID all the same.
    for _ in 0..3 {
        let e = signer.sign(&r, &iss, &mut ctx(&res, Default::default(), &store)).await.unwrap_err();
        assert_eq!(reaction(&e), "pending", "{e}");
    }
    sim.approve_all();
    let issued = signer.sign(&r, &iss, &mut ctx(&res, Default::default(), &store)).await.unwrap();
    assert_chain(&sim, &issued, &r.csr_pem);
    assert_eq!((sim.requests_for(&r.csr_pem), sim.issued_for(&r.csr_pem)), (1, 1), "requested and issued once");
}

#[tokio::test]
async fn click_retry_resets_and_requests_once_more() {
    let sim = sim().await;
    let res = resources(&sim, Auth::Password);
    let iss = issuer(spec(&sim, Auth::Password));
    sim.push_fault("request", Fault::ClickRetry);
    let r = request("retry.example.com", &[]);
    let mut c = SignContext::offline(res.clone());
    let issued = VenafiSigner::new().sign(&r, &iss, &mut c).await.unwrap();
    assert_chain(&sim, &issued, &r.csr_pem);
    assert_eq!((sim.requests_for(&r.csr_pem), sim.calls("reset")), (2, 1));
    assert!(c.state(state::RESET_RETRIED).is_some(), "recorded");
    // A second "click Retry" after the reset fails the request, naming what to do.
    sim.push_fault("request", Fault::ClickRetry);
    sim.push_fault("request", Fault::ClickRetry);
    let r = request("stuck.example.com", &[]);
    let e = VenafiSigner::new().sign(&r, &iss, &mut SignContext::offline(res.clone())).await.unwrap_err();
    assert_eq!(reaction(&e), "permanent", "{e:?}");
    assert!(e.to_string().contains("click Retry") && e.to_string().contains("already reset"), "{e}");
    assert_eq!(sim.calls("reset"), 2);
}

#[tokio::test]
async fn token_expiry_mid_run_refreshes_once_and_fails_nothing() {
    let sim = sim().await;
    let res = resources(&sim, Auth::Password);
    let iss = issuer(spec(&sim, Auth::Password));
    let signer = VenafiSigner::new();
    let r = request("t1.example.com", &[]);
    signer.sign(&r, &iss, &mut SignContext::offline(res.clone())).await.unwrap();
    sim.expire_access_tokens();
    for i in 2..5 {
        let r = request(&format!("t{i}.example.com"), &[]);
        signer.sign(&r, &iss, &mut SignContext::offline(res.clone())).await.unwrap();
    }
    assert_eq!((sim.logins(), sim.refreshes()), (1, 1), "one login, one refresh after the 401");
    // Refresh tokens rotate: the first one is dead, the client holds the new one.
    assert_eq!(sim.issued_total(), 4);

    // Short-lived tokens are refreshed before they expire, without a 401.
    let sim2 = super::common::sim().await;
    sim2.set_access_ttl(Duration::from_secs(2));
    let res2 = resources(&sim2, Auth::Password);
    let iss2 = issuer(spec(&sim2, Auth::Password));
    let signer = VenafiSigner::new();
    signer.sign(&request("s1.example.com", &[]), &iss2, &mut SignContext::offline(res2.clone())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1700)).await; // past 4/5 of the lifetime
    signer.sign(&request("s2.example.com", &[]), &iss2, &mut SignContext::offline(res2.clone())).await.unwrap();
    assert_eq!((sim2.logins(), sim2.refreshes()), (1, 1));
    let unauthorized = sim2.bodies("request").len();
    assert_eq!(unauthorized, 2);
}

#[tokio::test]
async fn custom_fields_merge_request_wins_sorted_and_need_allowed_overrides() {
    let sim = sim().await;
    let res = resources(&sim, Auth::Password);
    let mut s = spec(&sim, Auth::Password);
    s.custom_fields = vec![CustomField { name: "Owner".into(), value: "platform".into(), type_: None }];
    let mut iss = issuer(s.clone());
    iss.annotations.insert(
        "venafi.certbridge.io/custom-fields".into(),
        r#"[{"name":"Cost Center","value":"100","type":"Plain"},{"name":"Zeta","value":"z"}]"#.into(),
    );
    let ann = r#"[{"name":"Cost Center","value":"200"},{"name":"App","value":"web"}]"#;
    let r = request("cf.example.com", &[("venafi.certbridge.io/custom-fields", ann)]);
    let e = VenafiSigner::new().sign(&r, &iss, &mut SignContext::offline(res.clone())).await.unwrap_err();
    assert!(reaction(&e) == "permanent" && e.to_string().contains("venafi.certbridge.io/custom-fields"), "{e}");
    assert_eq!(sim.calls("request"), 0, "refused before calling TPP");
    iss.spec.allowed_overrides = vec![AllowedOverride { name: "custom-fields".into(), values: vec![] }];
    VenafiSigner::new().sign(&r, &iss, &mut SignContext::offline(res.clone())).await.unwrap();
    let body = sim.bodies("request").pop().unwrap();
    assert_eq!(
        body["CustomFields"],
        json!([{"Name":"App","Values":["web"]},{"Name":"Cost Center","Values":["200"]},{"Name":"Owner","Values":["platform"]},{"Name":"Zeta","Values":["z"]}])
    );
    assert_eq!(body["Origin"], "certbridge");
    assert_eq!(body["SubjectAltNames"], json!([{"Type": 2, "Name": "cf.example.com"}]));
    assert_eq!(body["ObjectName"], "cf.example.com");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// The error table end to end: what TPP answers → what the controller does, with the text.
#[tokio::test]
async fn errors_by_table() {
    let sim = sim().await;
    let res = resources(&sim, Auth::Password);
    let iss = issuer(spec(&sim, Auth::Password));
    let signer = VenafiSigner::new();
    signer.check(&iss, &res).await.unwrap();
    let status = |code: u16, reason: &str, body: serde_json::Value| Fault::Status(code, reason.into(), body);
    let rows: Vec<(Fault, &str, &str)> = vec![
        (
            status(
                400,
                "Bad Request",
                json!({"Error": "This CSR appears to reuse a private key.  Private key reuse has not been allowed."}),
            ),
            "permanent",
            "rotationPolicy: Always",
        ),
        (
            status(400, "Custom field Cost Center is mandatory", json!({})),
            "permanent",
            "Custom field Cost Center is mandatory",
        ),
        (
            status(
                500,
                "Internal Server Error",
                json!({"Error": "WebSDK CertRequest Module Requested Certificate: Request DN is empty"}),
            ),
            "permanent",
            "commonName",
        ),
        (
            status(400, "Bad Request", json!({"Error": "PolicyDN: \\VED\\Policy\\Gone does not exist"})),
            "issuer_not_ready",
            "ZoneNotFound",
        ),
        (status(503, "Service Unavailable", json!({})), "transient", "HTTP 503"),
        (status(429, "Too Many Requests", json!({})), "transient", "HTTP 429"),
        (Fault::Reset, "transient", "TPP request"),
        (
            status(
                403,
                "Forbidden",
                json!({"error": "insufficient_scope", "error_description": "Grant rejected scope"}),
            ),
            "issuer_not_ready",
            "AuthFailed",
        ),
    ];
    for (i, (fault, reaction_want, text)) in rows.into_iter().enumerate() {
        sim.push_fault("request", fault.clone());
        let r = request(&format!("e{i}.example.com"), &[]);
        let e = signer.sign(&r, &iss, &mut SignContext::offline(res.clone())).await.unwrap_err();
        assert_eq!(reaction(&e), reaction_want, "{fault:?}: {e}");
        assert!(e.to_string().contains(text), "{fault:?}: {e}");
    }
    // 401 twice: refreshed once, then AuthFailed.
    let unauthorized = Fault::Status(
        401,
        "Unauthorized".into(),
        json!({"error": "invalid_token", "error_description": "Invalid token format"}),
    );
    sim.push_fault("request", unauthorized.clone());
    sim.push_fault("request", unauthorized);
    let e =
        signer.sign(&request("u.example.com", &[]), &iss, &mut SignContext::offline(res.clone())).await.unwrap_err();
    assert_eq!(reaction(&e), "issuer_not_ready", "{e}");
    assert!(e.to_string().contains("AuthFailed") && e.to_string().contains("Invalid token format"), "{e}");
    assert_eq!(sim.refreshes(), 1, "refreshed once before giving up");
    // The real key-reuse path (not a fault): the simulator refuses a key it has seen.
    sim.set_forbid_key_reuse(true);
    let r = request("k.example.com", &[]);
    signer.sign(&r, &iss, &mut SignContext::offline(res.clone())).await.unwrap();
    let e = signer.sign(&r, &iss, &mut SignContext::offline(res.clone())).await.unwrap_err();
    assert_eq!(reaction(&e), "permanent");
    assert!(e.to_string().contains("Private key reuse has not been allowed"), "{e}");
    // Never a secret in a message.
    assert!(!e.to_string().contains(&sim.options().password));
}

#[tokio::test]
async fn max_pending_time_fails_a_request_that_never_issues() {
    let sim = sim().await;
    sim.set_issuance(Issuance::Approval);
    let res = resources(&sim, Auth::Password);
    let mut s = spec(&sim, Auth::Password);
    s.max_pending_time = Some("1h".into());
    let iss = issuer(s);
    let r = request("never.example.com", &[]);
    let mut c = SignContext::offline(res.clone());
    let e = VenafiSigner::new().sign(&r, &iss, &mut c).await.unwrap_err();
    assert_eq!(reaction(&e), "pending");
    let mut saved = c.state_map().clone();
    saved.insert(state::REQUESTED_AT.into(), "2020-01-01T00:00:00Z".into());
    let mut c = certbridge::SignContext::new(res.clone(), saved, None);
    let e = VenafiSigner::new().sign(&r, &iss, &mut c).await.unwrap_err();
    assert_eq!(reaction(&e), "permanent", "{e}");
    assert!(e.to_string().contains("maxPendingTime (1h)"), "{e}");
}

#[tokio::test]
async fn cloud_pending_approval_rejection_and_zone_errors() {
    let sim = sim().await;
    sim.set_issuance(Issuance::Approval);
    let res = resources(&sim, Auth::ApiKey);
    let iss = issuer(spec(&sim, Auth::ApiKey));
    let signer = VenafiSigner::new();
    let r = request("cloud.example.com", &[]);
    let mut c = SignContext::offline(res.clone());
    let e = signer.sign(&r, &iss, &mut c).await.unwrap_err();
    assert_eq!(reaction(&e), "pending");
    assert!(e.to_string().contains("PENDING_APPROVAL"), "{e}");
    let saved = c.state_map().clone();
    assert!(saved.contains_key(state::CLOUD_REQUEST_ID));
    sim.approve_all();
    let mut c = certbridge::SignContext::new(res.clone(), saved, None);
    let issued = VenafiSigner::new().sign(&r, &iss, &mut c).await.unwrap();
    assert_chain(&sim, &issued, &r.csr_pem);
    assert_eq!(sim.requests_for(&r.csr_pem), 1);
    let body = sim.bodies("cloud-request").pop().unwrap();
    assert_eq!(body["validityPeriod"], "P7D");

    let r = request("rejected.example.com", &[]);
    let mut c = SignContext::offline(res.clone());
    signer.sign(&r, &iss, &mut c).await.unwrap_err();
    sim.reject_cloud("Rejected by approver: not our domain");
    let e = signer.sign(&r, &iss, &mut c).await.unwrap_err();
    assert_eq!(reaction(&e), "permanent");
    assert!(e.to_string().contains("REJECTED_APPROVAL: Rejected by approver: not our domain"), "{e}");
    assert_eq!(sim.calls("application"), 1, "zone resolved once per issuer generation");

    let mut s = spec(&sim, Auth::ApiKey);
    s.zone = "Kubernetes\\NoSuchTemplate".into();
    let e = VenafiSigner::new().check(&issuer(s), &res).await.unwrap_err();
    assert_eq!(reaction(&e), "issuer_not_ready");
    assert!(e.to_string().contains("ZoneNotFound") && e.to_string().contains("NoSuchTemplate"), "{e}");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// The Ready message names the zone and the CA its policy names; a 401 that survives a token
/// refresh is reason `AuthFailed` (cert-manager v1.21's issuer reason).
#[tokio::test]
async fn check_names_the_zone_ca_and_refused_tokens_are_auth_failed() {
    let sim = sim().await;
    let res = resources(&sim, Auth::RefreshToken);
    let iss = issuer(spec(&sim, Auth::RefreshToken));
    let signer = VenafiSigner::new();
    let ready = signer.check(&iss, &res).await.unwrap();
    assert_eq!(
        ready.text(),
        Some(r#"TPP zone "Certificates\Kubernetes" issues from CA \VED\Policy\Certificate Authorities\Sim Issuing CA"#)
    );
    let unauthorized = || {
        Fault::Status(
            401,
            "Unauthorized".into(),
            json!({"error": "invalid_token", "error_description": "Token revoked"}),
        )
    };
    sim.push_fault("verify", unauthorized());
    sim.push_fault("verify", unauthorized());
    let refreshes = sim.refreshes();
    let e = signer.check(&iss, &res).await.unwrap_err();
    assert_eq!(sim.refreshes(), refreshes + 1, "one refresh between the two 401s");
    assert_eq!(reaction(&e), "issuer_not_ready");
    assert_eq!(e.reason(), Some("AuthFailed"), "{e}");
    signer.check(&iss, &res).await.expect("ready again once TPP accepts the token");

    // Another spec is another generation of the issuer (the API server bumps it; the client cache
    // is keyed by it, and these in-memory Secrets carry no resourceVersion).
    let mut cloud_issuer = issuer(spec(&sim, Auth::ApiKey));
    cloud_issuer.generation = 2;
    let cloud = signer.check(&cloud_issuer, &resources(&sim, Auth::ApiKey)).await.unwrap();
    let text = cloud.text().unwrap_or_default();
    assert!(text.starts_with(r#"TLS Protect Cloud zone "Kubernetes\Default" is usable"#), "{text}");
}

#[tokio::test]
async fn checks_name_the_zone_and_the_credentials() {
    let sim = sim().await;
    let res = resources(&sim, Auth::Password);
    let mut s = spec(&sim, Auth::Password);
    s.zone = "Certificates\\Nope".into();
    let e = VenafiSigner::new().check(&issuer(s), &res).await.unwrap_err();
    assert_eq!(reaction(&e), "issuer_not_ready");
    assert!(e.to_string().contains("ZoneNotFound") && e.to_string().contains("Certificates\\\\Nope"), "{e}");
    assert_eq!(e.reason(), Some("ZoneNotFound"));
    let bad = certbridge::Resources::from_objects(
        NS,
        vec![
            secret_in(NS, "creds", &[("username", "tppadmin"), ("password", "wrong")]),
            secrets(&sim, Auth::Password, NS).remove(1),
        ],
        vec![],
    );
    let e = VenafiSigner::new().check(&issuer(spec(&sim, Auth::Password)), &bad).await.unwrap_err();
    assert_eq!(reaction(&e), "issuer_not_ready");
    assert!(
        e.to_string().contains("AuthFailed") && e.to_string().contains("Username/password combination not valid"),
        "{e}"
    );
    assert!(!e.to_string().contains("wrong"), "no password in messages: {e}");
    assert_eq!(e.reason(), Some("AuthFailed"), "the issuer's Ready=False reason");
    let e = VenafiSigner::new()
        .check(
            &issuer(spec(&sim, Auth::AccessToken)),
            &certbridge::Resources::from_objects(
                NS,
                vec![
                    secret_in(NS, "creds", &[("access-token", "not-a-token")]),
                    secrets(&sim, Auth::Password, NS).remove(1),
                ],
                vec![],
            ),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("AuthFailed") && e.to_string().contains("Invalid token format"), "{e}");
    assert!(!e.to_string().contains("not-a-token"), "{e}");
}
