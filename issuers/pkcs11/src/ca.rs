//! A CA ready to sign: the chain parsed and checked once, the HSM key found and proven to match the
//! certificate, and everything per-request work can reuse (issuer name, key identifier, chain
//! tail, extensions) computed up front, so signing a request is: policy check, build, one C_Sign.
//!
//! Certificates are laid out by rcgen through `certbridge::pki::certificate_params`. Two cases
//! need the x509-cert encoder afterwards: RSA-PSS (rcgen has no PSS) and a CA subject rcgen cannot
//! reproduce byte for byte (it keeps one value per attribute type). Then rcgen lays the
//! certificate out with a placeholder signature, the TBS is patched (signature algorithm, issuer
//! name), signed by the HSM and re-encoded.

use std::time::Duration;

use certbridge::pki::{certificate_params, subject_public_key, to_pem};
use certbridge::{Issued, KeyKind, Reaction, SignError, SignRequest};
use der::{Decode, Encode};
use rcgen::{CertificateParams, CrlDistributionPoint, CustomExtension, DnType, Issuer};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::HsmError;
use crate::key::{CaKey, KeySelector, LayoutKey, Scheme};
use crate::policy::CompiledPolicy;
use crate::spec::{HashAlg, Pkcs11IssuerSpec, RsaPadding, SignatureSpec, key_id_bytes};
use crate::token::{Token, TokenSelector};

/// What `prepare` needs besides the spec.
pub struct Inputs<'a> {
    /// The issuer spec.
    pub spec: &'a Pkcs11IssuerSpec,
    /// The user PIN (zeroized when dropped).
    pub pin: &'a zeroize::Zeroizing<String>,
    /// The CA chain as DER certificates (from [`certbridge::Resources::ca_bundle`]), CA certificate first.
    pub chain_der: &'a [Vec<u8>],
    /// Where the chain was read, for messages, e.g. `Secret "team/ca" key "ca.crt" (spec.caChain)`.
    pub chain_place: &'a str,
    /// The controller's module allow-list.
    pub allowed: &'a crate::module::AllowedModules,
    /// Session pool size for a token seen for the first time.
    pub max_sessions: usize,
}

/// Why a CA cannot be prepared: the message, and whether it is permanent (fix the spec) or not
/// ready (may heal by itself, or when a referenced Secret or ConfigMap is fixed: a change of one
/// re-checks the issuer).
#[derive(Debug)]
pub enum PrepareError {
    /// Needs a change of the spec.
    Permanent(String),
    /// May heal (token absent, module not installed yet, …) or needs a fix of a referenced object
    /// (the chain, the PIN).
    NotReady(String),
    /// From the HSM.
    Hsm(HsmError),
}

impl PrepareError {
    /// The reaction for `check`.
    pub fn for_check(self) -> SignError {
        match self {
            PrepareError::Permanent(m) => SignError::permanent(m),
            PrepareError::NotReady(m) => SignError::issuer_not_ready(m),
            PrepareError::Hsm(e) => e.for_check(),
        }
    }

    /// The reaction while signing: the issuer is not ready, whatever the cause; its check decides.
    pub fn for_sign(self) -> SignError {
        match self {
            PrepareError::Permanent(m) | PrepareError::NotReady(m) => SignError::issuer_not_ready(m),
            PrepareError::Hsm(e) => SignError::issuer_not_ready(e.to_string()),
        }
    }
}

impl From<HsmError> for PrepareError {
    fn from(e: HsmError) -> Self {
        PrepareError::Hsm(e)
    }
}

/// Post-processing for certificates rcgen cannot produce as they must be.
struct Rewrite {
    /// AlgorithmIdentifier to write (PSS), if rcgen's is wrong.
    sig_alg: Option<AlgorithmIdentifierOwned>,
    /// The CA subject, byte for byte, if rcgen's re-encoding differs.
    issuer_name: Option<x509_cert::name::Name>,
}

/// A CA that can sign.
pub struct PreparedCa {
    issuer: Issuer<'static, CaKey>,
    layout_issuer: Issuer<'static, LayoutKey>,
    rewrite: Option<Rewrite>,
    policy: CompiledPolicy,
    ca_not_after: time::OffsetDateTime,
    /// The CA's own pathLenConstraint (None: unconstrained).
    ca_path_len: Option<u32>,
    crl: Vec<CrlDistributionPoint>,
    aia: Option<CustomExtension>,
    /// PEM appended after the leaf.
    chain_tail: String,
    ca_pem: Option<String>,
    subject: String,
}

