//! PKCS#10 parsing with signature verification (x509-parser), the controller's caps on what a CSR
//! may hold ([`CsrLimits`]), and cert-manager's consistency rules between what the CSR embeds and
//! what the request asks for.

use std::net::IpAddr;

use x509_parser::der_parser::asn1_rs::{Any, Class, Tag};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509CertificationRequest};
use x509_parser::public_key::PublicKey;

use crate::request::{ExtKeyUsage, KeyUsage};

/// The public key algorithm of a CSR or CA key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with the modulus size in bits.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
    /// ECDSA on NIST P-256.
    EcP256,
    /// ECDSA on NIST P-384.
    EcP384,
    /// Ed25519.
    Ed25519,
    /// Anything else, described by its algorithm (and curve) OID.
    Other(String),
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyKind::EcP256 => f.write_str("ECDSA P-256"),
            KeyKind::EcP384 => f.write_str("ECDSA P-384"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
            KeyKind::Other(oid) => write!(f, "unsupported key algorithm {oid}"),
        }
    }
}

impl KeyKind {
    /// The key kind of a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(spki: &[u8]) -> Result<KeyKind, String> {
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
            .map_err(|e| format!("public key does not parse: {e}"))?;
        Ok(key_kind(&info))
    }
}

/// An otherName subjectAltName (RFC 5280 §4.2.1.6): a name whose type is given by an OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtherName {
    /// A Microsoft User Principal Name ([`OtherName::UPN_OID`], a UTF8String), e.g.
    /// `alice@corp.example`: what smart-card and Active Directory logon match an account by, and
    /// what cert-manager's `otherNames` with that OID produce.
    Upn(String),
    /// Any other otherName.
    Other {
        /// The type-id, as a dotted OID.
        type_id: String,
        /// The DER of the value (the TLV inside the `[0] EXPLICIT` wrapper), e.g. `0c 03 66 6f 6f`
        /// for the UTF8String "foo".
        value_der: Vec<u8>,
    },
}

impl OtherName {
    /// The type-id of a User Principal Name (szOID_NT_PRINCIPAL_NAME).
    pub const UPN_OID: &'static str = "1.3.6.1.4.1.311.20.2.3";

    /// The type-id, as a dotted OID.
    pub fn type_id(&self) -> &str {
        match self {
            OtherName::Upn(_) => Self::UPN_OID,
            OtherName::Other { type_id, .. } => type_id,
        }
    }

    /// The value when it is a UTF8String (always for a UPN), which is what cert-manager's
    /// `otherNames[].utf8Value` produces.
    pub fn utf8_value(&self) -> Option<&str> {
        match self {
            OtherName::Upn(v) => Some(v),
            OtherName::Other { value_der, .. } => match Any::from_der(value_der) {
                Ok((rest, any)) if rest.is_empty() && any.tag() == Tag::Utf8String => {
                    std::str::from_utf8(any.data).ok()
                }
                _ => None,
            },
        }
    }

    /// What the name-length limit measures: the string, or the DER of a value that is not one.
    fn value_bytes(&self) -> &[u8] {
        match self {
            OtherName::Upn(v) => v.as_bytes(),
            OtherName::Other { value_der, .. } => self.utf8_value().map_or(value_der, str::as_bytes),
        }
    }

    /// The otherName of `type_id` whose value, as x509-parser hands it over, is `explicit`: the
    /// `[0] EXPLICIT` wrapper and the value inside it. The error says what is malformed.
    fn from_parts(type_id: String, explicit: &[u8]) -> Result<OtherName, String> {
        let bad = |why: &str| format!("the CSR's otherName subjectAltName {type_id} is malformed: {why}");
        let (rest, wrapper) = Any::from_der(explicit).map_err(|_| bad("its value does not parse as DER"))?;
        if !rest.is_empty() {
            return Err(bad("it has trailing data after its value"));
        }
        if wrapper.class() != Class::ContextSpecific || wrapper.tag() != Tag(0) || !wrapper.header.is_constructed() {
            return Err(bad("its value is not wrapped in [0] EXPLICIT"));
        }
        let (rest, value) = Any::from_der(wrapper.data).map_err(|_| bad("its value does not parse as DER"))?;
        if !rest.is_empty() {
            return Err(bad("it has trailing data after its value"));
        }
        if type_id == Self::UPN_OID {
            if value.tag() != Tag::Utf8String || value.class() != Class::Universal {
                return Err(bad("a User Principal Name must be a UTF8String"));
            }
            let upn = std::str::from_utf8(value.data).map_err(|_| bad("the User Principal Name is not UTF-8"))?;
            return Ok(OtherName::Upn(upn.to_owned()));
        }
        Ok(OtherName::Other { type_id, value_der: wrapper.data.to_vec() })
    }
}

