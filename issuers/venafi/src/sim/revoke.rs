//! The simulator's `POST vedsdk/certificates/revoke` (`ca-protocols.md` §7.2): the body is
//! `{CertificateDN | Thumbprint, Reason, Comments, Disable}` (checked against that field set like
//! every other route), the answer `{Requested, Success, Error}`; `Requested: false, Success: true`
//! when the certificate was already revoked. A thumbprint is matched against the leaf each TPP
//! object holds now (the sim keeps no history of a re-requested object's earlier certificates).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use super::{ObjState, Resp, SimState, T, VenafiSim, json_resp, tpp_error};

/// `certificates/revoke` (vcert `certificateRevokeRequest`).
pub(super) const FIELDS: &[(&str, T, bool)] = &[
    ("CertificateDN", T::Str, false),
    ("Thumbprint", T::Str, false),
    ("Reason", T::Int, false),
    ("Comments", T::Str, false),
    ("Disable", T::Bool, false),
];

/// Revocations: thumbprint → the reason codes of the calls that revoked or re-revoked it.
#[derive(Debug, Default)]
pub(super) struct Revoked(BTreeMap<String, Vec<i64>>);

/// The uppercase hex SHA-1 of the first certificate in a PEM bundle.
fn thumbprint(bundle: &str) -> Option<String> {
    let leaf = pem::parse_many(bundle).ok()?.into_iter().find(|p| p.tag() == "CERTIFICATE")?;
    Some(Sha1::digest(leaf.contents()).iter().map(|b| format!("{b:02X}")).collect())
}

/// Answers an authenticated, field-checked revoke call.
pub(super) fn answer(st: &mut SimState, body: &Value) -> Resp {
    let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (dn, thumb) = (s("CertificateDN"), s("Thumbprint").to_ascii_uppercase());
    if dn.is_empty() == thumb.is_empty() {
        return tpp_error(400, "Exactly one of CertificateDN and Thumbprint must be given.");
    }
    let issued = st.objects.iter().filter_map(|(d, o)| match &o.state {
        ObjState::Issued(bundle) => thumbprint(bundle).map(|t| (d.clone(), t)),
        _ => None,
    });
    let found = issued.into_iter().find(|(d, t)| if dn.is_empty() { *t == thumb } else { *d == dn });
    let Some((_, thumb)) = found else {
        let what = if dn.is_empty() { format!("with thumbprint {thumb}") } else { dn };
        return tpp_error(400, &format!("Certificate {what} does not exist."));
    };
    let reason = body.get("Reason").and_then(Value::as_i64).unwrap_or(0);
    let calls = st.revoked.0.entry(thumb).or_default();
    calls.push(reason);
    json_resp(200, None, &json!({"Requested": calls.len() == 1, "Success": true}))
}

impl VenafiSim {
    /// Revoked certificates: thumbprint → the reason code of each revoke call that named it
    /// (more than one entry: revoked again).
    pub fn revocations(&self) -> BTreeMap<String, Vec<i64>> {
        self.shared.state.lock().map(|st| st.revoked.0.clone()).unwrap_or_default()
    }
}
