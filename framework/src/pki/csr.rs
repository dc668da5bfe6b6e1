//! PKCS#10 parsing with signature verification (x509-parser), and cert-manager's consistency rules
//! between what the CSR embeds and what the request asks for.

use std::net::IpAddr;

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
    /// Parses a PEM CSR (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) and verifies its signature.
    /// The error says what is wrong in a sentence fit for a condition message.
    pub fn from_pem(pem_text: &str) -> Result<Csr, String> {
        if let Some(der) = plain_pem_body(pem_text) {
            return Csr::from_der(&der);
        }
        let block = pem::parse(pem_text.trim()).map_err(|e| format!("the CSR is not valid PEM: {e}"))?;
        match block.tag() {
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => Csr::from_der(block.contents()),
            other => Err(format!("the PEM block is {other:?}, expected \"CERTIFICATE REQUEST\"")),
        }
    }

    /// Parses a DER CSR and verifies its signature.
    pub fn from_der(der: &[u8]) -> Result<Csr, String> {
        let (rest, req) =
            X509CertificationRequest::from_der(der).map_err(|e| format!("the CSR does not parse as PKCS#10: {e}"))?;
        if !rest.is_empty() {
            return Err("the CSR has trailing data after the PKCS#10 structure".into());
        }
        req.verify_signature().map_err(|e| {
            format!("the CSR signature does not verify ({e:?}): the request was altered or signed with an unsupported algorithm")
        })?;
        let info = &req.certification_request_info;
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
            public_key_der: info.subject_pki.raw.to_vec(),
            key: key_kind(&info.subject_pki),
            embedded_key_usages: None,
            embedded_ext_key_usages: None,
            embedded_is_ca: None,
        };
        for ext in req.requested_extensions().into_iter().flatten() {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(d) => csr.dns_names.push((*d).to_owned()),
                            GeneralName::URI(u) => csr.uris.push((*u).to_owned()),
                            GeneralName::RFC822Name(e) => csr.emails.push((*e).to_owned()),
                            GeneralName::IPAddress(b) => csr.ip_addresses.push(ip_from_bytes(b)?),
                            other => {
                                return Err(format!("the CSR has an unsupported subjectAltName entry {other:?}"));
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
