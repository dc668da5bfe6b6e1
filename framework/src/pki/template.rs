//! A certificate template built from a [`SignRequest`], for adapters that sign locally (a CA key in
//! a Secret, an HSM). rcgen's own CSR import is not used on purpose: it takes the subject key's
//! algorithm from the CSR's *signature* OID (wrong for a P-256 key signed with SHA-384) and refuses
//! CSRs with other extensions. The CSR was already verified by [`Csr`](crate::Csr).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, OtherNameValue, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use x509_parser::prelude::FromDer;

use crate::error::SignError;
use crate::pki::OtherName;
use crate::request::{ExtKeyUsage, KeyUsage, SignRequest};

/// A random positive serial number of 16 bytes (128 bits, above CA/B Forum's 64-bit minimum).
pub fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and exactly 16 bytes long once DER-encoded: top bit clear, first byte non-zero.
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::from_slice(&bytes)
}

/// The request's public key in the form rcgen signs for.
pub fn subject_public_key(req: &SignRequest) -> Result<SubjectPublicKeyInfo, SignError> {
    SubjectPublicKeyInfo::from_der(&req.csr.public_key_der)
        .map_err(|e| SignError::permanent(format!("the CSR's public key ({}) cannot be used: {e}", req.csr.key)))
}

/// Certificate parameters for `req`: subject and every SAN copied from the CSR (otherNames with a
/// UTF8String value, such as UPNs, included; a directoryName or another otherName value is refused
/// because rcgen cannot write it), key usages and
/// extended key usages from the request, basic constraints (`path_len` for CAs), subject and
/// authority key identifiers, a random serial, and validity now → now + duration.
///
/// Known limit: rcgen keeps one value per attribute type in a subject, so a subject with two
/// attributes of the same type (e.g. two OUs) keeps the last one.
pub fn certificate_params(req: &SignRequest, path_len: Option<u8>) -> Result<CertificateParams, SignError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = subject_of(&req.csr.subject_der)?;
    let ia5 = |s: &str, what: &str| {
        s.to_owned().try_into().map_err(|_| SignError::permanent(format!("the CSR's {what} SAN {s:?} is not ASCII")))
    };
    for d in &req.csr.dns_names {
        p.subject_alt_names.push(SanType::DnsName(ia5(d, "DNS")?));
    }
    for ip in &req.csr.ip_addresses {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    for u in &req.csr.uris {
        p.subject_alt_names.push(SanType::URI(ia5(u, "URI")?));
    }
    for e in &req.csr.emails {
        p.subject_alt_names.push(SanType::Rfc822Name(ia5(e, "email")?));
    }
    // The adapter's policy has already decided which otherNames it allows; the rest is encoding.
    for o in &req.csr.other_names {
        p.subject_alt_names.push(other_name(o)?);
    }
    if let Some(d) = req.csr.directory_names.first() {
        return Err(SignError::permanent(format!(
            "the CSR asks for the directoryName subjectAltName {:?}, which this issuer cannot put in a certificate (rcgen writes no directoryName SANs): remove it from the CSR",
            d.rfc4514
        )));
    }
    p.key_usages = req.key_usages.iter().map(|k| key_usage(*k)).collect();
    p.extended_key_usages = req.ext_key_usages.iter().map(|e| ext_key_usage(*e)).collect();
    p.is_ca = if req.is_ca {
        IsCa::Ca(path_len.map_or(BasicConstraints::Unconstrained, BasicConstraints::Constrained))
    } else {
        // ExplicitNoCa also makes rcgen emit the subject key identifier.
        IsCa::ExplicitNoCa
    };
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(random_serial());
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
    let duration = time::Duration::try_from(req.duration)
        .map_err(|_| SignError::permanent(format!("the requested duration {:?} is too long", req.duration)))?;
    p.not_before = now;
    p.not_after = now
        .checked_add(duration)
        .ok_or_else(|| SignError::permanent(format!("the requested duration {:?} is too long", req.duration)))?;
    Ok(p)
}

