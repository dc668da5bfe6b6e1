//! The CA key inside the token: how to find it, which mechanism signs with it, and the glue that
//! lets rcgen sign through it.
//!
//! Digests are computed here, not in the token: only 32–64 bytes cross into the HSM per signature
//! (network HSMs charge per byte), and SoftHSM 2.6 has no CKM_ECDSA_SHA* anyway. ECDSA results
//! come back as raw `r‖s` and are re-encoded as the DER `ECDSA-Sig-Value` X.509 wants.

use std::cell::RefCell;
use std::sync::{Arc, RwLock};

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::error::HsmError;
use crate::spec::HashAlg;
use crate::token::Token;

/// How the CA key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RSASSA-PKCS1-v1_5 with the hash (CKM_RSA_PKCS over a DigestInfo).
    RsaPkcs1(HashAlg),
    /// RSASSA-PSS, salt = hash length, MGF1 with the same hash (CKM_RSA_PKCS_PSS over the digest).
    RsaPss(HashAlg),
    /// ECDSA P-256 with SHA-256 (CKM_ECDSA over the digest).
    EcdsaP256,
    /// ECDSA P-384 with SHA-384.
    EcdsaP384,
    /// Pure Ed25519 (CKM_EDDSA over the whole message).
    Ed25519,
}

impl Scheme {
    /// The PKCS#11 key type this scheme needs.
    pub fn key_type(&self) -> KeyType {
        match self {
            Scheme::RsaPkcs1(_) | Scheme::RsaPss(_) => KeyType::RSA,
            Scheme::EcdsaP256 | Scheme::EcdsaP384 => KeyType::EC,
            Scheme::Ed25519 => KeyType::EC_EDWARDS,
        }
    }

    /// The rcgen algorithm that writes this scheme's AlgorithmIdentifier, or `None` for PSS, which
    /// rcgen cannot express (the certificate is then re-encoded, see `crate::ca`).
    pub fn rcgen_alg(&self) -> Option<&'static rcgen::SignatureAlgorithm> {
        Some(match self {
            Scheme::RsaPkcs1(HashAlg::Sha256) => &rcgen::PKCS_RSA_SHA256,
            Scheme::RsaPkcs1(HashAlg::Sha384) => &rcgen::PKCS_RSA_SHA384,
            Scheme::RsaPkcs1(HashAlg::Sha512) => &rcgen::PKCS_RSA_SHA512,
            Scheme::RsaPss(_) => return None,
            Scheme::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Scheme::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Scheme::Ed25519 => &rcgen::PKCS_ED25519,
        })
    }

    /// The data handed to C_Sign for `msg`.
    fn to_be_signed(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Scheme::RsaPkcs1(h) => {
                let mut v = digest_info_prefix(h).to_vec();
                v.extend_from_slice(&digest(h, msg));
                v
            }
            Scheme::RsaPss(h) => digest(h, msg),
            Scheme::EcdsaP256 => Sha256::digest(msg).to_vec(),
            Scheme::EcdsaP384 => Sha384::digest(msg).to_vec(),
            Scheme::Ed25519 => msg.to_vec(),
        }
    }

    fn mechanism(&self) -> Mechanism<'static> {
        match self {
            Scheme::RsaPkcs1(_) => Mechanism::RsaPkcs,
            Scheme::RsaPss(h) => {
                let (hash_alg, mgf, len) = match h {
                    HashAlg::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32u64),
                    HashAlg::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48),
                    HashAlg::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64),
                };
                Mechanism::RsaPkcsPss(PkcsPssParams { hash_alg, mgf, s_len: len.into() })
            }
            Scheme::EcdsaP256 | Scheme::EcdsaP384 => Mechanism::Ecdsa,
            Scheme::Ed25519 => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
        }
    }

    /// Turns the token's output into what X.509 stores.
    fn finish(&self, raw: Vec<u8>) -> Result<Vec<u8>, HsmError> {
        match self {
            Scheme::EcdsaP256 | Scheme::EcdsaP384 => ecdsa_raw_to_der(&raw).ok_or_else(|| HsmError::Call {
                op: "C_Sign",
                rv: format!("the token returned a {}-byte ECDSA signature, not r‖s", raw.len()),
                fault: crate::error::Fault::Other,
            }),
            _ => Ok(raw),
        }
    }
}

/// A key type as people name it.
fn key_type_name(kt: KeyType) -> String {
    match kt {
        KeyType::RSA => "RSA".into(),
        KeyType::EC => "EC".into(),
        KeyType::EC_EDWARDS => "EdDSA".into(),
        other => other.to_string(),
    }
}