impl std::fmt::Debug for PreparedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCa").field("subject", &self.subject).field("key", self.issuer.key()).finish()
    }
}

/// The scheme for a CA key of `kind` under `sig`.
pub fn scheme_for(kind: &KeyKind, sig: Option<SignatureSpec>) -> Result<Scheme, String> {
    let rsa_only = || {
        format!(
            "spec.signature applies to RSA CA keys only, and this CA key is {kind}: remove spec.signature (ECDSA uses its curve's hash, Ed25519 is pure EdDSA)"
        )
    };
    Ok(match kind {
        KeyKind::Rsa { bits } if (2048..=4096).contains(bits) => {
            let sig = sig.unwrap_or_default();
            match sig.rsa_padding {
                RsaPadding::Pkcs1v15 => Scheme::RsaPkcs1(sig.hash),
                RsaPadding::Pss => Scheme::RsaPss(sig.hash),
            }
        }
        KeyKind::Rsa { bits } => {
            return Err(format!("the CA key is RSA-{bits}; supported RSA CA keys are 2048 to 4096 bits"));
        }
        KeyKind::EcP256 if sig.is_none() => Scheme::EcdsaP256,
        KeyKind::EcP384 if sig.is_none() => Scheme::EcdsaP384,
        KeyKind::Ed25519 if sig.is_none() => Scheme::Ed25519,
        KeyKind::EcP256 | KeyKind::EcP384 | KeyKind::Ed25519 => return Err(rsa_only()),
        KeyKind::Other(_) => {
            return Err(format!(
                "the CA certificate's key ({kind}) is not supported: use RSA 2048–4096, ECDSA P-256/P-384 or Ed25519"
            ));
        }
    })
}

fn pss_algorithm(h: HashAlg) -> AlgorithmIdentifierOwned {
    // RSASSA-PSS-params (RFC 4055) with hash = MGF1 hash = h and salt = hash length; the trailer
    // field keeps its default. These are the bytes OpenSSL writes for the same parameters.
    let (oid_last, salt) = match h {
        HashAlg::Sha256 => (1u8, 32u8),
        HashAlg::Sha384 => (2, 48),
        HashAlg::Sha512 => (3, 64),
    };
    let hash_alg = [0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, oid_last, 0x05, 0x00];
    let mut p = vec![0x30, 0x34, 0xa0, 0x0f];
    p.extend_from_slice(&hash_alg);
    p.extend_from_slice(&[0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08]);
    p.extend_from_slice(&hash_alg);
    p.extend_from_slice(&[0xa2, 0x03, 0x02, 0x01, salt]);
    AlgorithmIdentifierOwned {
        oid: der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10"),
        parameters: Some(der::Any::from_der(&p).expect("constant RSASSA-PSS-params are valid DER")),
    }
}

/// The Authority Information Access extension for the given OCSP and caIssuers URLs.
fn aia_extension(ocsp: &[String], ca_issuers: &[String]) -> Result<Option<CustomExtension>, String> {
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax, name::GeneralName};
    let mut v = Vec::new();
    for (oid, urls) in [("1.3.6.1.5.5.7.48.1", ocsp), ("1.3.6.1.5.5.7.48.2", ca_issuers)] {
        for u in urls {
            let ia5 = der::asn1::Ia5String::new(u).map_err(|e| format!("URL {u:?} is not IA5 text: {e}"))?;
            v.push(AccessDescription {
                access_method: der::oid::ObjectIdentifier::new_unwrap(oid),
                access_location: GeneralName::UniformResourceIdentifier(ia5),
            });
        }
    }
    if v.is_empty() {
        return Ok(None);
    }
    let der = AuthorityInfoAccessSyntax(v).to_der().map_err(|e| format!("cannot encode AIA: {e}"))?;
    Ok(Some(CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], der)))
}