/// rcgen writes otherNames with a UTF8String value only: every UPN, and whatever cert-manager's
/// `otherNames[].utf8Value` produces. Anything else is refused rather than dropped.
fn other_name(o: &OtherName) -> Result<SanType, SignError> {
    let value = o.utf8_value().ok_or_else(|| {
        SignError::permanent(format!(
            "the CSR asks for the subjectAltName {o}, whose value is not a UTF8String; this issuer can only put UTF8String otherNames in a certificate: remove it from the CSR"
        ))
    })?;
    let arcs = o.type_id().split('.').map(str::parse).collect::<Result<Vec<u64>, _>>().map_err(|_| {
        SignError::permanent(format!("the CSR's otherName type {} has an arc that does not fit 64 bits", o.type_id()))
    })?;
    Ok(SanType::OtherName((arcs, OtherNameValue::Utf8String(value.to_owned()))))
}

fn subject_of(subject_der: &[u8]) -> Result<DistinguishedName, SignError> {
    let (_, name) = x509_parser::x509::X509Name::from_der(subject_der)
        .map_err(|e| SignError::permanent(format!("the CSR's subject does not parse: {e}")))?;
    let mut dn = DistinguishedName::new();
    for attr in name.iter_attributes() {
        let arcs: Vec<u64> = attr.attr_type().iter().map(|a| a.collect()).ok_or_else(|| {
            SignError::permanent("the CSR's subject has an attribute OID that does not fit 64-bit arcs")
        })?;
        let value = attr.as_str().map_err(|_| {
            SignError::permanent(format!(
                "the CSR's subject attribute {} is not a string",
                attr.attr_type().to_id_string()
            ))
        })?;
        let value = match attr.attr_value().tag() {
            x509_parser::der_parser::asn1_rs::Tag::PrintableString => match value.to_owned().try_into() {
                Ok(p) => DnValue::PrintableString(p),
                Err(_) => DnValue::Utf8String(value.to_owned()),
            },
            _ => DnValue::Utf8String(value.to_owned()),
        };
        dn.push(DnType::from_oid(&arcs), value);
    }
    Ok(dn)
}

fn key_usage(k: KeyUsage) -> KeyUsagePurpose {
    match k {
        KeyUsage::DigitalSignature => KeyUsagePurpose::DigitalSignature,
        KeyUsage::ContentCommitment => KeyUsagePurpose::ContentCommitment,
        KeyUsage::KeyEncipherment => KeyUsagePurpose::KeyEncipherment,
        KeyUsage::DataEncipherment => KeyUsagePurpose::DataEncipherment,
        KeyUsage::KeyAgreement => KeyUsagePurpose::KeyAgreement,
        KeyUsage::CertSign => KeyUsagePurpose::KeyCertSign,
        KeyUsage::CrlSign => KeyUsagePurpose::CrlSign,
        KeyUsage::EncipherOnly => KeyUsagePurpose::EncipherOnly,
        KeyUsage::DecipherOnly => KeyUsagePurpose::DecipherOnly,
    }
}

