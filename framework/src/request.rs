//! The normalized request a [`Signer`](crate::Signer) receives, whichever API it came from.
//!
//! The controllers build a [`SignRequest`] from a cert-manager `CertificateRequest` or a Kubernetes
//! `CertificateSigningRequest` with cert-manager's defaults already applied (90-day duration, isCA
//! adds `cert sign`, no usages means digital signature + key encipherment), and with the CSR parsed
//! (within the controller's [`CsrLimits`](crate::CsrLimits)) and its signature verified.
//!
//! Every subjectAltName the CSR asks for is in [`SignRequest::csr`], including otherNames (a UPN
//! typed, others as OID + DER value) and directoryNames: an adapter that builds certificates
//! decides which it issues; one that forwards the CSR to a CA forwards it unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::pki::Csr;

/// cert-manager's default certificate duration: 90 days.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(90 * 24 * 3600);

/// A request to sign, as an adapter sees it.
#[derive(Debug, Clone)]
pub struct SignRequest {
    /// The CSR as PEM, exactly as the user sent it (for CAs that take the raw CSR).
    pub csr_pem: String,
    /// The parsed CSR; its signature has been verified. Its names (DNS, IP, URI, email,
    /// otherName, directoryName) are what the requester asked for, unchecked by any policy.
    pub csr: Csr,
    /// Requested validity.
    pub duration: Duration,
    /// Whether a CA certificate is requested.
    pub is_ca: bool,
    /// Key usages (defaults applied, `cert sign` added for CAs).
    pub key_usages: Vec<KeyUsage>,
    /// Extended key usages.
    pub ext_key_usages: Vec<ExtKeyUsage>,
    /// Who asked, as recorded by the API server.
    pub requester: Requester,
    /// Which Kubernetes object this came from.
    pub object: RequestObject,
}

impl SignRequest {
    /// A request for `csr_pem` outside Kubernetes (command line, tests, benchmarks): the CSR is
    /// parsed within the default [`CsrLimits`](crate::CsrLimits) and verified, cert-manager's
    /// usage defaults applied and checked against the CSR.
    pub fn from_csr_pem<S: AsRef<str>>(
        csr_pem: &str,
        duration: Duration,
        is_ca: bool,
        usages: &[S],
    ) -> Result<SignRequest, String> {
        let csr = Csr::from_pem(csr_pem)?;
        let (key_usages, ext_key_usages) = resolve_usages(usages, is_ca)?;
        csr.check_consistent(is_ca, &key_usages, &ext_key_usages)?;
        Ok(SignRequest {
            csr_pem: csr_pem.to_owned(),
            csr,
            duration,
            is_ca,
            key_usages,
            ext_key_usages,
            requester: Requester::default(),
            object: RequestObject {
                kind: RequestKind::CommandLine,
                name: "command-line".into(),
                namespace: None,
                uid: String::new(),
                annotations: BTreeMap::new(),
            },
        })
    }
}

/// The identity that created the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    /// `spec.username`.
    pub username: String,
    /// `spec.groups`.
    pub groups: Vec<String>,
    /// `spec.uid`.
    pub uid: String,
    /// `spec.extra`.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Which API a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// cert-manager.io/v1 CertificateRequest.
    CertificateRequest,
    /// certificates.k8s.io/v1 CertificateSigningRequest.
    CertificateSigningRequest,
    /// A CSR signed from the command line (`sign -f`).
    CommandLine,
}

/// Identity of the request object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestObject {
    /// Which API.
    pub kind: RequestKind,
    /// Object name.
    pub name: String,
    /// Namespace (`None` for Kubernetes CSRs).
    pub namespace: Option<String>,
    /// Object UID.
    pub uid: String,
    /// Object annotations (per-request overrides live here, under the adapter's API group).
    pub annotations: BTreeMap<String, String>,
}

impl RequestObject {
    /// The annotation `<group>/<key>`, e.g. a per-request override.
    pub fn annotation(&self, group: &str, key: &str) -> Option<&str> {
        self.annotations.get(&format!("{group}/{key}")).map(String::as_str)
    }
}