impl std::fmt::Display for OtherName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self, self.utf8_value()) {
            (OtherName::Upn(upn), _) => write!(f, "UPN {upn:?}"),
            (_, Some(v)) => write!(f, "otherName {} {v:?}", self.type_id()),
            (OtherName::Other { type_id, value_der }, None) => {
                write!(f, "otherName {type_id} (DER value of {} bytes)", value_der.len())
            }
        }
    }
}

/// A directoryName subjectAltName.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryName {
    /// The DER of the Name, for CAs that copy it verbatim.
    pub der: Vec<u8>,
    /// The Name in RFC 4514 form, for messages and policies.
    pub rfc4514: String,
}

/// The flag of [`CsrLimits::max_pem_bytes`].
pub const FLAG_MAX_PEM_BYTES: &str = "csr-max-pem-bytes";
/// The flag of [`CsrLimits::max_sans`].
pub const FLAG_MAX_SANS: &str = "csr-max-sans";
/// The flag of [`CsrLimits::max_name_bytes`].
pub const FLAG_MAX_NAME_BYTES: &str = "csr-max-name-bytes";

/// What the controller accepts in a CSR, so that one request cannot make it (or the HSM or CA
/// behind it) parse, check, sign and store an arbitrarily large certificate. Without a cap the only
/// bound is the API server's object size (about 1.5 MiB). The defaults are generous: real CSRs are
/// a few KiB; public CAs stop at 100–250 names per certificate; the longest names in use are
/// SPIFFE IDs (at most 2,048 bytes by the SPIFFE spec; DNS names stop at 253).
///
/// These are the `run` subcommand's flags (defined here, next to the checks, so the command line
/// and the messages cannot drift apart). A request over a limit fails permanently, like any bad
/// CSR, with a message naming the limit and its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct CsrLimits {
    /// Largest CSR accepted, in bytes of PEM (1,000 names of 64 bytes and an RSA-4096 key: 89 KiB).
    #[arg(long = FLAG_MAX_PEM_BYTES, value_name = "BYTES", default_value_t = CsrLimits::DEFAULT.max_pem_bytes, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pem_bytes: u32,
    /// Most subjectAltNames (of all types together) a CSR may carry.
    #[arg(long = FLAG_MAX_SANS, value_name = "N", default_value_t = CsrLimits::DEFAULT.max_sans, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sans: u32,
    /// Longest subjectAltName or subject attribute value accepted, in bytes.
    #[arg(long = FLAG_MAX_NAME_BYTES, value_name = "BYTES", default_value_t = CsrLimits::DEFAULT.max_name_bytes, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_name_bytes: u32,
}

impl CsrLimits {
    /// The defaults: 128 KiB of PEM, 1,000 subjectAltNames, 2,048 bytes per name.
    pub const DEFAULT: CsrLimits = CsrLimits { max_pem_bytes: 128 * 1024, max_sans: 1000, max_name_bytes: 2048 };

    fn check_pem_size(&self, len: usize) -> Result<(), String> {
        if len > self.max_pem_bytes as usize {
            return Err(format!(
                "the CSR is {len} bytes of PEM, more than this controller accepts ({} bytes, flag --{FLAG_MAX_PEM_BYTES}): send a smaller CSR, or ask the operator to raise the limit",
                self.max_pem_bytes
            ));
        }
        Ok(())
    }

    fn check_san_count(&self, count: usize) -> Result<(), String> {
        if count > self.max_sans as usize {
            return Err(format!(
                "the CSR has {count} subjectAltNames, more than this controller accepts ({}, flag --{FLAG_MAX_SANS}): spread the names over several certificates, or ask the operator to raise the limit",
                self.max_sans
            ));
        }
        Ok(())
    }

    /// `what` names the name in the message; it is only built when the name is too long.
    fn check_name(&self, what: &dyn Fn() -> String, value: &[u8]) -> Result<(), String> {
        if value.len() > self.max_name_bytes as usize {
            // The start of the name, so the requester sees which one; never the whole of it.
            let start = String::from_utf8_lossy(&value[..value.len().min(40)]);
            return Err(format!(
                "the CSR's {} starting {start:?} is {} bytes long, more than this controller accepts ({} bytes per name, flag --{FLAG_MAX_NAME_BYTES}): use a shorter name, or ask the operator to raise the limit",
                what(),
                value.len(),
                self.max_name_bytes
            ));
        }
        Ok(())
    }
}

