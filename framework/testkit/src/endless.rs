//! A misbehaving server for resource-exhaustion tests: it answers every request with `200 OK`
//! and a 1 GiB chunked body, 64 KiB at a time, for as long as the client reads (plain HTTP, or
//! HTTPS with a throwaway self-signed certificate the client can be told to trust). With
//! [`rss_kib`] a test shows that a client caps what it reads: the request fails, the process's
//! resident memory stays flat, and the server stops long before 1 GiB ([`EndlessServer::sent_mib`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The body size the server offers: 1 GiB.
pub const BODY_MIB: usize = 1024;

/// A server streaming [`BODY_MIB`] MiB to every request; stops with the test's runtime.
pub struct EndlessServer {
    addr: SocketAddr,
    sent_mib: Arc<AtomicUsize>,
    cert_pem: Option<String>,
}

impl EndlessServer {
    /// Plain HTTP on 127.0.0.1.
    pub async fn http() -> anyhow::Result<EndlessServer> {
        Self::start(None).await
    }

    /// HTTPS on 127.0.0.1 with a self-signed certificate for `127.0.0.1` and `localhost`
    /// ([`EndlessServer::cert_pem`]).
    pub async fn https() -> anyhow::Result<EndlessServer> {
        let key = rcgen::KeyPair::generate()?;
        let cert =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?.self_signed(&key)?;
        Self::start(Some((cert.pem(), key.serialize_pem()))).await
    }

    async fn start(tls: Option<(String, String)>) -> anyhow::Result<EndlessServer> {
        use rustls::pki_types::pem::PemObject as _;
        let acceptor = match &tls {
            Some((cert, key)) => {
                let chain = vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes())?];
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())?;
                let config =
                    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                        .with_safe_default_protocol_versions()?
                        .with_no_client_auth()
                        .with_single_cert(chain, key)?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sent_mib = Arc::new(AtomicUsize::new(0));
        let sent = sent_mib.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sent = sent.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(stream).await {
                                answer(tls, sent).await;
                            }
                        }
                        None => answer(stream, sent).await,
                    }
                });
            }
        });
        Ok(EndlessServer { addr, sent_mib, cert_pem: tls.map(|(c, _)| c) })
    }

    /// `http://127.0.0.1:<port>` or `https://…`.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.cert_pem.is_some() { "https" } else { "http" }, self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTPS certificate (PEM), for the client's trust.
    pub fn cert_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// Whole MiB written so far, over all connections.
    pub fn sent_mib(&self) -> usize {
        self.sent_mib.load(Ordering::SeqCst)
    }
}

/// Reads the request head, then streams the body until it is all sent or the client leaves.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, sent: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 1 << 20 {
            return;
        }
    }
    let header = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    if stream.write_all(header.as_bytes()).await.is_err() {
        return;
    }
    let chunk = [b' '; 64 * 1024];
    let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk[..], b"\r\n"].concat();
    for i in 0..BODY_MIB * 16 {
        if stream.write_all(&frame).await.is_err() {
            return;
        }
        if i % 16 == 15 {
            sent.fetch_add(1, Ordering::SeqCst);
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let _ = stream.flush().await;
}

/// Resident set size of this process, in KiB (Linux `/proc/self/status`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .expect("VmRSS in /proc/self/status (Linux)")
}