/// X.509 key usages (RFC 5280 §4.2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyUsage {
    /// digitalSignature (cert-manager: `digital signature`, `signing`).
    DigitalSignature,
    /// contentCommitment / nonRepudiation.
    ContentCommitment,
    /// keyEncipherment.
    KeyEncipherment,
    /// dataEncipherment.
    DataEncipherment,
    /// keyAgreement.
    KeyAgreement,
    /// keyCertSign.
    CertSign,
    /// cRLSign.
    CrlSign,
    /// encipherOnly.
    EncipherOnly,
    /// decipherOnly.
    DecipherOnly,
}

/// Extended key usages cert-manager knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExtKeyUsage {
    /// anyExtendedKeyUsage 2.5.29.37.0.
    Any,
    /// id-kp-serverAuth.
    ServerAuth,
    /// id-kp-clientAuth.
    ClientAuth,
    /// id-kp-codeSigning.
    CodeSigning,
    /// id-kp-emailProtection (`email protection`, `s/mime`).
    EmailProtection,
    /// id-kp-ipsecEndSystem.
    IpsecEndSystem,
    /// id-kp-ipsecTunnel.
    IpsecTunnel,
    /// id-kp-ipsecUser.
    IpsecUser,
    /// id-kp-timeStamping.
    TimeStamping,
    /// id-kp-OCSPSigning.
    OcspSigning,
    /// Microsoft Server Gated Crypto.
    MicrosoftSgc,
    /// Netscape Server Gated Crypto.
    NetscapeSgc,
}

impl ExtKeyUsage {
    /// The OID, as arcs.
    pub fn oid(&self) -> &'static [u64] {
        match self {
            ExtKeyUsage::Any => &[2, 5, 29, 37, 0],
            ExtKeyUsage::ServerAuth => &[1, 3, 6, 1, 5, 5, 7, 3, 1],
            ExtKeyUsage::ClientAuth => &[1, 3, 6, 1, 5, 5, 7, 3, 2],
            ExtKeyUsage::CodeSigning => &[1, 3, 6, 1, 5, 5, 7, 3, 3],
            ExtKeyUsage::EmailProtection => &[1, 3, 6, 1, 5, 5, 7, 3, 4],
            ExtKeyUsage::IpsecEndSystem => &[1, 3, 6, 1, 5, 5, 7, 3, 5],
            ExtKeyUsage::IpsecTunnel => &[1, 3, 6, 1, 5, 5, 7, 3, 6],
            ExtKeyUsage::IpsecUser => &[1, 3, 6, 1, 5, 5, 7, 3, 7],
            ExtKeyUsage::TimeStamping => &[1, 3, 6, 1, 5, 5, 7, 3, 8],
            ExtKeyUsage::OcspSigning => &[1, 3, 6, 1, 5, 5, 7, 3, 9],
            ExtKeyUsage::MicrosoftSgc => &[1, 3, 6, 1, 4, 1, 311, 10, 3, 3],
            ExtKeyUsage::NetscapeSgc => &[2, 16, 840, 1, 113730, 4, 1],
        }
    }

    /// The EKU for an OID, if cert-manager knows it.
    pub fn from_oid(arcs: &[u64]) -> Option<Self> {
        ALL_EKUS.iter().copied().find(|e| e.oid() == arcs)
    }
}

const ALL_EKUS: [ExtKeyUsage; 12] = [
    ExtKeyUsage::Any,
    ExtKeyUsage::ServerAuth,
    ExtKeyUsage::ClientAuth,
    ExtKeyUsage::CodeSigning,
    ExtKeyUsage::EmailProtection,
    ExtKeyUsage::IpsecEndSystem,
    ExtKeyUsage::IpsecTunnel,
    ExtKeyUsage::IpsecUser,
    ExtKeyUsage::TimeStamping,
    ExtKeyUsage::OcspSigning,
    ExtKeyUsage::MicrosoftSgc,
    ExtKeyUsage::NetscapeSgc,
];