impl Default for CsrLimits {
    fn default() -> Self {
        CsrLimits::DEFAULT
    }
}

/// A parsed PKCS#10 request whose self-signature has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    /// The DER encoding of the whole request.
    pub der: Vec<u8>,
    /// The DER encoding of the subject Name, for CAs that copy it verbatim.
    pub subject_der: Vec<u8>,
    /// The subject in RFC 4514 form, for messages.
    pub subject: String,
    /// The first common name, if any.
    pub common_name: Option<String>,
    /// DNS SANs, in CSR order.
    pub dns_names: Vec<String>,
    /// IP SANs, in CSR order.
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs, in CSR order.
    pub uris: Vec<String>,
    /// Email (rfc822Name) SANs, in CSR order.
    pub emails: Vec<String>,
    /// otherName SANs (a UPN, or any type by OID), in CSR order. cert-manager ≥ 1.20 sends these
    /// (its `OtherNames` feature is on by default). An adapter that builds certificates decides
    /// which it accepts; one that forwards the CSR to a CA leaves that to the CA.
    pub other_names: Vec<OtherName>,
    /// directoryName SANs, in CSR order.
    pub directory_names: Vec<DirectoryName>,
    /// The DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
    /// The key algorithm.
    pub key: KeyKind,
    /// Key usages the CSR itself asks for (KeyUsage extension), if present.
    pub embedded_key_usages: Option<Vec<KeyUsage>>,
    /// Extended key usages the CSR asks for, if present. Unknown OIDs are kept as dotted strings.
    pub embedded_ext_key_usages: Option<(Vec<ExtKeyUsage>, Vec<String>)>,
    /// BasicConstraints cA flag the CSR asks for, if present.
    pub embedded_is_ca: Option<bool>,
}

impl Csr {
    /// Parses a PEM CSR (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) within the default
    /// [`CsrLimits`] and verifies its signature.
    /// The error says what is wrong in a sentence fit for a condition message.
    pub fn from_pem(pem_text: &str) -> Result<Csr, String> {
        Csr::from_pem_with_limits(pem_text, &CsrLimits::default())
    }

    /// [`Csr::from_pem`] within `limits` (the controller's `--csr-max-*` flags). The size is
    /// checked before anything is decoded; a CSR over a limit is refused with a message naming the
    /// limit and its flag.
    pub fn from_pem_with_limits(pem_text: &str, limits: &CsrLimits) -> Result<Csr, String> {
        limits.check_pem_size(pem_text.len())?;
        if let Some(der) = plain_pem_body(pem_text) {
            return Csr::from_der_with_limits(&der, limits);
        }
        let block = pem::parse(pem_text.trim()).map_err(|e| format!("the CSR is not valid PEM: {e}"))?;
        match block.tag() {
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => Csr::from_der_with_limits(block.contents(), limits),
            other => Err(format!("the PEM block is {other:?}, expected \"CERTIFICATE REQUEST\"")),
        }
    }

    /// Parses a DER CSR within the default [`CsrLimits`] on names, and verifies its signature.
    pub fn from_der(der: &[u8]) -> Result<Csr, String> {
        Csr::from_der_with_limits(der, &CsrLimits::default())
    }

