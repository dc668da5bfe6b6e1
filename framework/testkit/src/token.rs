//! ServiceAccount tokens: `serviceaccounts/token` (TokenRequest) issues ES256 JWTs signed
//! by the server's key; `tokenreviews` verifies them (signature, issuer, expiry, audience,
//! that the ServiceAccount still exists with the same uid).
//!
//! JWTs are built directly on `ring` (already in the tree through kube's rustls) rather than
//! a JWT crate: ES256 with ring's fixed-size signatures is exactly the JWS format, and
//! compact serialisation is a few lines.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use serde_json::{Value, json};
use sha2::Digest;

use crate::error::{ApiError, ApiResult, FieldError};
use crate::objects;
use crate::resources::ResKey;
use crate::store::Store;

/// The server's service-account token signer.
pub(crate) struct TokenSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
    pub issuer: String,
    pub audiences: Vec<String>,
}

impl TokenSigner {
    pub fn new(issuer: String, audiences: Vec<String>) -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| anyhow::anyhow!("generating key: {e}"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| anyhow::anyhow!("loading key: {e}"))?;
        let kid = B64URL.encode(sha2::Sha256::digest(key.public_key().as_ref()));
        Ok(TokenSigner { key, rng, kid, issuer, audiences })
    }

    fn sign(&self, claims: &Value) -> ApiResult<String> {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let input = format!("{}.{}", B64URL.encode(header.to_string()), B64URL.encode(claims.to_string()));
        let sig = self.key.sign(&self.rng, input.as_bytes()).map_err(|_| ApiError::internal("signing failed"))?;
        Ok(format!("{input}.{}", B64URL.encode(sig.as_ref())))
    }

    /// Verifies the signature and returns the claims.
    fn verify(&self, token: &str) -> Result<Value, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("malformed token".into());
        };
        let header: Value =
            B64URL.decode(h).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or("malformed header")?;
        if header["alg"] != "ES256" {
            return Err("unexpected signing algorithm".into());
        }
        let sig = B64URL.decode(s).map_err(|_| "malformed signature")?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| "square/go-jose: error in cryptographic primitive".to_string())?;
        B64URL.decode(c).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(|| "malformed claims".into())
    }

    /// The JWKS document (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        let pk = self.key.public_key().as_ref();
        json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
            "x": B64URL.encode(&pk[1..33]), "y": B64URL.encode(&pk[33..65]),
        }]})
    }

    /// The OIDC discovery document (`/.well-known/openid-configuration`).
    pub fn openid_configuration(&self, base_url: &str) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{base_url}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

fn sa_key() -> ResKey {
    ResKey { group: String::new(), plural: "serviceaccounts".into() }
}

/// The audiences a request lists, or the server's when it lists none (TokenRequest and
/// TokenReview alike).
fn audiences(listed: Option<&Value>, default: &[String]) -> Vec<String> {
    listed
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect::<Vec<_>>())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// POST `serviceaccounts/<name>/token`.
pub(crate) fn token_request(
    store: &Store,
    signer: &TokenSigner,
    ns: &str,
    name: &str,
    body: &[u8],
) -> ApiResult<Value> {
    let sa = store.get(&sa_key(), ns, name).ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let spec = req.get("spec").cloned().unwrap_or(json!({}));
    let exp_secs = spec.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(3600);
    let out_of_range = if exp_secs < 600 {
        Some("may not specify a duration less than 10 minutes")
    } else if exp_secs > 1 << 32 {
        Some("may not specify a duration larger than 2^32 seconds")
    } else {
        None
    };
    if let Some(why) = out_of_range {
        let err = FieldError::invalid("spec.expirationSeconds", json!(exp_secs), why);
        return Err(ApiError::invalid("TokenRequest", "authentication.k8s.io", name, &[err]));
    }
    let auds = audiences(spec.get("audiences"), &signer.audiences);
    let now = jiff::Timestamp::now().as_second();
    let exp = now + exp_secs;
    let sa_uid = objects::meta_str(sa, "uid").unwrap_or_default();
    let mut k8s = json!({"namespace": ns, "serviceaccount": {"name": name, "uid": sa_uid}});
    if let Some(b) = spec.get("boundObjectRef").filter(|b| b.is_object()) {
        let kind = b["kind"].as_str().unwrap_or_default().to_lowercase();
        if !kind.is_empty() {
            k8s[kind] = json!({"name": b["name"], "uid": b["uid"]});
        }
    }
    let claims = json!({
        "aud": auds, "exp": exp, "iat": now, "nbf": now, "iss": signer.issuer,
        "jti": objects::new_uid(), "kubernetes.io": k8s,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
    });
    let token = signer.sign(&claims)?;
    let exp_ts =
        jiff::Timestamp::from_second(exp).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
    Ok(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": objects::now_time()},
        "spec": {"audiences": auds, "expirationSeconds": exp_secs, "boundObjectRef": spec.get("boundObjectRef").cloned().unwrap_or(Value::Null)},
        "status": {"token": token, "expirationTimestamp": exp_ts},
    }))
}