/// One usage string as cert-manager and Kubernetes spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A key usage.
    Key(KeyUsage),
    /// An extended key usage.
    Ext(ExtKeyUsage),
}

/// Parses one usage string (`"digital signature"`, `"server auth"`, …). The error names the value.
pub fn parse_usage(s: &str) -> Result<Usage, String> {
    use ExtKeyUsage as E;
    use KeyUsage as K;
    Ok(match s {
        "signing" | "digital signature" => Usage::Key(K::DigitalSignature),
        "content commitment" => Usage::Key(K::ContentCommitment),
        "key encipherment" => Usage::Key(K::KeyEncipherment),
        "key agreement" => Usage::Key(K::KeyAgreement),
        "data encipherment" => Usage::Key(K::DataEncipherment),
        "cert sign" => Usage::Key(K::CertSign),
        "crl sign" => Usage::Key(K::CrlSign),
        "encipher only" => Usage::Key(K::EncipherOnly),
        "decipher only" => Usage::Key(K::DecipherOnly),
        "any" => Usage::Ext(E::Any),
        "server auth" => Usage::Ext(E::ServerAuth),
        "client auth" => Usage::Ext(E::ClientAuth),
        "code signing" => Usage::Ext(E::CodeSigning),
        "email protection" | "s/mime" => Usage::Ext(E::EmailProtection),
        "ipsec end system" => Usage::Ext(E::IpsecEndSystem),
        "ipsec tunnel" => Usage::Ext(E::IpsecTunnel),
        "ipsec user" => Usage::Ext(E::IpsecUser),
        "timestamping" => Usage::Ext(E::TimeStamping),
        "ocsp signing" => Usage::Ext(E::OcspSigning),
        "microsoft sgc" => Usage::Ext(E::MicrosoftSgc),
        "netscape sgc" => Usage::Ext(E::NetscapeSgc),
        other => {
            return Err(format!(
                "unknown usage {other:?}: use one of cert-manager's usages such as \"digital signature\", \"key encipherment\", \"server auth\", \"client auth\""
            ));
        }
    })
}

/// Applies cert-manager's rules to a usage list: no usages means digital signature + key
/// encipherment; `is_ca` adds cert sign. Returns sorted, de-duplicated key and extended usages.
pub fn resolve_usages<S: AsRef<str>>(usages: &[S], is_ca: bool) -> Result<(Vec<KeyUsage>, Vec<ExtKeyUsage>), String> {
    let mut ku = Vec::new();
    let mut eku = Vec::new();
    if usages.is_empty() {
        ku.extend([KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment]);
    }
    for u in usages {
        match parse_usage(u.as_ref())? {
            Usage::Key(k) => ku.push(k),
            Usage::Ext(e) => eku.push(e),
        }
    }
    if is_ca {
        ku.push(KeyUsage::CertSign);
    }
    ku.sort();
    ku.dedup();
    eku.sort();
    eku.dedup();
    Ok((ku, eku))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_usages_default_like_cert_manager() {
        let (ku, eku) = resolve_usages::<&str>(&[], false).unwrap();
        assert_eq!(ku, vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment]);
        assert!(eku.is_empty());
    }

    #[test]
    fn is_ca_adds_cert_sign_and_usages_split() {
        let (ku, eku) = resolve_usages(&["signing", "server auth", "s/mime", "digital signature"], true).unwrap();
        assert_eq!(ku, vec![KeyUsage::DigitalSignature, KeyUsage::CertSign]);
        assert_eq!(eku, vec![ExtKeyUsage::ServerAuth, ExtKeyUsage::EmailProtection]);
    }

    #[test]
    fn unknown_usage_is_named() {
        let err = resolve_usages(&["server auth", "teleport"], false).unwrap_err();
        assert!(err.contains("\"teleport\""), "{err}");
    }

    #[test]
    fn eku_oids_round_trip() {
        for e in ALL_EKUS {
            assert_eq!(ExtKeyUsage::from_oid(e.oid()), Some(e));
        }
    }
}