/// How the chain is appended to each leaf, computed once with the framework's chain logic: the
/// CA chain's own ordering gives the certificates above the leaf (no self-signed root) and the CA.
fn chain_layout(ders: &[Vec<u8>]) -> Result<(String, Option<String>), String> {
    let ordered = Issued::from_der_certs(ders.to_vec()).map_err(|e| format!("spec.caChain: {e}"))?;
    let first = to_pem(&ders[0]);
    if !ordered.chain_pem.starts_with(&first) {
        return Err(
            "spec.caChain: the first certificate must be the CA certificate of spec.key, followed by its issuers"
                .into(),
        );
    }
    Ok(match ordered.ca_pem {
        // [intermediate…, root]: the leaf's chain carries the intermediates, the root is the CA.
        Some(ca) => (ordered.chain_pem, Some(ca)),
        None => {
            let (_, x) = X509Certificate::from_der(&ders[0]).map_err(|e| format!("spec.caChain: {e}"))?;
            if x.subject().as_raw() == x.issuer().as_raw() && x.verify_signature(None).is_ok() {
                // A lone self-signed CA: leaf only, the root as CA.
                (String::new(), Some(first))
            } else {
                // A lone intermediate: it stays in the chain and is the best CA guess.
                (first.clone(), Some(first))
            }
        }
    })
}

/// The request's public key as rcgen needs it, taken from the verified CSR's key kind.
/// `certbridge::pki::subject_public_key` finds the algorithm by serializing and comparing every
/// algorithm rcgen knows; the kind is already known here, and this runs once per certificate.
struct LeafKey<'a> {
    bits: &'a [u8],
    alg: &'static rcgen::SignatureAlgorithm,
}

impl<'a> LeafKey<'a> {
    fn of(req: &'a SignRequest) -> Option<LeafKey<'a>> {
        let alg = match req.csr.key {
            KeyKind::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
            KeyKind::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
            KeyKind::Other(_) => return None,
        };
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&req.csr.public_key_der).ok()?;
        // The subjectPublicKey BIT STRING closes the SPKI, so its contents are the DER's tail.
        let der = &req.csr.public_key_der;
        let n = spki.subject_public_key.data.len();
        let bits = der.get(der.len().checked_sub(n)?..)?;
        (bits == spki.subject_public_key.data.as_ref()).then_some(LeafKey { bits, alg })
    }
}

