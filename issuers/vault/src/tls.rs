//! The TLS settings of the connection to Vault: which CAs to trust, which client certificate to
//! present and which name to verify, turned into a rustls configuration on the ring provider.
//!
//! reqwest's own builder cannot verify against a name other than the URL's host, which
//! cert-manager's `serverName` needs, so the rustls config is always built here and handed to
//! reqwest preconfigured: one code path whatever the spec sets.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// What the connection to Vault needs, read from the spec and its Secrets.
#[derive(Default)]
pub struct TlsMaterial {
    /// PEM CA bundle replacing the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate (chain) and PEM private key for mTLS.
    pub client: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    /// Name to verify the server's certificate against instead of the URL host.
    pub server_name: Option<String>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field("client", &self.client.as_ref().map(|_| "[redacted]"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsMaterial {
    /// A digest of everything here, to notice when a referenced Secret changed.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut part = |tag: &[u8], v: Option<&[u8]>| {
            h.update(tag);
            if let Some(v) = v {
                h.update((v.len() as u64).to_be_bytes());
                h.update(v);
            }
        };
        part(b"ca", self.ca_pem.as_deref());
        part(b"crt", self.client.as_ref().map(|(c, _)| c.as_slice()));
        part(b"key", self.client.as_ref().map(|(_, k)| k.as_slice()));
        part(b"sni", self.server_name.as_deref().map(str::as_bytes));
        h.finalize().into()
    }

    /// The rustls client configuration. Errors name what is wrong, never a key's content.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match &self.ca_pem {
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| format!("the CA bundle is not valid PEM: {e}"))?;
                    roots.add(cert).map_err(|e| format!("the CA bundle holds an unusable certificate: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("the CA bundle holds no certificate".into());
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("the CA bundle cannot be used: {e}"))?
            }
            None => Arc::new(
                rustls_platform_verifier::Verifier::new(provider.clone())
                    .map_err(|e| format!("the system CA roots cannot be loaded: {e}"))?,
            ),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match &self.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|_| format!("spec.serverName {name:?} is not a DNS name or IP address"))?;
                Arc::new(FixedNameVerifier { inner: verifier, name })
            }
            None => verifier,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client {
            Some((cert_pem, key_pem)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("the client certificate is not valid PEM: {e}"))?;
                if chain.is_empty() {
                    return Err("the client certificate Secret holds no PEM CERTIFICATE".into());
                }
                let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
                    "the client key Secret holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned()
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("the client certificate and key do not fit together: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Verifies the chain as `inner` does, but against a configured name (cert-manager's `serverName`).
#[derive(Debug)]
struct FixedNameVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
