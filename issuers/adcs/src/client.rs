//! certsrv's wire protocol over HTTP/1.1 + TLS, with connection-bound authentication.
//!
//! NTLM authenticates a *TCP connection*, not a request: the handshake and the requests after it
//! must share one keep-alive connection. So this client owns its connections (hyper's HTTP/1
//! connection API over tokio-rustls) instead of a pooled HTTP client that may pick any connection
//! for any request: an idle authenticated connection is reused, a new one runs the handshake once
//! (two round trips: Negotiate → challenge, Authenticate + the request itself). Owning the TLS
//! stream also gives the server certificate the channel binding (RFC 5929 `tls-server-end-point`)
//! is computed from, which EPA "Required" demands.
//!
//! Every call has a deadline (connect, TLS, handshake and body together) and every body a cap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use certbridge::http::error_chain;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use sha2::Digest;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::debug;
use zeroize::Zeroizing;

use crate::pages::{self, StatusPage, SubmitPage};

/// Cap of a page or certificate body.
pub const MAX_BODY: usize = 1024 * 1024;
/// Cap of a PKCS#7 chain body.
pub const MAX_CHAIN_BODY: usize = 4 * 1024 * 1024;
/// Idle authenticated connections kept per client.
const MAX_IDLE: usize = 16;
/// certsrv serves browsers: without a browser User-Agent some versions answer with other content
/// types (certsrv-py: "otherwise the Content-Type of the retrieved certificate will be wrong").
const USER_AGENT: &str = "Mozilla/5.0 (compatible; certbridge-adcs)";

/// Whether NTLM sends a channel binding (EPA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBinding {
    /// Send the `tls-server-end-point` binding when it can be computed (always over TLS).
    Auto,
    /// Refuse to authenticate when it cannot be computed.
    Required,
    /// Never send one (for servers that choke on it).
    Off,
}

/// How a client authenticates to certsrv.
pub enum Auth {
    /// NTLMv2 over one keep-alive connection.
    Ntlm {
        /// `user`, `DOMAIN\user` or `user@domain`.
        username: String,
        /// NetBIOS domain when the username does not carry one.
        domain: Option<String>,
        /// The password.
        password: Zeroizing<String>,
        /// EPA mode.
        channel_binding: ChannelBinding,
    },
    /// `Authorization: Basic` on every request (https only).
    Basic {
        /// The precomputed header value.
        header: Zeroizing<String>,
    },
    /// The TLS client certificate carries the identity (IIS client-certificate mapping).
    ClientCertificate,
    /// Kerberos (`Authorization: Negotiate` with a Kerberos AP-REQ made from the issuer's cached
    /// service ticket); one AP-REQ per connection.
    Kerberos {
        /// The identity, KDCs, SPN and ticket cache.
        client: crate::kerberos::KerberosClient,
        /// EPA mode.
        channel_binding: ChannelBinding,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Ntlm { username, channel_binding, .. } => {
                write!(f, "Ntlm({username:?}, channel binding {channel_binding:?})")
            }
            Auth::Basic { .. } => f.write_str("Basic"),
            Auth::ClientCertificate => f.write_str("ClientCertificate"),
            Auth::Kerberos { client, channel_binding } => write!(f, "{client:?}, channel binding {channel_binding:?}"),
        }
    }
}

impl Auth {
    fn name(&self) -> &'static str {
        match self {
            Auth::Ntlm { .. } => "NTLM",
            Auth::Basic { .. } => "Basic",
            Auth::ClientCertificate => "client certificate",
            Auth::Kerberos { .. } => "Kerberos",
        }
    }
}