impl rcgen::PublicKeyData for LeafKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.bits
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Loads, checks and proves a CA (blocking: talks to the HSM).
pub fn prepare(inputs: Inputs<'_>) -> Result<PreparedCa, PrepareError> {
    use PrepareError::{NotReady, Permanent};
    let spec = inputs.spec;
    let place = inputs.chain_place;
    let policy = CompiledPolicy::new(&spec.policy).map_err(Permanent)?;

    // The chain (read and checked to be PEM certificates by `Resources::ca_bundle`).
    let ders = inputs.chain_der;
    if ders.is_empty() {
        return Err(NotReady(format!("{place} holds no CERTIFICATE block: store the CA certificate chain as PEM")));
    }
    let (chain_tail, ca_pem) =
        chain_layout(ders).map_err(|e| NotReady(format!("{place}: {}", e.trim_start_matches("spec.caChain: "))))?;
    let ca_der = &ders[0];
    let (_, ca) = X509Certificate::from_der(ca_der)
        .map_err(|e| NotReady(format!("{place}: the CA certificate does not parse: {e}")))?;
    let subject = ca.subject().to_string();
    let bc = ca.basic_constraints().ok().flatten().map(|b| b.value.clone());
    let Some(bc) = bc.filter(|b| b.ca) else {
        return Err(NotReady(format!(
            "{place}: {subject} is not a CA certificate (no basicConstraints cA=true): reference the CA certificate"
        )));
    };
    if let Ok(Some(ku)) = ca.key_usage()
        && !ku.value.key_cert_sign()
    {
        return Err(NotReady(format!("{place}: {subject} has no keyCertSign key usage: it may not sign certificates")));
    }
    let not_after = ca.validity().not_after.to_datetime();
    let not_before = ca.validity().not_before.to_datetime();
    let now = now();
    if now >= not_after {
        return Err(NotReady(format!(
            "the CA certificate {subject} in {place} expired at {not_after}: renew it and update the chain there"
        )));
    }
    if now < not_before {
        return Err(NotReady(format!("the CA certificate {subject} is not valid before {not_before}")));
    }
    let spki_raw = ca.public_key().raw;
    let kind = KeyKind::from_spki_der(spki_raw).map_err(Permanent)?;
    let scheme = scheme_for(&kind, spec.signature).map_err(Permanent)?;
    let public_key = ca.public_key().subject_public_key.data.to_vec();

    // The HSM: module, token, PIN, key.
    let path = inputs.allowed.resolve(&spec.module).map_err(Permanent)?;
    let module = crate::module::load(&path).map_err(|e| NotReady(format!("PKCS#11 module {}: {e}", path.display())))?;
    let sel = TokenSelector { label: spec.token.label.clone(), serial: spec.token.serial.clone() };
    let token = Token::find(&module, &sel, inputs.max_sessions)?;
    token.authenticate(inputs.pin)?;
    let key_sel = KeySelector {
        label: spec.key.label.clone(),
        id: spec.key.id.as_deref().map(key_id_bytes).transpose().map_err(Permanent)?,
    };
    let key = CaKey::new(token, key_sel, scheme, public_key.clone());
    key.locate()?;

    let issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), key)
        .map_err(|e| NotReady(format!("{place}: rcgen cannot use the CA certificate: {e}")))?;
    let layout_alg = scheme.rcgen_alg().unwrap_or(&rcgen::PKCS_RSA_SHA256);
    let layout_issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), LayoutKey { public_key, alg: layout_alg })
        .map_err(|e| NotReady(format!("{place}: rcgen cannot use the CA certificate: {e}")))?;

    let crl = if spec.crl_distribution_points.is_empty() {
        vec![]
    } else {
        vec![CrlDistributionPoint { uris: spec.crl_distribution_points.clone() }]
    };
    let aia = aia_extension(&spec.ocsp_servers, &spec.issuing_certificate_urls).map_err(Permanent)?;

    let mut prepared = PreparedCa {
        issuer,
        layout_issuer,
        rewrite: None,
        policy,
        ca_not_after: not_after,
        ca_path_len: bc.path_len_constraint,
        crl,
        aia,
        chain_tail,
        ca_pem,
        subject,
    };

    // Lay out a probe certificate without the HSM: does rcgen reproduce the CA subject exactly?
    let probe_key = rcgen::SubjectPublicKeyInfo::from_der(spki_raw)
        .map_err(|e| NotReady(format!("{place}: the CA public key cannot be used: {e}")))?;
    let mut probe = CertificateParams::default();
    probe.distinguished_name = rcgen::DistinguishedName::new();
    probe.distinguished_name.push(DnType::CommonName, "certbridge-pkcs11 key check");
    probe.not_before = now;
    probe.not_after = now + Duration::from_secs(60);
    probe.serial_number = Some(certbridge::pki::random_serial());
    let layout = probe
        .signed_by(&probe_key, &prepared.layout_issuer)
        .map_err(|e| Permanent(format!("cannot lay out a certificate for this CA: {e}")))?;
    let (_, laid) = X509Certificate::from_der(layout.der())
        .map_err(|e| Permanent(format!("cannot lay out a certificate for this CA: {e}")))?;
    let issuer_name = if laid.issuer().as_raw() == ca.subject().as_raw() {
        None
    } else {
        Some(
            x509_cert::name::Name::from_der(ca.subject().as_raw())
                .map_err(|e| NotReady(format!("{place}: the CA subject does not parse: {e}")))?,
        )
    };
    let sig_alg = match scheme {
        Scheme::RsaPss(h) => Some(pss_algorithm(h)),
        _ => None,
    };
    if sig_alg.is_some() || issuer_name.is_some() {
        prepared.rewrite = Some(Rewrite { sig_alg, issuer_name });
    }

    // Prove the key: sign the probe with the HSM and verify it with the certificate's key.
    let signed = prepared.build(&probe, &probe_key).map_err(|e| match e {
        e if e.reaction == Reaction::Permanent => Permanent(e.message),
        other => NotReady(other.to_string()),
    })?;
    let (_, probe_cert) = X509Certificate::from_der(&signed)
        .map_err(|e| Permanent(format!("the probe certificate does not parse: {e}")))?;
    if probe_cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err(NotReady(format!(
            "the HSM key ({}) does not match the CA certificate {} in {place}: a signature made with the key does not verify with the certificate's public key; point spec.key at the CA's key or fix the chain",
            prepared.issuer.key().token().label(),
            prepared.subject
        )));
    }
    Ok(prepared)
}

impl PreparedCa {
    /// The CA subject, for messages.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The CA key.
    pub fn key(&self) -> &CaKey {
        self.issuer.key()
    }

    /// Whether the CA certificate is still valid now.
    pub fn still_valid(&self) -> Result<(), SignError> {
        if now() >= self.ca_not_after {
            return Err(SignError::issuer_not_ready(format!(
                "the CA certificate {} expired at {}: renew it and update spec.caChain",
                self.subject, self.ca_not_after
            )));
        }
        Ok(())
    }

