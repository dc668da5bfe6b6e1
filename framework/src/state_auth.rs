//! Authenticated request state: the per-request state map (`state.<group>/<key>` annotations)
//! is writable by whoever may patch the request, so the controller signs what it saves and
//! ignores what it did not sign.
//!
//! The MAC is HMAC-SHA256 over a length-prefixed encoding of the request's identity (kind,
//! namespace, name, uid) and every state key and value, kept in the annotation
//! [`mac_annotation`] next to the state. Binding the uid means state copied from another
//! request (even a genuine one, of another tenant) does not verify either. The key lives in a
//! Secret in the controller's own namespace ([`StateKey::load_or_create`]), created with 32
//! random bytes on first start, so it survives restarts and is shared by replicas; tenants
//! cannot read it (they have no access to the controller's namespace).
//!
//! What the MAC does not stop: replaying an *older* state of the same request, which is a state
//! the controller itself wrote for that very request (an adapter's crash-recovery path must cope
//! with it anyway); and anyone who can read the controller's Secret (the cluster admin, who is
//! trusted).
//!
//! `ring::hmac` (already in the tree through rustls) rather than the `hmac` crate: it verifies in
//! constant time and adds no dependency.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

/// The key in the state-key Secret's `data`.
pub const STATE_KEY_FIELD: &str = "hmac-sha256-key";

const KEY_LEN: usize = 32;
const DOMAIN: &[u8] = b"certbridge request state v1";

/// The annotation holding the MAC of a request's state: `statemac.<group>/hmac-sha256`.
/// It is outside the `state.<group>/` prefix so adapters never see it as a state key.
pub fn mac_annotation(group: &str) -> String {
    format!("statemac.{group}/hmac-sha256")
}

/// Which request a state map belongs to: the MAC covers all four.
#[derive(Debug, Clone, Copy)]
pub struct StateOwner<'a> {
    /// `CertificateRequest` or `CertificateSigningRequest`.
    pub kind: &'a str,
    /// Empty for cluster-scoped objects.
    pub namespace: &'a str,
    /// The object's name.
    pub name: &'a str,
    /// The object's uid (a deleted and recreated request gets a new one).
    pub uid: &'a str,
}