/// What went wrong talking to certsrv.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdcsError {
    /// No HTTP answer: connect, TLS, reset, timeout.
    #[error("{0}")]
    Transport(String),
    /// 401/403: the server refused the credentials (or the channel binding).
    #[error("credentials refused: {0}")]
    Unauthorized(String),
    /// Any other unexpected status.
    #[error("HTTP {status} from {path} (page title {title:?}){}", retry_after.map(|d| format!(", Retry-After {} s", d.as_secs())).unwrap_or_default())]
    Http {
        /// HTTP status.
        status: u16,
        /// The path asked for.
        path: String,
        /// The error page's title.
        title: String,
        /// The answer's `Retry-After` (a load balancer's 429, HTTP.sys's or a proxy's 503), when
        /// readable: the controller retries no sooner.
        retry_after: Option<Duration>,
    },
    /// An answer that is not what certsrv sends (wrong content type, over the size cap, bad PKCS#7).
    #[error("{0}")]
    BadAnswer(String),
    /// Local configuration that cannot work (e.g. channel binding required but not computable).
    #[error("{0}")]
    Config(String),
}

/// The answer to `certnew.cer?ReqID=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The issued certificate (DER).
    Certificate(Vec<u8>),
    /// Not issued: what the page says.
    NotIssued(StatusPage),
}

/// Counters of a client's connections (benchmark and tests).
#[derive(Debug, Default)]
pub struct Stats {
    /// TCP+TLS connections opened.
    pub connections: AtomicU64,
    /// NTLM handshakes run.
    pub handshakes: AtomicU64,
    /// HTTP requests sent (handshake legs included).
    pub requests: AtomicU64,
}

struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// `tls-server-end-point:<hash>` of this connection's server certificate.
    binding: Option<Vec<u8>>,
    authenticated: bool,
}

struct Response {
    status: StatusCode,
    content_type: String,
    www_authenticate: Vec<String>,
    retry_after: Option<Duration>,
    body: Bytes,
}

