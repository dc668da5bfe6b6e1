//! A throwaway CA hierarchy for tests: a root, intermediates below it, and leaves signed from a
//! CSR or a public key, all as PEM. Leaves from CSRs go through the framework's own
//! [`certificate_params`](crate::pki::certificate_params), so they look like what a local-signing
//! adapter issues.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData};
use zeroize::Zeroizing;

use crate::pki::{KeyKind, certificate_params, random_serial, subject_public_key};
use crate::request::SignRequest;

/// How long a test CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(365 * 86400);
/// How long what a test CA signs is valid.
const SIGNED_VALIDITY: Duration = Duration::from_secs(30 * 86400);

/// A fresh key of `kind`. RSA keys come from `openssl` (ring cannot generate them).
pub fn generate_key(kind: &KeyKind) -> anyhow::Result<KeyPair> {
    Ok(match kind {
        KeyKind::EcP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        KeyKind::EcP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
        KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519)?,
        KeyKind::Rsa { bits } => {
            let out = std::process::Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", &format!("rsa_keygen_bits:{bits}")])
                .output()
                .map_err(|e| anyhow::anyhow!("cannot run openssl (install it with scripts/test.sh): {e}"))?;
            anyhow::ensure!(out.status.success(), "openssl genpkey failed: {}", String::from_utf8_lossy(&out.stderr));
            let pem = Zeroizing::new(String::from_utf8(out.stdout)?);
            KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)?
        }
        KeyKind::Other(what) => anyhow::bail!("cannot generate a key of kind {what}"),
    })
}

/// A CA for tests: a self-signed root ([`TestCa::new`]) or an intermediate below another test CA
/// ([`TestCa::intermediate`]). Each gets a unique common name, so certificates of two test CAs
/// never chain onto each other by name.
pub struct TestCa {
    common_name: String,
    cert_pem: String,
    key_pem: Zeroizing<String>,
    /// The certificates above this CA, nearest first, root last (empty for a root).
    parents_pem: Vec<String>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("common_name", &self.common_name).finish_non_exhaustive()
    }
}

