//! Revocation on delete (what cert-manager#2178 asks for): when a CertificateRequest annotated
//! `venafi.certbridge.io/revoke-on-delete: "true"` is deleted, the framework's finalizer calls
//! [`Signer::revoke`](certbridge::Signer::revoke), which revokes the certificate at TPP with
//! `POST vedsdk/certificates/revoke` (`ca-protocols.md` §7.2).
//!
//! * The certificate is named by its **thumbprint** (SHA-1 of the leaf's DER, as TPP computes
//!   it), never by the pickup ID: TPP names its certificate object after the CN, so a renewal
//!   reuses the DN, and revoking "the DN" after the old request is garbage-collected
//!   (cert-manager's `revisionHistoryLimit`) would revoke the *renewed* certificate.
//! * Reason 5 (cessation of operation), a comment naming the request; the TPP object is not
//!   disabled (`Disable: false`), so later requests for the same name still work.
//! * `{Success: true}` is done (`Requested: false` means it was already revoked); `Success:
//!   false` is a permanent failure with TPP's `Error`; HTTP errors follow the error table
//!   ([`tpp_error`]): 5xx, timeouts and resets are retried, a 401 after one refresh is
//!   `AuthFailed` (retried until the framework's one-hour bound).
//! * TLS Protect Cloud: revocation is not documented in `ca-protocols.md` §3/§7.2, so a Cloud
//!   issuer does not offer it ([`supported`] is false) and its requests get no finalizer.

use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use certbridge::{RequestObject, SignError};

use crate::client::TppClient;
use crate::http::{self, BODY_LIMIT};
use crate::signer::tpp_error;
use crate::spec::{Product, VenafiIssuerSpec};

/// RFC 5280 reason code sent to TPP: cessationOfOperation (the request was deleted).
pub const REASON: i64 = 5;

/// Whether an issuer with `spec` can revoke: TPP only.
pub fn supported(spec: &VenafiIssuerSpec) -> bool {
    matches!(spec.product(), Ok(Product::Tpp(_)))
}

/// TPP's thumbprint of the first certificate in `chain_pem`: uppercase hex SHA-1 of its DER.
pub fn thumbprint(chain_pem: &str) -> Result<String, String> {
    let leaf = pem::parse_many(chain_pem)
        .map_err(|e| format!("the issued certificate is not PEM: {e}"))?
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .ok_or("the issued certificate holds no CERTIFICATE block")?;
    Ok(Sha1::digest(leaf.contents()).iter().map(|b| format!("{b:02X}")).collect())
}

/// Revokes the leaf of `chain_pem` at TPP.
pub async fn tpp(
    client: &TppClient,
    chain_pem: &str,
    request: &RequestObject,
    spec: &VenafiIssuerSpec,
) -> Result<(), SignError> {
    let thumbprint = thumbprint(chain_pem).map_err(SignError::permanent)?;
    let who = match &request.namespace {
        Some(ns) => format!("{ns}/{}", request.name),
        None => request.name.clone(),
    };
    let body = json!({
        "Thumbprint": thumbprint,
        "Reason": REASON,
        "Comments": format!("revoked by certbridge-venafi: {:?} {who} was deleted", request.kind),
        "Disable": false,
    });
    let answer =
        client.post("vedsdk/certificates/revoke", &body, BODY_LIMIT).await.map_err(|e| tpp_error(e, spec, "revoke"))?;
    let v: Value = http::json(&answer, &[200], &[]).map_err(|e| tpp_error(e, spec, "revoke"))?;
    match v.get("Success").and_then(Value::as_bool) {
        Some(true) => {
            let requested = v.get("Requested").and_then(Value::as_bool).unwrap_or(true);
            tracing::info!(thumbprint, already_revoked = !requested, "TPP revoked the certificate");
            Ok(())
        }
        _ => {
            let error = v.get("Error").and_then(Value::as_str).unwrap_or("no Error text in the answer");
            Err(SignError::permanent(format!("TPP revoke of certificate {thumbprint}: {error}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against openssl's SHA-1 fingerprint (what TPP shows as the thumbprint), leaf first.
    #[test]
    fn thumbprint_is_the_leafs_sha1_as_openssl_prints_it() {
        let ca = certbridge::testing::TestCa::new(&certbridge::KeyKind::EcP256).unwrap();
        let (leaf, _) = ca.leaf(&certbridge::KeyKind::EcP256, &["a.example.com"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leaf.pem");
        std::fs::write(&path, &leaf).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
            .arg(&path)
            .output()
            .expect("openssl");
        let text = String::from_utf8(out.stdout).unwrap();
        let expected = text.trim().rsplit('=').next().unwrap().replace(':', "");
        assert_eq!(expected.len(), 40, "{text}");
        assert_eq!(thumbprint(&format!("{leaf}{}", ca.cert_pem())).unwrap(), expected);
        assert!(thumbprint("not pem").is_err());
    }
}