/// One certsrv endpoint with its credentials and idle connections.
pub struct AdcsClient {
    host: String,
    port: u16,
    base_path: String,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    auth: Auth,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for AdcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdcsClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("base_path", &self.base_path)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// `(host, port, base path)` of an `https://host[:port]/certsrv` URL.
pub fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let uri: hyper::Uri = url.trim().parse().map_err(|e| format!("spec.url {url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "spec.url {url:?} must be an https:// URL (certsrv credentials and channel bindings need TLS), e.g. https://ca.example.com/certsrv"
        ));
    }
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| format!("spec.url {url:?} has no host"))?;
    if uri.query().is_some() || url.contains('@') {
        return Err(format!("spec.url {url:?} must not carry a query or user info: use https://host/certsrv"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let path = uri.path().trim_end_matches('/').to_owned();
    Ok((host, uri.port_u16().unwrap_or(443), path))
}

/// The RFC 5929 `tls-server-end-point` channel binding of `cert`: the certificate hashed with its
/// signature's hash (SHA-256 for MD5 and SHA-1), prefixed with the binding type.
pub fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    let (_, x) = x509_parser::parse_x509_certificate(cert).ok()?;
    let oid = x.signature_algorithm.algorithm.to_id_string();
    let hash: Vec<u8> = match oid.as_str() {
        // sha384WithRSA, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => sha2::Sha384::digest(cert).to_vec(),
        // sha512WithRSA, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => sha2::Sha512::digest(cert).to_vec(),
        // md5/sha1/sha256 with RSA, ecdsa-with-SHA1/256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2" => sha2::Sha256::digest(cert).to_vec(),
        // RSA-PSS and EdDSA carry no single hash here: no binding can be computed.
        _ => return None,
    };
    let mut out = b"tls-server-end-point:".to_vec();
    out.extend(hash);
    Some(out)
}

/// The binding to send under `mode`, given the connection's computed one.
fn select_binding(mode: ChannelBinding, computed: &Option<Vec<u8>>) -> Result<Option<Vec<u8>>, AdcsError> {
    match (mode, computed) {
        (ChannelBinding::Off, _) => Ok(None),
        (_, Some(b)) => Ok(Some(b.clone())),
        (ChannelBinding::Auto, None) => Ok(None),
        (ChannelBinding::Required, None) => Err(AdcsError::Config(
            "channelBinding is required but the server certificate's signature algorithm gives no tls-server-end-point hash (RSA-PSS or EdDSA): set channelBinding: auto".into(),
        )),
    }
}

fn transport(what: &str, e: impl std::fmt::Display) -> AdcsError {
    AdcsError::Transport(format!("{what}: {e}"))
}

impl AdcsClient {
    /// A client for `url` (`https://host[:port]/certsrv`). `roots` holds the PEM CA bundle that signs
    /// the server's TLS certificate (`None`: the system roots); `identity` a client certificate chain
    /// and key in PEM for TLS client authentication.
    pub fn new(
        url: &str,
        roots: Option<&str>,
        identity: Option<(&str, &str)>,
        auth: Auth,
        timeout: Duration,
    ) -> Result<AdcsClient, AdcsError> {
        let (host, port, base_path) = parse_url(url).map_err(AdcsError::Config)?;
        let mut store = rustls::RootCertStore::empty();
        match roots {
            Some(pem_text) => {
                let blocks = pem::parse_many(pem_text)
                    .map_err(|e| AdcsError::Config(format!("spec.caBundle is not PEM: {e}")))?;
                for b in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
                    store
                        .add(CertificateDer::from(b.contents().to_vec()))
                        .map_err(|e| AdcsError::Config(format!("spec.caBundle holds a bad certificate: {e}")))?;
                }
                if store.is_empty() {
                    return Err(AdcsError::Config("spec.caBundle holds no CERTIFICATE block".into()));
                }
            }
            None => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = store.add(c);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AdcsError::Config(format!("TLS setup: {e}")))?
            .with_root_certificates(store);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((chain_pem, key_pem)) => {
                let certs: Vec<CertificateDer<'static>> = pem::parse_many(chain_pem)
                    .map_err(|e| AdcsError::Config(format!("client certificate is not PEM: {e}")))?
                    .into_iter()
                    .filter(|b| b.tag() == "CERTIFICATE")
                    .map(|b| CertificateDer::from(b.into_contents()))
                    .collect();
                if certs.is_empty() {
                    return Err(AdcsError::Config("client certificate (tls.crt) holds no CERTIFICATE block".into()));
                }
                let key = rustls_pki_types::PrivateKeyDer::try_from(
                    pem::parse(key_pem)
                        .map_err(|_| AdcsError::Config("client key (tls.key) is not PEM".into()))?
                        .into_contents(),
                )
                .map_err(|e| AdcsError::Config(format!("client key (tls.key): {e}")))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| AdcsError::Config(format!("client certificate and key do not fit: {e}")))?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| AdcsError::Config(format!("spec.url host {host:?} is not a valid TLS server name")))?;
        Ok(AdcsClient {
            host,
            port,
            base_path,
            tls: TlsConnector::from(Arc::new(config)),
            server_name,
            auth,
            timeout,
            idle: Mutex::default(),
            stats: Arc::default(),
        })
    }

    /// Connection counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The Kerberos counters (AS exchanges, AP-REQs), for a Kerberos client.
    pub fn kerberos_stats(&self) -> Option<&crate::kerberos::KerberosStats> {
        match &self.auth {
            Auth::Kerberos { client, .. } => Some(client.stats()),
            _ => None,
        }
    }

    /// The authentication method's name, for messages.
    pub fn auth_name(&self) -> &'static str {
        self.auth.name()
    }

    async fn connect(&self) -> Result<Conn, AdcsError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| transport(&format!("connecting to {}:{}", self.host, self.port), e))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| transport(&format!("TLS handshake with {}", self.host), error_chain(&e)))?;
        let binding = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| tls_server_end_point(c));
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| transport("HTTP handshake", error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "certsrv connection closed");
            }
        });
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Conn { sender, binding, authenticated: false })
    }

    async fn send(
        &self,
        conn: &mut Conn,
        method: &Method,
        path_and_query: &str,
        form: Option<&str>,
        authorization: Option<&str>,
        cap: usize,
    ) -> Result<Response, AdcsError> {
        let mut b = Request::builder()
            .method(method.clone())
            .uri(path_and_query)
            .header(
                header::HOST,
                if self.port == 443 { self.host.clone() } else { format!("{}:{}", self.host, self.port) },
            )
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::ACCEPT, "*/*");
        if let Some(a) = authorization {
            b = b.header(header::AUTHORIZATION, a);
        }
        let body = match form {
            Some(f) => {
                b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Full::new(Bytes::copy_from_slice(f.as_bytes()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = b.body(body).map_err(|e| AdcsError::Config(format!("building the request: {e}")))?;
        conn.sender.ready().await.map_err(|e| transport("connection", error_chain(&e)))?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let resp = conn.sender.send_request(req).await.map_err(|e| transport(path_and_query, error_chain(&e)))?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let www_authenticate = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| certbridge::http::parse_retry_after(v, std::time::SystemTime::now()));
        let body = Limited::new(resp.into_body(), cap).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                AdcsError::BadAnswer(format!("{path_and_query}: the answer is larger than {} KiB", cap / 1024))
            } else {
                // With its causes: "error reading a body" alone hides a reset from a cut answer.
                AdcsError::Transport(format!("{path_and_query}: reading the answer: {}", error_chain(&*e)))
            }
        })?;
        Ok(Response { status, content_type, www_authenticate, retry_after, body: body.to_bytes() })
    }

    /// Runs the Kerberos handshake on `conn`: the AP-REQ goes with the request itself. A refusal
    /// of an AP-REQ made from a ticket cached earlier drops the ticket and tries once more with a
    /// new one (it may have expired, or certsrv's key changed); a refusal carrying a Kerberos
    /// error is reported by its meaning (clock skew, wrong SPN, channel binding).
    async fn kerberos(
        &self,
        conn: &mut Conn,
        method: &Method,
        path_and_query: &str,
        form: Option<&str>,
        cap: usize,
    ) -> Result<Response, AdcsError> {
        let Auth::Kerberos { client: krb, channel_binding } = &self.auth else {
            unreachable!("kerberos() is only called for Kerberos")
        };
        let binding = select_binding(*channel_binding, &conn.binding)?;
        for attempt in 0..2 {
            let token = krb.token(binding.as_deref()).await?;
            self.stats.handshakes.fetch_add(1, Ordering::Relaxed);
            let header = format!("Negotiate {}", token.base64);
            let r = self.send(conn, method, path_and_query, form, Some(&header), cap).await?;
            if r.status != StatusCode::UNAUTHORIZED {
                return Ok(r);
            }
            let code = r
                .www_authenticate
                .iter()
                .find_map(|h| h.strip_prefix("Negotiate ").and_then(crate::kerberos::server_error_code));
            if !token.fresh && attempt == 0 {
                debug!(?code, "certsrv refused an AP-REQ from the cached Kerberos ticket; getting a new ticket");
                krb.forget(&token.ticket).await;
                continue;
            }
            return match code {
                Some(code) => Err(crate::kerberos::explain_server_error(code, krb.spn())),
                None => Ok(r),
            };
        }
        unreachable!("the second attempt returns")
    }

    /// Runs the NTLM handshake on `conn` with the request itself as the second leg.
    async fn ntlm(
        &self,
        conn: &mut Conn,
        method: &Method,
        path_and_query: &str,
        form: Option<&str>,
        cap: usize,
    ) -> Result<Response, AdcsError> {
        let Auth::Ntlm { username, domain, password, channel_binding } = &self.auth else {
            unreachable!("ntlm() is only called for NTLM")
        };
        let binding = select_binding(*channel_binding, &conn.binding)?;
        self.stats.handshakes.fetch_add(1, Ordering::Relaxed);
        let mut session = ntlm::Session::new(username, domain.as_deref(), password, binding.as_deref())?;
        let negotiate = session.negotiate()?;
        let r = self.send(conn, method, path_and_query, form, Some(&format!("NTLM {negotiate}")), cap).await?;
        if r.status != StatusCode::UNAUTHORIZED {
            // The server did not ask to authenticate: the answer is the answer.
            return Ok(r);
        }
        let Some(challenge) =
            r.www_authenticate.iter().find_map(|h| h.strip_prefix("NTLM ").map(str::trim).map(str::to_owned))
        else {
            return Err(AdcsError::Unauthorized(format!(
                "the server answered the NTLM negotiation with 401 but no NTLM challenge (it offers {:?}): is NTLM enabled for certsrv?",
                r.www_authenticate
            )));
        };
        let authenticate = session.authenticate(&challenge)?;
        drop(session);
        self.send(conn, method, path_and_query, form, Some(&format!("NTLM {authenticate}")), cap).await
    }

    /// One request on an idle or new connection, authenticating the connection when needed.
    async fn call(&self, method: Method, rel: &str, form: Option<&str>, cap: usize) -> Result<Response, AdcsError> {
        let path_and_query = format!("{}/{}", self.base_path, rel);
        let work = async {
            // An idle connection may have been closed by the server. Closed ones are skipped; a GET
            // that fails on a reused connection is tried once more on a fresh one. A POST is not:
            // the submit may have reached certsrv before the connection broke (the double-submit
            // window), so its error goes up and the signer decides.
            for attempt in 0..2 {
                let reused = {
                    let mut idle = self.idle.lock().expect("lock poisoned");
                    idle.retain(|c| !c.sender.is_closed());
                    idle.pop()
                };
                let fresh = reused.is_none();
                let mut conn = match reused {
                    Some(c) => c,
                    None => self.connect().await?,
                };
                let result = match &self.auth {
                    Auth::Ntlm { .. } if !conn.authenticated => {
                        self.ntlm(&mut conn, &method, &path_and_query, form, cap).await
                    }
                    Auth::Kerberos { .. } if !conn.authenticated => {
                        self.kerberos(&mut conn, &method, &path_and_query, form, cap).await
                    }
                    Auth::Basic { header } => {
                        self.send(&mut conn, &method, &path_and_query, form, Some(header.as_str()), cap).await
                    }
                    _ => self.send(&mut conn, &method, &path_and_query, form, None, cap).await,
                };
                match result {
                    Err(AdcsError::Transport(m)) if !fresh && attempt == 0 && method == Method::GET => {
                        debug!(error = %m, "idle certsrv connection failed; retrying on a new one");
                        continue;
                    }
                    Err(e) => return Err(e),
                    Ok(r) if r.status == StatusCode::UNAUTHORIZED && conn.authenticated && attempt == 0 => {
                        // The server dropped the connection's authentication: a new handshake.
                        continue;
                    }
                    Ok(r) => {
                        if r.status.is_success() {
                            conn.authenticated = true;
                            let mut idle = self.idle.lock().expect("lock poisoned");
                            if !conn.sender.is_closed() && idle.len() < MAX_IDLE {
                                idle.push(conn);
                            }
                        }
                        return Ok(r);
                    }
                }
            }
            Err(AdcsError::Transport("certsrv kept closing connections".into()))
        };
        let r = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| AdcsError::Transport(format!("{path_and_query}: no answer within {:?}", self.timeout)))??;
        match r.status.as_u16() {
            200..=299 => Ok(r),
            401 | 403 => Err(AdcsError::Unauthorized(format!(
                "HTTP {} from {path_and_query} with {} ({})",
                r.status.as_u16(),
                self.auth.name(),
                pages::text(&pages::title(&String::from_utf8_lossy(&r.body)))
            ))),
            s => Err(AdcsError::Http {
                status: s,
                path: path_and_query,
                title: pages::title(&String::from_utf8_lossy(&r.body)),
                retry_after: r.retry_after,
            }),
        }
    }

    /// `GET <url>/`: proves the credentials.
    pub async fn probe(&self) -> Result<(), AdcsError> {
        self.call(Method::GET, "", None, MAX_BODY).await.map(|_| ())
    }

    /// `POST certfnsh.asp` with the CSR and template.
    pub async fn submit(&self, csr_pem: &str, template: &str) -> Result<SubmitPage, AdcsError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("Mode", "newreq")
            .append_pair("CertRequest", csr_pem)
            .append_pair("CertAttrib", &format!("CertificateTemplate:{template}\r\n"))
            .append_pair("FriendlyType", "Saved-Request Certificate")
            .append_pair("TargetStoreFlags", "0")
            .append_pair("SaveCert", "yes")
            .finish();
        let r = self.call(Method::POST, "certfnsh.asp", Some(&form), MAX_BODY).await?;
        Ok(pages::parse_submit(&String::from_utf8_lossy(&r.body)))
    }

    /// `GET certnew.cer?ReqID=N&Enc=b64`.
    pub async fn fetch(&self, req_id: u64) -> Result<Fetched, AdcsError> {
        let r = self.call(Method::GET, &format!("certnew.cer?ReqID={req_id}&Enc=b64"), None, MAX_BODY).await?;
        if r.content_type.starts_with("application/pkix-cert") || r.content_type.starts_with("application/x-x509") {
            let der = cert_der(&r.body)
                .map_err(|m| AdcsError::BadAnswer(format!("certnew.cer for request {req_id}: {m}")))?;
            return Ok(Fetched::Certificate(der));
        }
        if r.content_type.starts_with("text/html") {
            return Ok(Fetched::NotIssued(pages::parse_status(&String::from_utf8_lossy(&r.body))));
        }
        Err(AdcsError::BadAnswer(format!(
            "certnew.cer for request {req_id} answered with content type {:?}",
            r.content_type
        )))
    }

    /// `certcarc.asp` → `nRenewals` (0 when the page has none).
    pub async fn renewals(&self) -> Result<u32, AdcsError> {
        let r = self.call(Method::GET, "certcarc.asp", None, MAX_BODY).await?;
        let html = String::from_utf8_lossy(&r.body);
        pages::parse_renewals(&html).ok_or_else(|| {
            AdcsError::BadAnswer(format!(
                "certcarc.asp has no nRenewals (page title {:?}): is spec.url the certsrv base?",
                pages::title(&html)
            ))
        })
    }

    /// `certnew.p7b?ReqID=CACert&Renewal=N&Enc=b64`: the CA chain of renewal `n` (DER).
    pub async fn ca_chain(&self, n: u32) -> Result<Vec<Vec<u8>>, AdcsError> {
        let path = format!("certnew.p7b?ReqID=CACert&Renewal={n}&Enc=b64");
        let r = self.call(Method::GET, &path, None, MAX_CHAIN_BODY).await?;
        if r.content_type.starts_with("text/html") {
            return Err(AdcsError::BadAnswer(format!(
                "{path} answered with a page (title {:?}), not a PKCS#7 chain",
                pages::title(&String::from_utf8_lossy(&r.body))
            )));
        }
        pages::parse_pkcs7(&r.body).map_err(|m| AdcsError::BadAnswer(format!("{path}: {m}")))
    }
}

