//! The CA hierarchy of the adapters' CA simulators (rcgen): one root, named issuing CAs below
//! it, the simulator's HTTPS server certificate and mTLS client certificates. Leaves are built
//! from the CSR with the framework's template helper, so subject and SANs are copied the way a CA
//! copies them.
//!
//! Unlike [`TestCa`](super::TestCa), whose CAs get random names and which signs with the CSR's
//! usages for a fixed time, a simulated CA has the name and DN its simulator announces
//! (`CN=<name>,O=certbridge sim`), and the CA (not the CSR) decides usages and validity.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::pki::{Csr, certificate_params, subject_public_key};
use crate::request::{ExtKeyUsage, KeyUsage, RequestKind, RequestObject, SignRequest};

/// One simulated CA: its name, DN and chain (itself first, root last).
pub struct SimCa {
    /// CA name.
    pub name: String,
    /// Subject DN as a string (`CN=<name>,O=certbridge sim`, EJBCA's string form).
    pub subject_dn: String,
    /// DER chain: this CA first, root last.
    pub chain_der: Vec<Vec<u8>>,
    issuer: Issuer<'static, KeyPair>,
}

/// Why [`SimCa::sign`] failed; each simulator words it the way the CA it imitates does.
#[derive(Debug)]
pub enum SimSignError {
    /// The CSR does not parse or verify.
    InvalidCsr(String),
    /// The certificate template cannot be built from the request.
    Template(String),
    /// rcgen could not sign.
    Signing(String),
}

/// The root plus its issuing CAs.
pub struct SimPki {
    /// The root certificate (PEM).
    pub root_pem: String,
    root: Issuer<'static, KeyPair>,
    root_der: Vec<u8>,
    /// Issuing CAs by name.
    pub cas: Vec<SimCa>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name.push(DnType::OrganizationName, "certbridge sim");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    p
}

impl SimPki {
    /// A fresh root and one issuing CA per name in `ca_names`.
    pub fn generate(ca_names: &[&str]) -> Result<SimPki, rcgen::Error> {
        let root_key = KeyPair::generate()?;
        let root_params = ca_params("certbridge Sim Root CA");
        let root_cert = root_params.self_signed(&root_key)?;
        let root_der = root_cert.der().to_vec();
        let root_pem = root_cert.pem();
        let root = Issuer::new(root_params, root_key);
        let mut cas = vec![];
        for name in ca_names {
            let key = KeyPair::generate()?;
            let params = ca_params(name);
            let cert = params.signed_by(&key, &root)?;
            cas.push(SimCa {
                name: (*name).to_owned(),
                subject_dn: format!("CN={name},O=certbridge sim"),
                chain_der: vec![cert.der().to_vec(), root_der.clone()],
                issuer: Issuer::new(params, key),
            });
        }
        Ok(SimPki { root_pem, root, root_der, cas })
    }

    /// The root as DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// A TLS server certificate for 127.0.0.1 / localhost with common name `cn`, signed by the
    /// root: (cert DER, key DER).
    pub fn server_cert(&self, cn: &str) -> Result<(Vec<u8>, Vec<u8>), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.root)?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    }

    /// An mTLS client certificate signed by the root: (cert PEM, key PEM).
    pub fn client_cert(&self, cn: &str) -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.root)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The CA named `name`.
    pub fn ca(&self, name: &str) -> Option<&SimCa> {
        self.cas.iter().find(|c| c.name == name)
    }
}

/// A client certificate from an unrelated, self-signed CA (no simulator knows it).
pub fn foreign_client_cert() -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "intruder");
    let cert = p.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl SimCa {
    /// Signs `csr_pem` as a server/client end-entity certificate valid for `validity`.
    pub fn sign(&self, csr_pem: &str, validity: Duration) -> Result<Vec<u8>, SimSignError> {
        // Not `SignRequest::from_csr_pem`: like a CA's profile or template, the CA decides the
        // usages, whatever the CSR asks for.
        let csr = Csr::from_pem(csr_pem).map_err(|e| SimSignError::InvalidCsr(e.to_string()))?;
        let req = SignRequest {
            csr_pem: csr_pem.to_owned(),
            csr,
            duration: validity,
            is_ca: false,
            key_usages: vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment],
            ext_key_usages: vec![ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth],
            requester: Default::default(),
            object: RequestObject {
                kind: RequestKind::CommandLine,
                name: String::new(),
                namespace: None,
                uid: String::new(),
                annotations: Default::default(),
            },
        };
        let params = certificate_params(&req, None).map_err(|e| SimSignError::Template(e.to_string()))?;
        let spki = subject_public_key(&req).map_err(|e| SimSignError::Template(e.to_string()))?;
        let cert = params.signed_by(&spki, &self.issuer).map_err(|e| SimSignError::Signing(e.to_string()))?;
        Ok(cert.der().to_vec())
    }
}
