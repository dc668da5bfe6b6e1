//! The state-authentication key Secret against kube-sim: created on first start in the
//! controller's namespace, reused after a restart, and a tenant's state signed with another key
//! does not verify.

use std::collections::BTreeMap;

use certbridge::state_auth::{STATE_KEY_FIELD, StateKey, StateOwner, Verified};
use certbridge_testkit::KubeSim;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

#[tokio::test]
async fn state_auth_key_is_created_once() {
    let sim = KubeSim::start().await.unwrap();
    let client = sim.client();
    let owner = StateOwner { kind: "CertificateRequest", namespace: "team-a", name: "web", uid: "u-1" };
    let state = BTreeMap::from([("approval-id".to_string(), "41".to_string())]);

    let first = StateKey::load_or_create(client.clone(), "cert-manager", "certbridge-state-key").await.unwrap();
    let mac = first.sign(&owner, &state);
    let secret = Api::<Secret>::namespaced(client.clone(), "cert-manager").get("certbridge-state-key").await.unwrap();
    assert_eq!(secret.data.unwrap()[STATE_KEY_FIELD].0.len(), 32);

    // A restart (or a second replica) reads the same key: the MAC still verifies.
    let again = StateKey::load_or_create(client.clone(), "cert-manager", "certbridge-state-key").await.unwrap();
    assert_eq!(again.verify(&owner, state.clone(), Some(&mac)), Verified::Valid(state.clone()));

    // A tenant who runs their own copy of the controller code (their own key) cannot mint a MAC
    // that the shared controller accepts.
    let (tenant_key, _) = StateKey::generate();
    let forged = BTreeMap::from([("approval-id".to_string(), "42".to_string())]);
    let forged_mac = tenant_key.sign(&owner, &forged);
    assert!(matches!(again.verify(&owner, forged, Some(&forged_mac)), Verified::Rejected(_)));

    // A Secret that holds no usable key is an error naming the Secret and field, never a silent
    // new key (which would orphan every request in flight).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "cert-manager");
    secrets
        .create(
            &Default::default(),
            &certbridge::testing::secret("cert-manager", "short-key", None, &[(STATE_KEY_FIELD, b"too short")]),
        )
        .await
        .unwrap();
    let err = StateKey::load_or_create(client.clone(), "cert-manager", "short-key").await.unwrap_err().to_string();
    assert!(err.contains("cert-manager/short-key") && err.contains(STATE_KEY_FIELD), "{err}");
    sim.shutdown().await;
}