/// A certificate as certsrv sends it: PEM (`Enc=b64`, CRLF) or DER.
fn cert_der(body: &[u8]) -> Result<Vec<u8>, String> {
    if body.first() == Some(&0x30) {
        return Ok(body.to_vec());
    }
    let s = std::str::from_utf8(body).map_err(|_| "neither DER nor PEM".to_owned())?;
    let p = pem::parse(s).map_err(|e| format!("not PEM: {e}"))?;
    Ok(p.into_contents())
}

/// The NTLM client messages through `sspi` (pure Rust NTLMv2 with channel bindings).
mod ntlm {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use sspi::{
        AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, DataRepresentation, Ntlm, SecurityBuffer,
        SecurityStatus, Sspi, SspiImpl, Username,
    };

    use super::AdcsError;

    pub struct Session {
        ntlm: Ntlm,
        creds: sspi::AcquireCredentialsHandleResult<Option<sspi::AuthIdentityBuffers>>,
    }

    fn err(e: impl std::fmt::Display) -> AdcsError {
        AdcsError::Config(format!("NTLM: {e}"))
    }

    impl Session {
        pub fn new(
            username: &str,
            domain: Option<&str>,
            password: &str,
            binding: Option<&[u8]>,
        ) -> Result<Session, AdcsError> {
            let user = match domain {
                Some(d) if !username.contains(['\\', '@']) => Username::new(username, Some(d)),
                _ => Username::parse(username),
            }
            .map_err(|e| AdcsError::Config(format!("NTLM username {username:?}: {e}")))?;
            let identity = AuthIdentity { username: user, password: password.to_owned().into() };
            let mut ntlm = Ntlm::new();
            if let Some(b) = binding {
                ntlm.set_channel_bindings(b);
            }
            let creds = ntlm
                .acquire_credentials_handle()
                .with_credential_use(CredentialUse::Outbound)
                .with_auth_data(&identity)
                .execute(&mut ntlm)
                .map_err(err)?;
            Ok(Session { ntlm, creds })
        }