    fn from_der_with_limits(der: &[u8], limits: &CsrLimits) -> Result<Csr, String> {
        let (rest, req) =
            X509CertificationRequest::from_der(der).map_err(|e| format!("the CSR does not parse as PKCS#10: {e}"))?;
        if !rest.is_empty() {
            return Err("the CSR has trailing data after the PKCS#10 structure".into());
        }
        req.verify_signature().map_err(|e| {
            format!("the CSR signature does not verify ({e:?}): the request was altered or signed with an unsupported algorithm")
        })?;
        let info = &req.certification_request_info;
        for attr in info.subject.iter_attributes() {
            let what = || format!("subject attribute {}", attr.attr_type().to_id_string());
            limits.check_name(&what, attr.attr_value().data)?;
        }
        let subject = info.subject.to_string();
        let common_name = info.subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
        let mut csr = Csr {
            der: der.to_vec(),
            subject_der: info.subject.as_raw().to_vec(),
            subject,
            common_name,
            dns_names: vec![],
            ip_addresses: vec![],
            uris: vec![],
            emails: vec![],
            other_names: vec![],
            directory_names: vec![],
            public_key_der: info.subject_pki.raw.to_vec(),
            key: key_kind(&info.subject_pki),
            embedded_key_usages: None,
            embedded_ext_key_usages: None,
            embedded_is_ca: None,
        };
        let mut san_count = 0usize;
        for ext in req.requested_extensions().into_iter().flatten() {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    // Counted across SAN extensions: a CSR may (wrongly) carry several.
                    san_count += san.general_names.len();
                    limits.check_san_count(san_count)?;
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(d) => {
                                limits.check_name(&|| "DNS subjectAltName".into(), d.as_bytes())?;
                                csr.dns_names.push((*d).to_owned());
                            }
                            GeneralName::URI(u) => {
                                limits.check_name(&|| "URI subjectAltName".into(), u.as_bytes())?;
                                csr.uris.push((*u).to_owned());
                            }
                            GeneralName::RFC822Name(e) => {
                                limits.check_name(&|| "email subjectAltName".into(), e.as_bytes())?;
                                csr.emails.push((*e).to_owned());
                            }
                            GeneralName::IPAddress(b) => csr.ip_addresses.push(ip_from_bytes(b)?),
                            GeneralName::OtherName(oid, value) => {
                                let other = OtherName::from_parts(oid.to_id_string(), value)?;
                                let what = || format!("otherName subjectAltName {}", other.type_id());
                                limits.check_name(&what, other.value_bytes())?;
                                csr.other_names.push(other);
                            }
                            GeneralName::DirectoryName(n) => {
                                limits.check_name(&|| "directoryName subjectAltName".into(), n.as_raw())?;
                                csr.directory_names
                                    .push(DirectoryName { der: n.as_raw().to_vec(), rfc4514: n.to_string() });
                            }
                            other => {
                                return Err(format!(
                                    "the CSR has a subjectAltName of a type no issuer here handles ({other}): use DNS, IP, URI, email, otherName or directoryName names"
                                ));
                            }
                        }
                    }
                }
                ParsedExtension::KeyUsage(ku) => {
                    let mut v = Vec::new();
                    let flags = [
                        (ku.digital_signature(), KeyUsage::DigitalSignature),
                        (ku.non_repudiation(), KeyUsage::ContentCommitment),
                        (ku.key_encipherment(), KeyUsage::KeyEncipherment),
                        (ku.data_encipherment(), KeyUsage::DataEncipherment),
                        (ku.key_agreement(), KeyUsage::KeyAgreement),
                        (ku.key_cert_sign(), KeyUsage::CertSign),
                        (ku.crl_sign(), KeyUsage::CrlSign),
                        (ku.encipher_only(), KeyUsage::EncipherOnly),
                        (ku.decipher_only(), KeyUsage::DecipherOnly),
                    ];
                    v.extend(flags.iter().filter(|(on, _)| *on).map(|(_, k)| *k));
                    csr.embedded_key_usages = Some(v);
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    let mut known = Vec::new();
                    let mut unknown = Vec::new();
                    let flags = [
                        (eku.any, ExtKeyUsage::Any),
                        (eku.server_auth, ExtKeyUsage::ServerAuth),
                        (eku.client_auth, ExtKeyUsage::ClientAuth),
                        (eku.code_signing, ExtKeyUsage::CodeSigning),
                        (eku.email_protection, ExtKeyUsage::EmailProtection),
                        (eku.time_stamping, ExtKeyUsage::TimeStamping),
                        (eku.ocsp_signing, ExtKeyUsage::OcspSigning),
                    ];
                    known.extend(flags.iter().filter(|(on, _)| *on).map(|(_, k)| *k));
                    for oid in &eku.other {
                        match oid.iter().map(|arcs| arcs.collect::<Vec<u64>>()).and_then(|a| ExtKeyUsage::from_oid(&a))
                        {
                            Some(e) => known.push(e),
                            None => unknown.push(oid.to_id_string()),
                        }
                    }
                    known.sort();
                    known.dedup();
                    csr.embedded_ext_key_usages = Some((known, unknown));
                }
                ParsedExtension::BasicConstraints(bc) => csr.embedded_is_ca = Some(bc.ca),
                _ => {}
            }
        }
        Ok(csr)
    }

    /// cert-manager's rule: what the CSR embeds (BasicConstraints, KeyUsage, ExtendedKeyUsage) must
    /// agree with what the request asks for. The error names the mismatch.
    pub fn check_consistent(
        &self,
        is_ca: bool,
        key_usages: &[KeyUsage],
        ext_key_usages: &[ExtKeyUsage],
    ) -> Result<(), String> {
        if let Some(ca) = self.embedded_is_ca
            && ca != is_ca
        {
            return Err(format!(
                "the CSR's BasicConstraints say isCA={ca} but the request has isCA={is_ca}: make spec.isCA match the CSR"
            ));
        }
        if let Some(embedded) = &self.embedded_key_usages {
            let mut want = key_usages.to_vec();
            want.sort();
            let mut have = embedded.clone();
            have.sort();
            if have != want {
                return Err(format!(
                    "the CSR's KeyUsages {have:?} do not match the requested key usages {want:?}: make spec.usages match the CSR"
                ));
            }
        }
        if let Some((have, unknown)) = &self.embedded_ext_key_usages {
            if !unknown.is_empty() {
                return Err(format!(
                    "the CSR asks for extended key usages cert-manager does not know: {}",
                    unknown.join(", ")
                ));
            }
            let mut want = ext_key_usages.to_vec();
            want.sort();
            if *have != want {
                return Err(format!(
                    "the CSR's ExtKeyUsages {have:?} do not match the requested extended key usages {want:?}: make spec.usages match the CSR"
                ));
            }
        }
        Ok(())
    }
}

