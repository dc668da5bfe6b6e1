//! The simulator's real CA hierarchy (rcgen): one root, issuing CAs below it and the HTTPS server
//! certificate. Leaves are built from the CSR with certbridge's template helper, so subject and
//! SANs are copied the way a CA copies them.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use certbridge::{ExtKeyUsage, KeyUsage, SignRequest};

/// One CA: its name, DN and chain (itself first, root last).
pub struct SimCa {
    /// CA name.
    pub name: String,
    /// Subject DN as a string.
    pub subject_dn: String,
    /// DER chain: this CA first, root last.
    pub chain_der: Vec<Vec<u8>>,
    issuer: Issuer<'static, KeyPair>,
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

    /// A TLS server certificate for 127.0.0.1 / localhost, signed by the root: (cert DER, key DER).
    pub fn server_cert(&self) -> Result<(Vec<u8>, Vec<u8>), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        p.distinguished_name.push(DnType::CommonName, "venafi-sim");
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.root)?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    }

    /// The CA named `name`.
    pub fn ca(&self, name: &str) -> Option<&SimCa> {
        self.cas.iter().find(|c| c.name == name)
    }
}

impl SimCa {
    /// Signs `csr_pem` as a server/client end-entity certificate valid for `validity`.
    pub fn sign(&self, csr_pem: &str, validity: Duration) -> Result<Vec<u8>, String> {
        // Not `SignRequest::from_csr_pem`: like a CA template, the issuer decides the
        // usages, whatever the CSR asks for.
        let csr = certbridge::Csr::from_pem(csr_pem).map_err(|e| format!("invalid CSR: {e}"))?;
        let req = SignRequest {
            csr_pem: csr_pem.to_owned(),
            csr,
            duration: validity,
            is_ca: false,
            key_usages: vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment],
            ext_key_usages: vec![ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth],
            requester: Default::default(),
            object: certbridge::RequestObject {
                kind: certbridge::RequestKind::CommandLine,
                name: String::new(),
                namespace: None,
                uid: String::new(),
                annotations: Default::default(),
            },
        };
        let params = certbridge::pki::certificate_params(&req, None).map_err(|e| e.to_string())?;
        let spki = certbridge::pki::subject_public_key(&req).map_err(|e| e.to_string())?;
        let cert = params.signed_by(&spki, &self.issuer).map_err(|e| format!("signing failed: {e}"))?;
        Ok(cert.der().to_vec())
    }
}