fn ext_key_usage(e: ExtKeyUsage) -> ExtendedKeyUsagePurpose {
    match e {
        ExtKeyUsage::Any => ExtendedKeyUsagePurpose::Any,
        ExtKeyUsage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
        ExtKeyUsage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        ExtKeyUsage::CodeSigning => ExtendedKeyUsagePurpose::CodeSigning,
        ExtKeyUsage::EmailProtection => ExtendedKeyUsagePurpose::EmailProtection,
        ExtKeyUsage::TimeStamping => ExtendedKeyUsagePurpose::TimeStamping,
        ExtKeyUsage::OcspSigning => ExtendedKeyUsagePurpose::OcspSigning,
        other => ExtendedKeyUsagePurpose::Other(other.oid().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Csr;
    use crate::pki::csr::tests::make_csr;
    use crate::request::{RequestKind, RequestObject, Requester};
    use x509_parser::prelude::X509Certificate;

    pub(crate) fn request(pem: String, is_ca: bool) -> SignRequest {
        SignRequest {
            csr: Csr::from_pem(&pem).unwrap(),
            csr_pem: pem,
            duration: std::time::Duration::from_secs(3600),
            is_ca,
            key_usages: vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment],
            ext_key_usages: vec![ExtKeyUsage::ServerAuth, ExtKeyUsage::IpsecUser],
            requester: Requester::default(),
            object: RequestObject {
                kind: RequestKind::CommandLine,
                name: "t".into(),
                namespace: None,
                uid: String::new(),
                annotations: Default::default(),
            },
        }
    }

    #[test]
    fn leaf_copies_the_csr_and_the_request() {
        let pem = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |p| {
            p.distinguished_name.push(DnType::OrganizationName, "Acme");
            p.subject_alt_names.push(SanType::IpAddress("192.0.2.7".parse().unwrap()));
        });
        let req = request(pem, false);
        let params = certificate_params(&req, None).unwrap();
        let ca = crate::testing::TestCa::new(&crate::KeyKind::EcP256).unwrap();
        let cert = params.signed_by(&subject_public_key(&req).unwrap(), ca.issuer()).unwrap();
        let (_, x) = X509Certificate::from_der(cert.der()).unwrap();
        assert_eq!(x.public_key().raw, &req.csr.public_key_der[..]);
        assert_eq!(x.subject().as_raw(), &req.csr.subject_der[..], "subject copied byte for byte");
        let remaining = x.validity().time_to_expiration().unwrap().whole_seconds();
        assert!(remaining.abs_diff(3600) <= 1, "validity is the requested hour: {remaining}s");
        let serial = x.raw_serial();
        assert_eq!(serial.len(), 16);
        assert!(serial[0] & 0x80 == 0 && serial[0] != 0);
        let bc = x.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert_eq!(eku.other.len(), 1, "ipsec user is carried by OID");
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        assert!(
            x.get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
                .unwrap()
                .is_some()
        );
        assert!(
            x.get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER).unwrap().is_some()
        );
    }

    #[test]
    fn utf8_other_names_are_issued_and_the_rest_refused_naming_why() {
        use crate::pki::csr::tests::{PRIVATE_OID_DER, csr_with_raw_sans, other_name_der, reaction};
        use x509_parser::extensions::GeneralName;
        let pem = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |p| {
            p.subject_alt_names
                .push(SanType::OtherName((vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3], "alice@corp.example".into())));
            p.subject_alt_names.push(SanType::OtherName((vec![1, 3, 6, 1, 4, 1, 99999, 1], "tag-7".into())));
        });
        let req = request(pem, false);
        let ca = crate::testing::TestCa::new(&crate::KeyKind::EcP256).unwrap();
        let cert =
            certificate_params(&req, None).unwrap().signed_by(&subject_public_key(&req).unwrap(), ca.issuer()).unwrap();
        let (_, x) = X509Certificate::from_der(cert.der()).unwrap();
        let sans = &x.subject_alternative_name().unwrap().unwrap().value.general_names;
        let others: Vec<(String, &[u8])> = sans
            .iter()
            .filter_map(|n| match n {
                GeneralName::OtherName(oid, v) => Some((oid.to_id_string(), *v)),
                _ => None,
            })
            .collect();
        assert_eq!(
            others,
            vec![
                ("1.3.6.1.4.1.311.20.2.3".to_owned(), &b"\xa0\x14\x0c\x12alice@corp.example"[..]),
                ("1.3.6.1.4.1.99999.1".to_owned(), &b"\xa0\x07\x0c\x05tag-7"[..]),
            ]
        );
        assert!(sans.contains(&GeneralName::DNSName("a.example.com")), "{sans:?}");

        // An OCTET STRING value and a directoryName: rcgen cannot write them, so no certificate.
        let octets = other_name_der(PRIVATE_OID_DER, &[0x04, 0x01, 0x07]);
        let e = certificate_params(&request(csr_with_raw_sans(&octets), false), None).unwrap_err();
        assert_eq!(reaction(&e), "permanent");
        assert!(
            e.to_string().contains("1.3.6.1.4.1.99999.1 (DER value of 3 bytes), whose value is not a UTF8String"),
            "{e}"
        );
        let dn = [0xa4, 0x0e, 0x30, 0x0c, 0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, b'A'];
        let e = certificate_params(&request(csr_with_raw_sans(&dn), false), None).unwrap_err();
        assert_eq!(reaction(&e), "permanent");
        let e = e.to_string();
        assert!(
            e.contains("directoryName subjectAltName \"CN=A\", which this issuer cannot put in a certificate"),
            "{e}"
        );
    }

    #[test]
    fn ca_requests_get_path_len() {
        let req = request(make_csr(&rcgen::PKCS_ED25519, |_| {}), true);
        let params = certificate_params(&req, Some(0)).unwrap();
        assert_eq!(params.is_ca, IsCa::Ca(BasicConstraints::Constrained(0)));
    }
}