/// POST `tokenreviews`: any caller may ask (no authn/authz on the reviewer here).
pub(crate) fn token_review(store: &Store, signer: &TokenSigner, body: &[u8]) -> ApiResult<Value> {
    let mut review: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let token = review.pointer("/spec/token").and_then(Value::as_str).unwrap_or_default().to_string();
    if token.is_empty() {
        return Err(ApiError::invalid(
            "TokenReview",
            "authentication.k8s.io",
            "",
            &[FieldError::required("spec.token", "")],
        ));
    }
    let wanted = audiences(review.pointer("/spec/audiences"), &signer.audiences);
    let status = match review_claims(store, signer, &token, &wanted) {
        Ok((claims, auds)) => {
            let ns = claims.pointer("/kubernetes.io/namespace").and_then(Value::as_str).unwrap_or_default();
            let uid = claims.pointer("/kubernetes.io/serviceaccount/uid").cloned().unwrap_or(json!(""));
            let mut extra = json!({"authentication.kubernetes.io/credential-id": [format!("JTI={}", claims["jti"].as_str().unwrap_or_default())]});
            if let Some(p) = claims.pointer("/kubernetes.io/pod") {
                extra["authentication.kubernetes.io/pod-name"] = json!([p["name"]]);
                extra["authentication.kubernetes.io/pod-uid"] = json!([p["uid"]]);
            }
            json!({
                "authenticated": true,
                "user": {
                    "username": claims["sub"],
                    "uid": uid,
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                    "extra": extra,
                },
                "audiences": auds,
            })
        }
        Err(e) => json!({"authenticated": false, "user": {}, "error": format!("[invalid bearer token, {e}]")}),
    };
    review["status"] = status;
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    review["kind"] = json!("TokenReview");
    if review.get("metadata").is_none() {
        review["metadata"] = json!({"creationTimestamp": null});
    }
    Ok(review)
}

fn review_claims(
    store: &Store,
    signer: &TokenSigner,
    token: &str,
    wanted: &[String],
) -> Result<(Value, Vec<String>), String> {
    let claims = signer.verify(token)?;
    if claims["iss"] != signer.issuer.as_str() {
        return Err("token issuer is not recognized".into());
    }
    let now = jiff::Timestamp::now().as_second();
    if claims["exp"].as_i64().is_none_or(|e| e <= now) {
        return Err("service account token has expired".into());
    }
    if claims["nbf"].as_i64().is_some_and(|n| n > now + 60) {
        return Err("service account token is not valid yet".into());
    }
    let token_auds: Vec<String> = match &claims["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        _ => vec![],
    };
    let auds: Vec<String> = wanted.iter().filter(|a| token_auds.contains(a)).cloned().collect();
    if auds.is_empty() {
        return Err("token audiences [".to_string()
            + &token_auds.join(" ")
            + "] is invalid for the target audiences ["
            + &wanted.join(" ")
            + "]");
    }
    let ns = claims.pointer("/kubernetes.io/namespace").and_then(Value::as_str).unwrap_or_default();
    let name = claims.pointer("/kubernetes.io/serviceaccount/name").and_then(Value::as_str).unwrap_or_default();
    let uid = claims.pointer("/kubernetes.io/serviceaccount/uid").and_then(Value::as_str).unwrap_or_default();
    match store.get(&sa_key(), ns, name) {
        Some(sa) if objects::meta_str(sa, "uid") == Some(uid) => Ok((claims, auds)),
        Some(_) => Err(format!("service account UID ({uid}) does not match claim")),
        None => Err(format!("service account {ns}/{name} has been deleted")),
    }
}
