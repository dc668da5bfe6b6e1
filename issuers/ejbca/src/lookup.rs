//! Which certificate found at EJBCA is the one an earlier enrollment of *this* request produced.
//!
//! A search by end entity and CA can return certificates of earlier requests: with key reuse
//! (cert-manager's `rotationPolicy: Never`) an earlier certificate carries the same public key,
//! possibly with other names. A found certificate is this request's only when it has
//!
//! * the CSR's public key;
//! * every subject attribute of the CSR (an end-entity profile may add default attributes, such
//!   as `O` or `C`, so extra attributes in the certificate are accepted);
//! * exactly the CSR's subject alternative names (DNS names case-insensitively, IP addresses,
//!   URIs, e-mail addresses, and the types of other names);
//! * a notBefore no earlier than the enrollment marker minus [`NOT_BEFORE_ALLOWANCE`].
//!
//! When several match, the newest (latest notBefore) wins. An end-entity profile that rewrites
//! the names makes the lookup find nothing: a lost answer then leads to a second enrollment
//! rather than to a certificate with other names.

use std::collections::BTreeSet;
use std::time::Duration;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use certbridge::Csr;

/// How far before the enrollment marker a certificate's notBefore may lie: EJBCA backdates
/// notBefore by its validity offset (`certificate.validityoffset` in cesecore.properties,
/// default −10 min, unless the certificate profile sets its own), plus 2 minutes of clock skew
/// between the controller and EJBCA. The names and the key are what tell certificates apart; this
/// bound only keeps out identical certificates issued well before the request started.
pub const NOT_BEFORE_ALLOWANCE: Duration = Duration::from_secs(12 * 60);

/// Why a certificate is not this request's, or `None` when it is.
pub fn mismatch(cert: &X509Certificate<'_>, csr: &Csr, not_before_min: jiff::Timestamp) -> Option<&'static str> {
    if cert.public_key().raw != csr.public_key_der.as_slice() {
        return Some("another public key");
    }
    if cert.validity().not_before.timestamp() < not_before_min.as_second() {
        return Some("issued before the enrollment started");
    }
    let Ok((_, wanted)) = X509Name::from_der(&csr.subject_der) else {
        return Some("the CSR's subject does not parse");
    };
    let have = attributes(cert.subject());
    if !attributes(&wanted).is_subset(&have) {
        return Some("another subject");
    }
    if sans_of_certificate(cert) != Some(sans_of_csr(csr)) {
        return Some("other subject alternative names");
    }
    None
}

/// (OID, value) of every attribute of a name; values that are not strings by their raw bytes.
fn attributes(name: &X509Name<'_>) -> BTreeSet<(String, String)> {
    name.iter_attributes()
        .map(|a| {
            let value = a.as_str().map(str::to_owned).unwrap_or_else(|_| format!("{:02x?}", a.attr_value().data));
            (a.attr_type().to_id_string(), value)
        })
        .collect()
}

fn sans_of_csr(csr: &Csr) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    set.extend(csr.dns_names.iter().map(|d| format!("dns:{}", d.to_ascii_lowercase())));
    set.extend(csr.ip_addresses.iter().map(|ip| format!("ip:{ip}")));
    set.extend(csr.uris.iter().map(|u| format!("uri:{u}")));
    set.extend(csr.emails.iter().map(|e| format!("email:{e}")));
    set.extend(csr.other_names.iter().map(|o| format!("other:{}", o.type_id())));
    set
}

/// `None` when the extension is there but does not parse (never a match).
fn sans_of_certificate(cert: &X509Certificate<'_>) -> Option<BTreeSet<String>> {
    let mut set = BTreeSet::new();
    let Some(ext) = cert.subject_alternative_name().ok()? else { return Some(set) };
    for name in &ext.value.general_names {
        set.insert(match name {
            GeneralName::DNSName(d) => format!("dns:{}", d.to_ascii_lowercase()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => format!("ip:{}", std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?)),
                16 => format!("ip:{}", std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?)),
                _ => return None,
            },
            GeneralName::URI(u) => format!("uri:{u}"),
            GeneralName::RFC822Name(e) => format!("email:{e}"),
            GeneralName::OtherName(oid, _) => format!("other:{}", oid.to_id_string()),
            other => format!("{other:?}"),
        });
    }
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSR for `key` and a certificate for `cert_key`, with their own names, issued now.
    fn pair(
        key: &rcgen::KeyPair,
        csr_names: (&str, &[&str]),
        cert_key: &rcgen::KeyPair,
        cert_names: (&str, &[&str]),
        extra_o: bool,
    ) -> (Csr, Vec<u8>) {
        let params = |(cn, dns): (&str, &[&str])| {
            let mut p = rcgen::CertificateParams::new(dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>()).unwrap();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            p
        };
        let csr = Csr::from_pem(&params(csr_names).serialize_request(key).unwrap().pem().unwrap()).unwrap();
        let mut cp = params(cert_names);
        if extra_o {
            cp.distinguished_name.push(rcgen::DnType::OrganizationName, "Added by the EE profile");
        }
        let issuer = rcgen::Issuer::new(rcgen::CertificateParams::default(), rcgen::KeyPair::generate().unwrap());
        let cert = cp.signed_by(cert_key, &issuer).unwrap();
        (csr, cert.der().to_vec())
    }

    /// `mismatch` with the marker bound `offset` seconds after the certificate's notBefore.
    fn check(csr: &Csr, der: &[u8], offset: i64) -> Option<&'static str> {
        let (_, x) = x509_parser::parse_x509_certificate(der).unwrap();
        let since = jiff::Timestamp::from_second(x.validity().not_before.timestamp() + offset).unwrap();
        mismatch(&x, csr, since)
    }

    #[test]
    fn only_the_same_key_subject_names_and_time_match() {
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let since = -1;
        let names: (&str, &[&str]) = ("app.example.com", &["app.example.com", "b.example.com"]);
        let (csr, der) = pair(&key, names, &key, names, false);
        assert_eq!(check(&csr, &der, since), None);
        // DNS names compare case-insensitively; profile-added subject attributes are accepted.
        let (csr, der) = pair(&key, names, &key, ("app.example.com", &["B.example.com", "app.example.com"]), true);
        assert_eq!(check(&csr, &der, since), None);
        let (csr, der) = pair(&key, names, &other, names, false);
        assert_eq!(check(&csr, &der, since), Some("another public key"));
        let (csr, der) = pair(&key, names, &key, ("app.example.com", &["app.example.com"]), false);
        assert_eq!(check(&csr, &der, since), Some("other subject alternative names"));
        let (csr, der) = pair(&key, names, &key, ("old.example.com", &["app.example.com", "b.example.com"]), false);
        assert_eq!(check(&csr, &der, since), Some("another subject"));
        // A certificate dated before the bound (marker minus the allowance) is an older one.
        let (csr, der) = pair(&key, names, &key, names, false);
        assert_eq!(check(&csr, &der, 0), None, "at the bound");
        assert_eq!(check(&csr, &der, 1), Some("issued before the enrollment started"));
    }
}