impl TestCa {
    /// A self-signed root CA with a fresh key of `kind`.
    pub fn new(kind: &KeyKind) -> anyhow::Result<TestCa> {
        let key = generate_key(kind)?;
        let (params, common_name) = ca_params("certbridge test root CA")?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa::from_parts(params, common_name, key, cert.pem(), vec![]))
    }

    /// An intermediate CA with a fresh key of `kind`, signed by this CA.
    pub fn intermediate(&self, kind: &KeyKind) -> anyhow::Result<TestCa> {
        let key = generate_key(kind)?;
        let (params, common_name) = ca_params("certbridge test intermediate CA")?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut parents = vec![self.cert_pem.clone()];
        parents.extend(self.parents_pem.iter().cloned());
        Ok(TestCa::from_parts(params, common_name, key, cert.pem(), parents))
    }

    fn from_parts(
        params: CertificateParams,
        common_name: String,
        key: KeyPair,
        cert_pem: String,
        parents_pem: Vec<String>,
    ) -> TestCa {
        let key_pem = Zeroizing::new(key.serialize_pem());
        TestCa { common_name, cert_pem, key_pem, parents_pem, issuer: Issuer::new(params, key) }
    }

    /// This CA's common name.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// This CA's certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// This CA's private key (PKCS#8 PEM).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The root above this CA (this CA itself if it is a root).
    pub fn root_pem(&self) -> &str {
        self.parents_pem.last().unwrap_or(&self.cert_pem)
    }

    /// This CA's certificate followed by every certificate above it up to the root: what a
    /// `kubernetes.io/tls` Secret of a CA holds in `tls.crt`.
    pub fn chain_pem(&self) -> String {
        std::iter::once(&self.cert_pem).chain(&self.parents_pem).map(String::as_str).collect()
    }

    /// The rcgen issuer, for certificates the other helpers do not make.
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Signs `csr_pem` (verified, with cert-manager's default usages) through the framework's
    /// certificate template: a leaf, or a CA certificate when `is_ca`. Returns the certificate PEM.
    pub fn sign_csr(&self, csr_pem: &str, is_ca: bool) -> anyhow::Result<String> {
        let req = SignRequest::from_csr_pem::<&str>(csr_pem, SIGNED_VALIDITY, is_ca, &[])
            .map_err(|e| anyhow::anyhow!("the CSR cannot be signed: {e}"))?;
        let params = certificate_params(&req, None)?;
        Ok(params.signed_by(&subject_public_key(&req)?, &self.issuer)?.pem())
    }

    /// A server and client auth leaf for `key` with `dns_names` as SANs (the first is also the
    /// CN). Returns the certificate PEM.
    pub fn sign_key(&self, key: &impl PublicKeyData, dns_names: &[&str]) -> anyhow::Result<String> {
        let mut params = CertificateParams::new(dns_names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
        if let Some(cn) = dns_names.first() {
            params.distinguished_name.push(DnType::CommonName, *cn);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        (params.not_before, params.not_after) = validity(SIGNED_VALIDITY)?;
        Ok(params.signed_by(key, &self.issuer)?.pem())
    }

    /// A leaf like [`TestCa::sign_key`] for a fresh key of `kind`: `(cert_pem, key_pem)`.
    pub fn leaf(&self, kind: &KeyKind, dns_names: &[&str]) -> anyhow::Result<(String, String)> {
        let key = generate_key(kind)?;
        Ok((self.sign_key(&key, dns_names)?, key.serialize_pem()))
    }

    /// A `kubernetes.io/tls` Secret with this CA: `tls.crt` is [`TestCa::chain_pem`], `tls.key`
    /// the key.
    pub fn tls_secret(&self, namespace: &str, name: &str) -> k8s_openapi::api::core::v1::Secret {
        let chain = self.chain_pem();
        super::secret(
            namespace,
            name,
            Some("kubernetes.io/tls"),
            &[("tls.crt", chain.as_bytes()), ("tls.key", self.key_pem.as_bytes())],
        )
    }
}

/// CA parameters with a unique common name `<what> <random hex>`, returned alongside.
fn ca_params(what: &str) -> anyhow::Result<(CertificateParams, String)> {
    let common_name = format!("{what} {:08x}", rand::random::<u32>());
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, common_name.clone());
    p.distinguished_name.push(DnType::OrganizationName, "certbridge tests");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(random_serial());
    (p.not_before, p.not_after) = validity(CA_VALIDITY)?;
    Ok((p, common_name))
}

/// From an hour ago (clock skew between the test and what verifies) to `length` from now.
fn validity(length: Duration) -> anyhow::Result<(time::OffsetDateTime, time::OffsetDateTime)> {
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0)?;
    Ok((now - time::Duration::HOUR, now + time::Duration::try_from(length)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Issued;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn parse(pem_text: &str) -> X509Certificate<'static> {
        let der = pem::parse(pem_text).unwrap().into_contents().leak();
        X509Certificate::from_der(der).unwrap().1
    }

    #[test]
    fn a_root_and_an_intermediate_chain_and_sign_leaves() {
        let root = TestCa::new(&KeyKind::Rsa { bits: 2048 }).unwrap();
        let inter = root.intermediate(&KeyKind::Ed25519).unwrap();
        assert_ne!(root.common_name(), inter.common_name());
        assert_eq!(inter.root_pem(), root.cert_pem());
        assert_eq!(inter.chain_pem(), format!("{}{}", inter.cert_pem(), root.cert_pem()));

        let (r, i) = (parse(root.cert_pem()), parse(inter.cert_pem()));
        assert!(r.is_ca() && i.is_ca());
        assert!(r.verify_signature(None).is_ok(), "the root is self-signed");
        assert!(i.verify_signature(Some(r.public_key())).is_ok(), "the root signed the intermediate");
        assert_eq!(i.issuer(), r.subject());

        let (leaf, key) = inter.leaf(&KeyKind::EcP384, &["a.example", "b.example"]).unwrap();
        let l = parse(&leaf);
        assert!(l.verify_signature(Some(i.public_key())).is_ok());
        assert!(!l.is_ca());
        assert_eq!(l.subject_alternative_name().unwrap().unwrap().value.general_names.len(), 2);
        assert_eq!(l.public_key().raw, KeyPair::from_pem(&key).unwrap().subject_public_key_info());

        // openssl agrees.
        let dir = tempfile::tempdir().unwrap();
        for (file, pem) in [("root.pem", root.cert_pem()), ("inter.pem", inter.cert_pem()), ("leaf.pem", &leaf)] {
            std::fs::write(dir.path().join(file), pem).unwrap();
        }
        let out = std::process::Command::new("openssl")
            .args(["verify", "-CAfile", "root.pem", "-untrusted", "inter.pem", "leaf.pem"])
            .current_dir(dir.path())
            .output()
            .expect("openssl is installed by scripts/test.sh");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

        // What an adapter returns for it orders into leaf + intermediate with the root as CA.
        let issued = Issued::from_pem_bundle(&format!("{}{leaf}", inter.chain_pem())).unwrap();
        assert_eq!(issued.chain_pem, format!("{leaf}{}", inter.cert_pem()));
        assert_eq!(issued.ca_pem.as_deref(), Some(root.cert_pem()));
    }

    #[test]
    fn csrs_are_signed_as_leaves_or_cas() {
        let root = TestCa::new(&KeyKind::EcP256).unwrap();
        let (csr, _) = super::super::generate_csr(&KeyKind::EcP256, &["w.example"]).unwrap();
        let leaf = parse(&root.sign_csr(&csr, false).unwrap());
        assert!(!leaf.is_ca());
        assert_eq!(leaf.public_key().raw, crate::Csr::from_pem(&csr).unwrap().public_key_der);
        assert!(leaf.verify_signature(Some(parse(root.cert_pem()).public_key())).is_ok());
        assert!(parse(&root.sign_csr(&csr, true).unwrap()).is_ca());
        assert!(root.sign_csr("not a CSR", false).unwrap_err().to_string().contains("cannot be signed"));
    }

    #[test]
    fn the_tls_secret_holds_the_chain_and_the_key() {
        let inter = TestCa::new(&KeyKind::EcP256).unwrap().intermediate(&KeyKind::EcP256).unwrap();
        let secret = inter.tls_secret("ns", "ca");
        let data = secret.data.unwrap();
        assert_eq!(data["tls.crt"].0, inter.chain_pem().into_bytes());
        assert_eq!(data["tls.key"].0, inter.key_pem().as_bytes());
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert!(!format!("{inter:?}").contains("PRIVATE"), "Debug shows no key");
    }
}