/// Why the state key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StateKeyError {
    /// The Secret exists but does not hold a usable key; the message names Secret and field.
    #[error(
        "Secret {namespace}/{name} field {STATE_KEY_FIELD} must hold at least {KEY_LEN} bytes (delete the Secret to have the controller create a new key; requests in flight lose their state)"
    )]
    BadKey {
        /// The controller's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// Reading or creating the Secret failed.
    #[error("reading or creating Secret {namespace}/{name}: {source}")]
    Api {
        /// The controller's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// What a request's stored state turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// No state and no MAC: a fresh request.
    Absent,
    /// The MAC verifies: the state is the controller's own.
    Valid(BTreeMap<String, String>),
    /// State or MAC present but the MAC is missing or does not verify: treat as absent and say so.
    Rejected(&'static str),
}

/// The HMAC key that authenticates request state.
pub struct StateKey {
    key: hmac::Key,
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(..)")
    }
}

impl StateKey {
    /// A key from raw bytes (at least 32).
    pub fn from_bytes(bytes: &[u8]) -> Option<StateKey> {
        (bytes.len() >= KEY_LEN).then(|| StateKey { key: hmac::Key::new(hmac::HMAC_SHA256, bytes) })
    }

    /// A fresh random key and its bytes.
    pub fn generate() -> (StateKey, Vec<u8>) {
        let mut bytes = vec![0u8; KEY_LEN];
        SystemRandom::new().fill(&mut bytes).expect("the system random source works");
        (StateKey::from_bytes(&bytes).expect("32 bytes"), bytes)
    }

    /// Reads the key from Secret `namespace/name`, creating the Secret with a random key when it
    /// does not exist. Two replicas starting together both end up with the one that was created
    /// first (the loser of the create race reads the winner's).
    pub async fn load_or_create(client: kube::Client, namespace: &str, name: &str) -> Result<StateKey, StateKeyError> {
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let api_err = |source| StateKeyError::Api { namespace: namespace.into(), name: name.into(), source };
        let from_secret = |s: &Secret| {
            s.data
                .as_ref()
                .and_then(|d| d.get(STATE_KEY_FIELD))
                .and_then(|b| StateKey::from_bytes(&b.0))
                .ok_or_else(|| StateKeyError::BadKey { namespace: namespace.into(), name: name.into() })
        };
        if let Some(s) = api.get_opt(name).await.map_err(api_err)? {
            return from_secret(&s);
        }
        let (key, bytes) = StateKey::generate();
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("app.kubernetes.io/component".into(), "state-key".into())])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(STATE_KEY_FIELD.into(), ByteString(bytes))])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(key),
            Err(kube::Error::Api(e)) if e.code == 409 => from_secret(&api.get(name).await.map_err(api_err)?),
            Err(e) => Err(api_err(e)),
        }
    }

    fn message(owner: &StateOwner, state: &BTreeMap<String, String>) -> Vec<u8> {
        let mut m = Vec::with_capacity(256);
        let mut put = |b: &[u8]| {
            m.extend_from_slice(&(b.len() as u64).to_be_bytes());
            m.extend_from_slice(b);
        };
        put(DOMAIN);
        for part in [owner.kind, owner.namespace, owner.name, owner.uid] {
            put(part.as_bytes());
        }
        put(&(state.len() as u64).to_be_bytes());
        for (k, v) in state {
            put(k.as_bytes());
            put(v.as_bytes());
        }
        m
    }

    /// The MAC to store with `state` (base64url).
    pub fn sign(&self, owner: &StateOwner, state: &BTreeMap<String, String>) -> String {
        B64URL.encode(hmac::sign(&self.key, &Self::message(owner, state)).as_ref())
    }

    /// Checks stored `state` against its stored `mac` (constant-time comparison).
    pub fn verify(&self, owner: &StateOwner, state: BTreeMap<String, String>, mac: Option<&str>) -> Verified {
        match mac {
            None if state.is_empty() => Verified::Absent,
            None => Verified::Rejected("the request carries state annotations but no state MAC"),
            Some(mac) => {
                match B64URL.decode(mac) {
                    Ok(tag) if hmac::verify(&self.key, &Self::message(owner, &state), &tag).is_ok() => {
                        if state.is_empty() { Verified::Absent } else { Verified::Valid(state) }
                    }
                    _ => Verified::Rejected("the request's state MAC does not verify (state written by someone else)"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> StateOwner<'_> {
        StateOwner { kind: "CertificateRequest", namespace: "team-a", name: "web-1", uid }
    }

    fn state(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn genuine_state_verifies_and_forgeries_do_not() {
        let (key, _) = StateKey::generate();
        let s = state(&[("phase", "approval-pending"), ("approval-id", "7")]);
        let mac = key.sign(&owner("u1"), &s);
        assert_eq!(key.verify(&owner("u1"), s.clone(), Some(&mac)), Verified::Valid(s.clone()));

        // A tenant edits the approval id, keeping the MAC.
        let forged = state(&[("phase", "approval-pending"), ("approval-id", "8")]);
        assert!(matches!(key.verify(&owner("u1"), forged.clone(), Some(&mac)), Verified::Rejected(_)));
        // ... or adds a key (a marker), or writes state with no MAC, or garbage as the MAC.
        let mut marker = s.clone();
        marker.insert("enroll-started".into(), "2026-01-01T00:00:00Z".into());
        assert!(matches!(key.verify(&owner("u1"), marker, Some(&mac)), Verified::Rejected(_)));
        assert!(matches!(key.verify(&owner("u1"), forged, None), Verified::Rejected(_)));
        assert!(matches!(key.verify(&owner("u1"), s.clone(), Some("not base64 !")), Verified::Rejected(_)));
        // Genuine state copied onto another request (other uid) does not verify.
        assert!(matches!(key.verify(&owner("u2"), s.clone(), Some(&mac)), Verified::Rejected(_)));
        // Another controller's key does not verify it either.
        let (other, _) = StateKey::generate();
        assert!(matches!(other.verify(&owner("u1"), s, Some(&mac)), Verified::Rejected(_)));
        // Nothing stored: absent, no complaint.
        assert_eq!(key.verify(&owner("u1"), BTreeMap::new(), None), Verified::Absent);
    }

    #[test]
    fn encoding_is_unambiguous() {
        let (key, _) = StateKey::generate();
        let a = key.sign(&owner("u"), &state(&[("ab", "c")]));
        let b = key.sign(&owner("u"), &state(&[("a", "bc")]));
        assert_ne!(a, b);
        assert!(StateKey::from_bytes(&[0u8; 31]).is_none());
    }
}