/// The digest of `msg`.
pub fn digest(h: HashAlg, msg: &[u8]) -> Vec<u8> {
    match h {
        HashAlg::Sha256 => Sha256::digest(msg).to_vec(),
        HashAlg::Sha384 => Sha384::digest(msg).to_vec(),
        HashAlg::Sha512 => Sha512::digest(msg).to_vec(),
    }
}

/// The DER DigestInfo header that precedes the digest in a PKCS#1 v1.5 signature (RFC 8017 §9.2).
fn digest_info_prefix(h: HashAlg) -> &'static [u8] {
    match h {
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
            0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04,
            0x30,
        ],
        HashAlg::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04,
            0x40,
        ],
    }
}

/// Encodes PKCS#11's raw ECDSA `r‖s` (two equal halves) as DER `SEQUENCE { INTEGER r, INTEGER s }`.
/// Hand-written: two minimal unsigned INTEGERs are all it takes, and it runs once per certificate.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    fn int(out: &mut Vec<u8>, mut v: &[u8]) {
        while v.len() > 1 && v[0] == 0 {
            v = &v[1..];
        }
        let pad = v[0] & 0x80 != 0;
        out.push(0x02);
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
    }
    let mut body = Vec::with_capacity(raw.len() + 8);
    int(&mut body, r);
    int(&mut body, s);
    let mut out = Vec::with_capacity(body.len() + 3);
    out.push(0x30);
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    Some(out)
}

/// Which private key: label and/or id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySelector {
    /// CKA_LABEL.
    pub label: Option<String>,
    /// CKA_ID.
    pub id: Option<Vec<u8>>,
}

impl std::fmt::Display for KeySelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.id.as_ref().map(|id| id.iter().map(|b| format!("{b:02x}")).collect::<String>());
        match (&self.label, id) {
            (Some(l), Some(i)) => write!(f, "label {l:?} and id {i}"),
            (Some(l), None) => write!(f, "label {l:?}"),
            (None, Some(i)) => write!(f, "id {i}"),
            (None, None) => f.write_str("(nothing)"),
        }
    }
}

impl KeySelector {
    fn template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![Attribute::Class(class)];
        if let Some(l) = &self.label {
            t.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        if let Some(id) = &self.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }
}

thread_local! {
    /// rcgen's `SigningKey::sign` can only say `RemoteKeyError`; the real cause waits here for the
    /// caller on the same thread.
    static LAST_ERROR: RefCell<Option<HsmError>> = const { RefCell::new(None) };
}

/// Takes the HSM error behind the last `RemoteKeyError` on this thread.
pub fn take_last_error() -> Option<HsmError> {
    LAST_ERROR.with(|c| c.borrow_mut().take())
}

/// The CA private key in a token, usable as an rcgen signing key.
pub struct CaKey {
    token: Arc<Token>,
    selector: KeySelector,
    scheme: Scheme,
    /// subjectPublicKey contents of the CA certificate (what rcgen needs from a key).
    public_key: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
    /// The key's handle and the module epoch it belongs to (handles die with a re-initialization).
    handle: RwLock<Option<(u64, ObjectHandle)>>,
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKey").field("token", &self.token).field("key", &self.selector.to_string()).finish()
    }
}

impl CaKey {
    /// A key on `token`; nothing is looked up yet.
    pub fn new(token: Arc<Token>, selector: KeySelector, scheme: Scheme, public_key: Vec<u8>) -> CaKey {
        // PSS certificates are first laid out by rcgen as PKCS#1 and re-encoded; see crate::ca.
        let alg = scheme.rcgen_alg().unwrap_or(&rcgen::PKCS_RSA_SHA256);
        CaKey { token, selector, scheme, public_key, alg, handle: RwLock::new(None) }
    }

    /// The token.
    pub fn token(&self) -> &Arc<Token> {
        &self.token
    }

    /// The signing scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Looks the private key up (and checks its type), caching the handle.
    pub fn locate(&self) -> Result<(), HsmError> {
        self.token.run(|s| self.handle(s).map(|_| ()))
    }