        fn step(&mut self, input: Option<Vec<u8>>) -> Result<String, AdcsError> {
            let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
            let mut input = input.map(|i| vec![SecurityBuffer::new(i, BufferType::Token)]);
            let mut builder = self
                .ntlm
                .initialize_security_context()
                .with_credentials_handle(&mut self.creds.credentials_handle)
                .with_context_requirements(ClientRequestFlags::ALLOCATE_MEMORY)
                .with_target_data_representation(DataRepresentation::Native)
                .with_output(&mut output);
            if let Some(i) = input.as_mut() {
                builder = builder.with_input(i);
            }
            let result = self
                .ntlm
                .initialize_security_context_impl(&mut builder)
                .map_err(err)?
                .resolve_to_result()
                .map_err(err)?;
            if matches!(result.status, SecurityStatus::CompleteNeeded | SecurityStatus::CompleteAndContinue) {
                self.ntlm.complete_auth_token(&mut output).map_err(err)?;
            }
            Ok(STANDARD.encode(&output[0].buffer))
        }

        /// The NEGOTIATE message, base64.
        pub fn negotiate(&mut self) -> Result<String, AdcsError> {
            self.step(None)
        }

        /// The AUTHENTICATE message answering the server's base64 CHALLENGE.
        pub fn authenticate(&mut self, challenge_b64: &str) -> Result<String, AdcsError> {
            let challenge = STANDARD
                .decode(challenge_b64)
                .map_err(|_| AdcsError::BadAnswer("the NTLM challenge is not base64".into()))?;
            self.step(Some(challenge))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://ca.example.com/certsrv/").unwrap(),
            ("ca.example.com".into(), 443, "/certsrv".into())
        );
        assert_eq!(parse_url("https://127.0.0.1:8443/certsrv").unwrap(), ("127.0.0.1".into(), 8443, "/certsrv".into()));
        assert!(parse_url("http://ca.example.com/certsrv").unwrap_err().contains("https://"));
        assert!(parse_url("https://u:p@ca/certsrv").is_err());
        assert!(parse_url("nonsense url").is_err());
    }

    #[test]
    fn ntlm_messages_are_produced() {
        let mut s = ntlm::Session::new("alice", Some("CORP"), "pw", Some(b"tls-server-end-point:x")).unwrap();
        let n = s.negotiate().unwrap();
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD.decode(n).unwrap();
        assert!(raw.starts_with(b"NTLMSSP\0\x01\0\0\0"));
    }
}
