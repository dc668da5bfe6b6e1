//! Opt-in HTTPS for the API server: a throwaway CA plus a serving certificate made at
//! start, and an axum [`Listener`] that hands out rustls streams.
//!
//! Handshakes run in their own tasks, off the accept path, so one client that connects and
//! never finishes its handshake cannot stall everyone else; failed handshakes are logged and
//! dropped (a client that does not trust the CA, or speaks plain HTTP, is refused, never
//! served in clear).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::Listener;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The CA clients must trust, and the server configuration built on it.
pub(crate) struct TlsMaterial {
    /// The CA certificate, PEM (what kubeconfigs carry as `certificate-authority-data`).
    pub ca_pem: String,
    /// The CA certificate, DER (what kube-rs takes as a root).
    pub ca_der: Vec<u8>,
    server_config: Arc<rustls::ServerConfig>,
}

impl TlsMaterial {
    /// A fresh CA and a serving certificate for `localhost`, `127.0.0.1`, `::1` and `bound`
    /// (when it is a concrete address). Keys are ECDSA P-256 and live only in memory.
    pub fn generate(bound: IpAddr) -> anyhow::Result<TlsMaterial> {
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca = CertificateParams::default();
        // A unique name, so a client trusting another kube-sim's CA fails with UnknownIssuer
        // rather than a confusing BadSignature from a same-named issuer.
        ca.distinguished_name.push(DnType::CommonName, format!("kube-sim throwaway CA {:016x}", rand::random::<u64>()));
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).context("self-signing the CA")?;
        let issuer = Issuer::new(ca, ca_key);

        let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
        if !bound.is_unspecified() && !ips.contains(&bound) {
            ips.push(bound);
        }
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name.push(DnType::CommonName, "kube-sim");
        leaf.subject_alt_names = std::iter::once(SanType::DnsName("localhost".try_into()?))
            .chain(ips.into_iter().map(SanType::IpAddress))
            .collect();
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        let leaf_key = KeyPair::generate().context("generating the serving key")?;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).context("signing the serving certificate")?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            // No client-certificate authentication: kube-sim performs no authentication at all.
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf_cert.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .context("TLS server configuration")?;
        // axum serves HTTP/1.1 only here (its `http2` feature is off), so h2 must not be offered.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsMaterial {
            ca_pem: ca_cert.pem(),
            ca_der: CertificateDer::clone(ca_cert.der()).to_vec(),
            server_config: Arc::new(config),
        })
    }

    /// The server configuration (for servers other than kube-sim's, e.g. the fault proxy).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config.clone()
    }

    /// Wraps `tcp`; accepting stops when `shutdown` is cancelled.
    pub fn listener(&self, tcp: TcpListener, shutdown: CancellationToken) -> anyhow::Result<TlsListener> {
        let addr = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(self.server_config.clone());
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tcp.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            // Same policy as axum's TcpListener: transient (e.g. EMFILE), back off.
                            tracing::debug!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, addr })
    }
}

/// Completed TLS connections, in the shape `axum::serve` takes.
pub(crate) struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop ended (shutdown): nothing more will arrive; axum's graceful
            // shutdown is what ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