    /// Signs `req`: policy, certificate template, one HSM signature, PEM chain (blocking).
    pub fn sign(&self, req: &SignRequest) -> Result<Issued, SignError> {
        self.still_valid()?;
        self.policy.check(req)?;
        let path_len = if req.is_ca {
            match self.ca_path_len {
                Some(0) => {
                    return Err(SignError::permanent(format!(
                        "the CA {} has pathLenConstraint 0 and cannot issue CA certificates: drop isCA",
                        self.subject
                    )));
                }
                Some(n) => {
                    let below = u8::try_from(n - 1).unwrap_or(u8::MAX);
                    Some(self.policy.max_path_len().map_or(below, |m| m.min(below)))
                }
                None => self.policy.max_path_len(),
            }
        } else {
            None
        };
        let mut params = certificate_params(req, path_len)?;
        if params.not_after > self.ca_not_after {
            // Never outlive the CA (cert-manager's CA issuer does the same).
            params.not_after = self.ca_not_after;
        }
        params.crl_distribution_points.clone_from(&self.crl);
        if let Some(aia) = &self.aia {
            params.custom_extensions.push(aia.clone());
        }
        let der = match LeafKey::of(req) {
            Some(leaf) => self.build(&params, &leaf)?,
            None => self.build(&params, &subject_public_key(req)?)?,
        };
        let mut chain_pem = to_pem(&der);
        chain_pem.push_str(&self.chain_tail);
        Ok(Issued { chain_pem, ca_pem: self.ca_pem.clone() })
    }

    /// DER of `params` for `spki`, signed by the HSM.
    fn build(&self, params: &CertificateParams, spki: &impl rcgen::PublicKeyData) -> Result<Vec<u8>, SignError> {
        let Some(rw) = &self.rewrite else {
            return match params.signed_by(spki, &self.issuer) {
                Ok(c) => Ok(c.der().to_vec()),
                Err(rcgen::Error::RemoteKeyError) => Err(crate::key::take_last_error()
                    .map_or_else(|| SignError::transient("the HSM failed to sign"), HsmError::for_sign)),
                Err(e) => Err(SignError::permanent(format!("cannot build the certificate: {e}"))),
            };
        };
        let laid = params
            .signed_by(spki, &self.layout_issuer)
            .map_err(|e| SignError::permanent(format!("cannot build the certificate: {e}")))?;
        let bad = |e: der::Error| SignError::permanent(format!("cannot re-encode the certificate: {e}"));
        let mut cert = x509_cert::Certificate::from_der(laid.der()).map_err(bad)?;
        if let Some(alg) = &rw.sig_alg {
            cert.tbs_certificate.signature = alg.clone();
            cert.signature_algorithm = alg.clone();
        }
        if let Some(name) = &rw.issuer_name {
            cert.tbs_certificate.issuer = name.clone();
        }
        let tbs = cert.tbs_certificate.to_der().map_err(bad)?;
        let sig = self.issuer.key().sign_message(&tbs).map_err(HsmError::for_sign)?;
        cert.signature = der::asn1::BitString::from_bytes(&sig).map_err(bad)?;
        cert.to_der().map_err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_spec_fits_the_key() {
        assert_eq!(scheme_for(&KeyKind::Rsa { bits: 3072 }, None).unwrap(), Scheme::RsaPkcs1(HashAlg::Sha256));
        let pss = SignatureSpec { rsa_padding: RsaPadding::Pss, hash: HashAlg::Sha512 };
        assert_eq!(scheme_for(&KeyKind::Rsa { bits: 4096 }, Some(pss)).unwrap(), Scheme::RsaPss(HashAlg::Sha512));
        assert!(scheme_for(&KeyKind::Rsa { bits: 1024 }, None).unwrap_err().contains("2048 to 4096"));
        assert!(scheme_for(&KeyKind::EcP256, Some(pss)).unwrap_err().contains("remove spec.signature"));
        assert_eq!(scheme_for(&KeyKind::Ed25519, None).unwrap(), Scheme::Ed25519);
    }

    #[test]
    fn pss_parameters_are_what_openssl_writes() {
        let alg = pss_algorithm(HashAlg::Sha256);
        let der = alg.to_der().unwrap();
        let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120"
        );
    }
}