    fn handle(&self, s: &Session) -> Result<ObjectHandle, HsmError> {
        let epoch = self.token.module().epoch();
        if let Some((e, h)) = *self.handle.read().unwrap_or_else(|p| p.into_inner())
            && e == epoch
        {
            return Ok(h);
        }
        let found = s
            .find_objects(&self.selector.template(ObjectClass::PRIVATE_KEY))
            .map_err(|e| HsmError::call("C_FindObjects", e))?;
        let h = match found.as_slice() {
            [h] => *h,
            [] => {
                // Private objects are invisible when logged out: that is a logout, not a missing key.
                let info = s.get_session_info().map_err(|e| HsmError::call("C_GetSessionInfo", e))?;
                if !matches!(info.session_state(), SessionState::RoUser | SessionState::RwUser) {
                    return Err(HsmError::Call {
                        op: "C_FindObjects",
                        rv: "UserNotLoggedIn".into(),
                        fault: crate::error::Fault::LoggedOut,
                    });
                }
                // Nor are the objects of a token that went away (SoftHSM keeps its slot and login).
                self.token.present(info.slot_id())?;
                return Err(HsmError::KeyNotFound {
                    selector: self.selector.to_string(),
                    token: self.token.label().to_owned(),
                });
            }
            many => {
                return Err(HsmError::KeyAmbiguous {
                    selector: self.selector.to_string(),
                    token: self.token.label().to_owned(),
                    count: many.len(),
                });
            }
        };
        let attrs =
            s.get_attributes(h, &[AttributeType::KeyType]).map_err(|e| HsmError::call("C_GetAttributeValue", e))?;
        if let Some(Attribute::KeyType(kt)) = attrs.first()
            && *kt != self.scheme.key_type()
        {
            return Err(HsmError::KeyTypeMismatch {
                selector: self.selector.to_string(),
                found: key_type_name(*kt),
                expected: key_type_name(self.scheme.key_type()),
            });
        }
        *self.handle.write().unwrap_or_else(|p| p.into_inner()) = Some((epoch, h));
        Ok(h)
    }

    /// Signs `msg` with the CA key.
    pub fn sign_message(&self, msg: &[u8]) -> Result<Vec<u8>, HsmError> {
        let data = self.scheme.to_be_signed(msg);
        let mechanism = self.scheme.mechanism();
        let raw = self.token.run(|s| {
            let h = self.handle(s)?;
            s.sign(&mechanism, h, &data).map_err(|e| {
                let e = HsmError::call("C_Sign", e);
                if e.fault() == crate::error::Fault::Object || e.fault() == crate::error::Fault::Token {
                    *self.handle.write().unwrap_or_else(|p| p.into_inner()) = None;
                }
                e
            })
        })?;
        self.scheme.finish(raw)
    }
}

impl rcgen::PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

impl rcgen::SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign_message(msg).map_err(|e| {
            LAST_ERROR.with(|c| *c.borrow_mut() = Some(e));
            rcgen::Error::RemoteKeyError
        })
    }
}

/// A stand-in with the CA's public key whose "signature" is a placeholder: lets rcgen lay out a
/// certificate that is re-encoded and signed afterwards (PSS, or an issuer name rcgen cannot
/// reproduce byte for byte).
pub struct LayoutKey {
    /// subjectPublicKey contents.
    pub public_key: Vec<u8>,
    /// Algorithm rcgen writes.
    pub alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for LayoutKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

impl rcgen::SigningKey for LayoutKey {
    fn sign(&self, _: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(vec![0])
    }
}

/// Any token object's handle lookup for provisioning and tests: the public key matching `sel`.
pub fn find_public_key(s: &Session, sel: &KeySelector) -> Result<Option<ObjectHandle>, HsmError> {
    let found =
        s.find_objects(&sel.template(ObjectClass::PUBLIC_KEY)).map_err(|e| HsmError::call("C_FindObjects", e))?;
    Ok(found.first().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ecdsa_becomes_der() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a sign pad
        raw[31] = 1;
        raw[63] = 7; // s = 7 after stripping zeros
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x21, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x07]);
        let p384 = ecdsa_raw_to_der(&[0xffu8; 96]).unwrap();
        assert_eq!(&p384[..5], &[0x30, 0x66, 0x02, 0x31, 0x00]);
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_none());
    }

    #[test]
    fn pkcs1_input_is_digest_info() {
        let data = Scheme::RsaPkcs1(HashAlg::Sha256).to_be_signed(b"abc");
        assert_eq!(data.len(), 19 + 32);
        assert_eq!(&data[19..], Sha256::digest(b"abc").as_slice());
        assert_eq!(Scheme::RsaPss(HashAlg::Sha512).to_be_signed(b"abc").len(), 64);
        assert_eq!(Scheme::Ed25519.to_be_signed(b"abc"), b"abc");
    }
}
