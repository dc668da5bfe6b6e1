//! TokenRequest → JWT → TokenReview round trip, and the OIDC/JWKS documents.

use crate::common::*;
use base64::Engine as _;
use certbridge_testkit::KubeSim;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn review(sim: &KubeSim, token: &str, audiences: Option<Vec<String>>) -> Value {
    // A plain POST carrying someone else's bearer token, as OpenBao's kubernetes auth does.
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token, "audiences": audiences}});
    let req = http::Request::post("/apis/authentication.k8s.io/v1/tokenreviews")
        .header("content-type", "application/json")
        .header("authorization", "Bearer some-reviewer-token")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let text = sim.client().request_text(req).await.unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn token_request_and_review_round_trip() {
    let sim = KubeSim::start().await.unwrap();
    let client = sim.client();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "cert-manager");
    let sa = sas
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "issuer"}})).unwrap())
        .await
        .unwrap();
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["vault://certbridge".into()],
            expiration_seconds: Some(1200),
            ..Default::default()
        },
        ..Default::default()
    };
    let issued = sas.create_token_request("issuer", &PostParams::default(), &tr).await.unwrap();
    let token = issued.status.unwrap().token;
    let c = claims(&token);
    assert_eq!(c["aud"], json!(["vault://certbridge"]));
    assert_eq!(c["sub"], "system:serviceaccount:cert-manager:issuer");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 1200);
    assert_eq!(c["kubernetes.io"]["namespace"], "cert-manager");
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["uid"], json!(sa.metadata.uid.clone().unwrap()));
    assert_eq!(c["iss"], "https://kubernetes.default.svc.cluster.local");

    let r = review(&sim, &token, Some(vec!["vault://certbridge".into()])).await;
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(r["status"]["user"]["username"], "system:serviceaccount:cert-manager:issuer");
    assert_eq!(r["status"]["user"]["uid"], json!(sa.metadata.uid.clone().unwrap()));
    assert!(r["status"]["user"]["groups"].as_array().unwrap().contains(&json!("system:serviceaccounts:cert-manager")));
    assert_eq!(r["status"]["audiences"], json!(["vault://certbridge"]));

    // Wrong audience, tampered signature, garbage: not authenticated.
    let r = review(&sim, &token, Some(vec!["other".into()])).await;
    assert_eq!(r["status"]["authenticated"], false);
    assert!(r["status"]["error"].as_str().unwrap().contains("audience"), "{r}");
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(review(&sim, &tampered, None).await["status"]["authenticated"], false);
    assert_eq!(review(&sim, "not-a-jwt", None).await["status"]["authenticated"], false);

    // Typed client too, with default audiences.
    let default_tok = sas
        .create_token_request("issuer", &PostParams::default(), &TokenRequest::default())
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let tr = reviews
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec { token: Some(default_tok.clone()), audiences: None },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tr.status.unwrap().authenticated, Some(true));

    // Short expirations are rejected like the apiserver does.
    let short = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(60), ..Default::default() },
        ..Default::default()
    };
    let e = api_err(sas.create_token_request("issuer", &PostParams::default(), &short).await);
    assert_eq!(e.code, 422);
    // Unknown service account.
    assert_eq!(api_err(sas.create_token_request("ghost", &PostParams::default(), &tr_default()).await).code, 404);

    // Deleting the service account invalidates its tokens.
    sas.delete("issuer", &DeleteParams::default()).await.unwrap();
    let r = review(&sim, &default_tok, None).await;
    assert_eq!(r["status"]["authenticated"], false);
}

fn tr_default() -> TokenRequest {
    TokenRequest::default()
}

#[tokio::test]
async fn jwks_verifies_issued_tokens() {
    let sim = KubeSim::start().await.unwrap();
    let client = sim.client();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    sas.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap())
        .await
        .unwrap();
    let token = sas
        .create_token_request("x", &PostParams::default(), &TokenRequest::default())
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let oidc: Value = serde_json::from_str(
        &client
            .request_text(http::Request::get("/.well-known/openid-configuration").body(vec![]).unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(oidc["issuer"], "https://kubernetes.default.svc.cluster.local");
    let jwks: Value = serde_json::from_str(
        &client.request_text(http::Request::get("/openid/v1/jwks").body(vec![]).unwrap()).await.unwrap(),
    )
    .unwrap();
    let key = &jwks["keys"][0];
    let d = |s: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.as_str().unwrap()).unwrap();
    let mut point = vec![4u8];
    point.extend(d(&key["x"]));
    point.extend(d(&key["y"]));
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(signed.as_bytes(), &sig)
        .expect("signature verifies with the published JWK");
}