/// The DER inside a CSR's PEM when it is the plain form every client writes: one block, a
/// `CERTIFICATE REQUEST` label, base64 lines and nothing else. Anything unusual returns `None` so
/// the `pem` crate parses it and words the error. Why not always the `pem` crate: it costs 3–5 µs
/// per CSR (it rebuilds the body char by char), a few percent of an HSM signature on a hot path.
fn plain_pem_body(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = text.trim();
    let (label, rest) = text.strip_prefix("-----BEGIN ")?.split_once("-----")?;
    if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
        return None;
    }
    let body = rest.strip_suffix("-----")?.strip_suffix(label)?.strip_suffix("-----END ")?;
    let mut b64 = Vec::with_capacity(body.len());
    for line in body.lines() {
        let line = line.trim_end_matches('\r');
        if !line.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=') {
            return None;
        }
        b64.extend_from_slice(line.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn ip_from_bytes(b: &[u8]) -> Result<IpAddr, String> {
    match b.len() {
        4 => Ok(IpAddr::from(<[u8; 4]>::try_from(b).expect("length checked"))),
        16 => Ok(IpAddr::from(<[u8; 16]>::try_from(b).expect("length checked"))),
        n => Err(format!("the CSR has an IP subjectAltName of {n} bytes; expected 4 (IPv4) or 16 (IPv6)")),
    }
}

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

fn key_kind(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> KeyKind {
    let alg = spki.algorithm.algorithm.to_id_string();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => KeyKind::Rsa { bits: rsa.key_size() },
        Ok(PublicKey::EC(_)) => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(OID_P256) => KeyKind::EcP256,
                Some(OID_P384) => KeyKind::EcP384,
                Some(c) => KeyKind::Other(format!("{alg} (curve {c})")),
                None => KeyKind::Other(alg),
            }
        }
        _ if alg == "1.3.101.112" => KeyKind::Ed25519,
        _ => KeyKind::Other(alg),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// How the controller reacts to `e`; the one place the tests read a SignError's reaction.
    pub(crate) fn reaction(e: &crate::SignError) -> &'static str {
        match e.reaction {
            crate::Reaction::Pending { .. } => "pending",
            crate::Reaction::Permanent => "permanent",
            crate::Reaction::IssuerNotReady => "issuer-not-ready",
            crate::Reaction::Transient => "transient",
        }
    }

    /// A CSR for `kind` with the given SANs, built with rcgen (test helper shared by the crate's tests).
    pub(crate) fn make_csr(
        alg: &'static rcgen::SignatureAlgorithm,
        f: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> String {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "a.example.com");
        f(&mut params);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn plain_pem_fast_path_agrees_with_the_pem_crate() {
        let pem_text = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |_| {});
        let want = pem::parse(&pem_text).unwrap().into_contents();
        assert_eq!(plain_pem_body(&pem_text), Some(want.clone()));
        let crlf = pem_text.replace('\n', "\r\n");
        assert_eq!(plain_pem_body(&crlf), Some(want.clone()));
        let new_label = pem_text.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST");
        assert_eq!(plain_pem_body(&new_label), Some(want.clone()));
        assert_eq!(Csr::from_pem(&crlf).unwrap(), Csr::from_pem(&pem_text).unwrap());
        // Everything else goes to the pem crate, which words the error.
        assert_eq!(plain_pem_body(&pem_text.replace("CERTIFICATE REQUEST", "CERTIFICATE")), None);
        let mismatched = pem_text.replacen("END CERTIFICATE REQUEST", "END NEW CERTIFICATE REQUEST", 1);
        assert_eq!(plain_pem_body(&mismatched), None);
        let body_start = pem_text.find('\n').unwrap() + 1;
        let broken = format!("{}*{}", &pem_text[..body_start], &pem_text[body_start + 1..]);
        assert_eq!(plain_pem_body(&broken), None);
        let err = Csr::from_pem(&broken).unwrap_err();
        assert!(err.contains("not valid PEM"), "{err}");
        let cert = pem_text.replace("CERTIFICATE REQUEST", "CERTIFICATE");
        assert!(Csr::from_pem(&cert).unwrap_err().contains("expected \"CERTIFICATE REQUEST\""));
    }

    #[test]
    fn parses_sans_and_key() {
        let pem = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |p| {
            p.subject_alt_names.push(rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap()));
            p.subject_alt_names.push(rcgen::SanType::IpAddress("::1".parse().unwrap()));
            p.subject_alt_names.push(rcgen::SanType::URI("spiffe://cluster.local/a".try_into().unwrap()));
            p.subject_alt_names.push(rcgen::SanType::Rfc822Name("alice@example.com".try_into().unwrap()));
        });
        let csr = Csr::from_pem(&pem).unwrap();
        assert_eq!(csr.key, KeyKind::EcP256);
        assert_eq!(csr.common_name.as_deref(), Some("a.example.com"));
        assert_eq!(csr.dns_names, vec!["a.example.com"]);
        assert_eq!(csr.ip_addresses, vec!["10.0.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]);
        assert_eq!(csr.uris, vec!["spiffe://cluster.local/a"]);
        assert_eq!(csr.emails, vec!["alice@example.com"]);
    }

    #[test]
    fn tampered_csr_is_refused() {
        let pem = make_csr(&rcgen::PKCS_ED25519, |_| {});
        let mut der = pem::parse(&pem).unwrap().into_contents();
        // Flip a byte inside the subject's common name.
        let pos = der.windows(5).position(|w| w == b"a.exa").unwrap();
        der[pos] = b'b';
        let err = Csr::from_der(&der).unwrap_err();
        assert!(err.contains("signature does not verify"), "{err}");
        assert!(
            Csr::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")
                .unwrap_err()
                .contains("CERTIFICATE")
        );
        assert!(Csr::from_pem("garbage").unwrap_err().contains("not valid PEM"));
    }

    /// DER TLV with a short or long length (tests only: building SANs rcgen cannot write).
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    /// A CSR whose subjectAltName extension holds exactly `general_names` (DER, concatenated).
    pub(crate) fn csr_with_raw_sans(general_names: &[u8]) -> String {
        make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |p| {
            p.subject_alt_names.clear();
            let san = tlv(0x30, general_names);
            p.custom_extensions.push(rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 17], san));
        })
    }

    /// An otherName GeneralName: `[0] { OID, [0] EXPLICIT value }`.
    pub(crate) fn other_name_der(oid_der_content: &[u8], value: &[u8]) -> Vec<u8> {
        let mut body = tlv(0x06, oid_der_content);
        body.extend(tlv(0xa0, value));
        tlv(0xa0, &body)
    }

    /// 1.3.6.1.4.1.311.20.2.3 (UPN) and 1.3.6.1.4.1.99999.1, DER-encoded arcs.
    pub(crate) const UPN_OID_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x14, 0x02, 0x03];
    pub(crate) const PRIVATE_OID_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x86, 0x8d, 0x1f, 0x01];

    #[test]
    fn other_names_and_directory_names_are_parsed() {
        // As cert-manager writes them (otherNames[].utf8Value), with rcgen.
        let pem = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |p| {
            p.subject_alt_names
                .push(rcgen::SanType::OtherName((vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3], "alice@corp.example".into())));
            p.subject_alt_names.push(rcgen::SanType::OtherName((vec![1, 3, 6, 1, 4, 1, 99999, 1], "tag-7".into())));
        });
        let csr = Csr::from_pem(&pem).unwrap();
        assert_eq!(csr.dns_names, vec!["a.example.com"]);
        assert_eq!(csr.other_names[0], OtherName::Upn("alice@corp.example".into()));
        assert_eq!(csr.other_names[0].type_id(), OtherName::UPN_OID);
        assert_eq!(csr.other_names[0].to_string(), "UPN \"alice@corp.example\"");
        let OtherName::Other { type_id, value_der } = &csr.other_names[1] else { panic!("{:?}", csr.other_names) };
        assert_eq!((type_id.as_str(), value_der.as_slice()), ("1.3.6.1.4.1.99999.1", &b"\x0c\x05tag-7"[..]));
        assert_eq!(csr.other_names[1].utf8_value(), Some("tag-7"));

        // A value that is not a string, and a directoryName (rcgen writes neither: raw DER).
        let mut names = other_name_der(PRIVATE_OID_DER, &tlv(0x04, &[1, 2, 3]));
        let dn = tlv(0x30, &tlv(0x31, &tlv(0x30, &[tlv(0x06, &[0x55, 0x04, 0x03]), tlv(0x0c, b"Alice")].concat())));
        names.extend(tlv(0xa4, &dn));
        let csr = Csr::from_pem(&csr_with_raw_sans(&names)).unwrap();
        assert_eq!(
            csr.other_names,
            vec![OtherName::Other { type_id: "1.3.6.1.4.1.99999.1".into(), value_der: vec![0x04, 3, 1, 2, 3] }]
        );
        assert_eq!(csr.other_names[0].utf8_value(), None);
        assert!(csr.other_names[0].to_string().contains("DER value of 5 bytes"));
        assert_eq!(csr.directory_names, vec![DirectoryName { der: dn, rfc4514: "CN=Alice".into() }]);
    }

    #[test]
    fn malformed_other_names_and_unhandled_san_types_are_refused() {
        // A UPN must be a UTF8String (cert-manager and Windows write one).
        let ia5_upn = other_name_der(UPN_OID_DER, &tlv(0x16, b"alice@corp.example"));
        let e = Csr::from_pem(&csr_with_raw_sans(&ia5_upn)).unwrap_err();
        assert!(e.contains("1.3.6.1.4.1.311.20.2.3 is malformed: a User Principal Name must be a UTF8String"), "{e}");
        // The value must sit in [0] EXPLICIT, with nothing after it.
        let mut body = tlv(0x06, PRIVATE_OID_DER);
        body.extend(tlv(0x0c, b"bare"));
        let e = Csr::from_pem(&csr_with_raw_sans(&tlv(0xa0, &body))).unwrap_err();
        assert!(e.contains("not wrapped in [0] EXPLICIT"), "{e}");
        let mut inner = tlv(0x0c, b"x");
        inner.extend(tlv(0x0c, b"y"));
        let e = Csr::from_pem(&csr_with_raw_sans(&other_name_der(PRIVATE_OID_DER, &inner))).unwrap_err();
        assert!(e.contains("trailing data"), "{e}");
        // registeredID [8]: no adapter handles it.
        let e = Csr::from_pem(&csr_with_raw_sans(&tlv(0x88, &[0x2a, 0x03]))).unwrap_err();
        assert!(e.contains("subjectAltName of a type no issuer here handles (RegisteredID(1.2.3))"), "{e}");
    }

    fn limits(max_pem_bytes: u32, max_sans: u32, max_name_bytes: u32) -> CsrLimits {
        CsrLimits { max_pem_bytes, max_sans, max_name_bytes }
    }

    #[test]
    fn csr_size_limit() {
        let pem = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |_| {});
        let len = pem.len() as u32;
        Csr::from_pem_with_limits(&pem, &limits(len, 1, 64)).unwrap();
        let e = Csr::from_pem_with_limits(&pem, &limits(len - 1, 1, 64)).unwrap_err();
        assert!(e.contains(&format!("the CSR is {len} bytes of PEM")), "{e}");
        assert!(e.contains(&format!("({} bytes, flag --csr-max-pem-bytes)", len - 1)), "{e}");
        // Checked before decoding: a huge blob of garbage gets the size message, not a parse error.
        let e = Csr::from_pem(&"A".repeat(200 * 1024)).unwrap_err();
        assert!(e.contains("flag --csr-max-pem-bytes"), "{e}");
    }

    #[test]
    fn san_count_limit() {
        let pem = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |p| {
            for i in 0..4 {
                p.subject_alt_names.push(rcgen::SanType::IpAddress(std::net::Ipv4Addr::new(10, 0, 0, i).into()));
            }
        });
        // a.example.com + 4 IP addresses: every type counts.
        Csr::from_pem_with_limits(&pem, &limits(u32::MAX, 5, 64)).unwrap();
        let e = Csr::from_pem_with_limits(&pem, &limits(u32::MAX, 4, 64)).unwrap_err();
        assert!(e.contains("the CSR has 5 subjectAltNames"), "{e}");
        assert!(e.contains("(4, flag --csr-max-sans)"), "{e}");
        // The default admits 1,000 names and refuses the 1,001st.
        let many = |n: usize| {
            make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |p| {
                p.subject_alt_names =
                    (0..n).map(|i| rcgen::SanType::DnsName(format!("h{i}.example.com").try_into().unwrap())).collect();
            })
        };
        assert_eq!(Csr::from_pem(&many(1000)).unwrap().dns_names.len(), 1000);
        let e = Csr::from_pem(&many(1001)).unwrap_err();
        assert!(e.contains("1001 subjectAltNames") && e.contains("(1000, flag --csr-max-sans)"), "{e}");
    }

    #[test]
    fn name_length_limit() {
        type Build = fn(&mut rcgen::CertificateParams, String);
        let long = format!("{}.example.com", "a".repeat(50));
        let at_limit = long.len() as u32;
        let cases: [(String, Build, &str); 5] = [
            (
                long.clone(),
                |p, v| p.subject_alt_names.push(rcgen::SanType::DnsName(v.try_into().unwrap())),
                "DNS subjectAltName",
            ),
            (
                format!("spiffe://{}", &long[9..]),
                |p, v| p.subject_alt_names.push(rcgen::SanType::URI(v.try_into().unwrap())),
                "URI subjectAltName",
            ),
            (
                format!("{}@x.io", &long[5..]),
                |p, v| p.subject_alt_names.push(rcgen::SanType::Rfc822Name(v.try_into().unwrap())),
                "email subjectAltName",
            ),
            (
                long.clone(),
                |p, v| {
                    p.subject_alt_names
                        .push(rcgen::SanType::OtherName((vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3], v.into())))
                },
                "otherName subjectAltName 1.3.6.1.4.1.311.20.2.3",
            ),
            (
                long.clone(),
                |p, v| p.distinguished_name.push(rcgen::DnType::OrganizationName, v),
                "subject attribute 2.5.4.10",
            ),
        ];
        for (value, build, what) in cases {
            assert_eq!(value.len() as u32, at_limit);
            let pem = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |p| {
                p.subject_alt_names.clear();
                p.distinguished_name = rcgen::DistinguishedName::new();
                build(p, value.clone())
            });
            // Exactly at the limit passes; one byte less fails naming the name, the limit and the flag.
            Csr::from_pem_with_limits(&pem, &limits(u32::MAX, 10, at_limit)).unwrap();
            let e = Csr::from_pem_with_limits(&pem, &limits(u32::MAX, 10, at_limit - 1)).unwrap_err();
            assert!(e.contains(&format!("the CSR's {what} starting {:?}", &value[..40])), "{e}");
            assert!(e.contains(&format!("is {at_limit} bytes long")), "{e}");
            assert!(e.contains(&format!("({} bytes per name, flag --csr-max-name-bytes)", at_limit - 1)), "{e}");
            assert!(!e.contains(&value), "the message does not repeat the whole name: {e}");
        }
    }

    #[test]
    fn embedded_usages_must_match_the_request() {
        let pem = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |p| {
            p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            p.is_ca = rcgen::IsCa::ExplicitNoCa;
        });
        let csr = Csr::from_pem(&pem).unwrap();
        csr.check_consistent(false, &[KeyUsage::DigitalSignature], &[ExtKeyUsage::ServerAuth]).unwrap();
        let e = csr.check_consistent(true, &[KeyUsage::DigitalSignature], &[ExtKeyUsage::ServerAuth]).unwrap_err();
        assert!(e.contains("isCA"), "{e}");
        let e = csr
            .check_consistent(
                false,
                &[KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment],
                &[ExtKeyUsage::ServerAuth],
            )
            .unwrap_err();
        assert!(e.contains("KeyUsages"), "{e}");
        let e = csr.check_consistent(false, &[KeyUsage::DigitalSignature], &[]).unwrap_err();
        assert!(e.contains("ExtKeyUsages"), "{e}");
    }
}
