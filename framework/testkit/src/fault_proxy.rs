//! A fault-injecting proxy on 127.0.0.1, in front of a CA simulator, OpenBao or kube-sim.
//!
//! Point the client at [`FaultProxy::addr`] instead of the upstream, then switch faults on and
//! off while it runs ([`FaultProxy::set`], [`FaultProxy::add`], [`FaultProxy::clear`]); a
//! fault applies to connections or requests arriving after the call returns.
//!
//! Two layers:
//! * **TCP** ([`ProxyOptions::tcp`]): bytes are relayed untouched, so TLS between client and
//!   upstream and streaming answers (watches) work. Connection faults only: [`Fault::Refuse`],
//!   [`Fault::Blackhole`], [`Fault::TlsAlert`], [`Fault::Reset`] (after the first answer bytes),
//!   [`Fault::SlowDrip`] (answer bytes).
//! * **HTTP/1.1** ([`ProxyOptions::http`]): each request is read whole, forwarded on a fresh
//!   upstream connection (plain or TLS, see [`UpstreamTls`]), and the answer is read whole
//!   before it is written back, so every fault can act on the status, headers and body. The
//!   proxy may serve TLS itself ([`ProxyOptions::serve_tls`], a throwaway CA: give clients
//!   [`FaultProxy::ca_pem`]); then a client certificate cannot reach the upstream, so use
//!   bearer-token or token-header authentication through it. Answers are buffered, so watches
//!   and other endless answers do not pass in this layer.
//!
//! Faults that forward first ([`Fault::Reset`], [`Fault::Truncate`], [`Fault::Garbage`],
//! [`Fault::Rewrite`]) let the upstream do the work and then spoil the answer: the nastiest
//! case for a client that must not repeat a non-idempotent call (an enrollment).
//!
//! Every request (HTTP layer) and connection (both) is recorded with its time and the fault
//! that fired, so a test can count retries and measure the time to recover.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A TLS alert record: fatal `handshake_failure` (what a server that shares no cipher suite
/// or refuses the client answers to a ClientHello).
const TLS_HANDSHAKE_FAILURE_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

/// A body no JSON, PEM or DER parser accepts.
const GARBAGE: &[u8] = b"<html><body>502 upstream sent \x00\x01\xff {\"certificate\": \"MII";

/// Upper bound of one request head; larger heads are refused with 431.
const MAX_HEAD: usize = 64 * 1024;

/// Replaces an answer's body: gets the request path and the upstream's body.
pub type BodyRewrite = Arc<dyn Fn(&str, &[u8]) -> Vec<u8> + Send + Sync>;

/// What the proxy does to a connection or request.
#[derive(Clone)]
pub enum Fault {
    /// Stop listening: connects are refused and open connections are closed, until the rule
    /// is removed (the port is bound again). Ignores the path filter and `times`.
    Refuse,
    /// Accept, read, and never answer (HTTP: per request; TCP: the whole connection).
    Blackhole,
    /// Answer the first bytes (a ClientHello) with a fatal TLS `handshake_failure` alert and
    /// close. Per connection; ignores the path filter.
    TlsAlert,
    /// HTTP: forward, write the head and half the body, then reset (RST) the connection.
    /// TCP: relay, and reset after half of the first chunk of answer bytes.
    Reset,
    /// HTTP only: answer this status without forwarding, with `Retry-After` in whole
    /// seconds when given.
    Status { code: u16, retry_after: Option<Duration> },
    /// Write the answer one byte per `interval` (TCP: the upstream's bytes).
    SlowDrip { interval: Duration },
    /// HTTP only: forward, then write the head with the full `Content-Length` and half the
    /// body, and close.
    Truncate,
    /// HTTP only: forward, then answer the upstream's status and headers with a garbage body.
    Garbage,
    /// HTTP only: forward, then replace the body with what the hook returns.
    Rewrite(BodyRewrite),
}

impl Fault {
    /// A [`Fault::Rewrite`] that, in JSON answers to paths containing one of `paths`, sets every
    /// field named by `fields` that the answer has to the current `value`: the "certificate for
    /// another key" row of a fault matrix. A field is a `/`-separated path where `*` stands for
    /// every element of an array (`certificates/*/certificate`).
    pub fn replace_json(
        paths: &'static [&'static str],
        fields: &'static [&'static str],
        value: Arc<Mutex<String>>,
    ) -> Fault {
        fn set(v: &mut serde_json::Value, segments: &[&str], new: &str) {
            match segments {
                [] => {}
                ["*", rest @ ..] => v.as_array_mut().into_iter().flatten().for_each(|e| set(e, rest, new)),
                [last] => {
                    if let Some(field) = v.get_mut(*last) {
                        *field = new.into();
                    }
                }
                [first, rest @ ..] => {
                    if let Some(child) = v.get_mut(*first) {
                        set(child, rest, new);
                    }
                }
            }
        }
        Fault::Rewrite(Arc::new(move |path: &str, body: &[u8]| {
            if !paths.iter().any(|p| path.contains(p)) {
                return body.to_vec();
            }
            let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) else { return body.to_vec() };
            let new = value.lock().map(|s| s.clone()).unwrap_or_default();
            for field in fields {
                set(&mut v, &field.split('/').collect::<Vec<_>>(), &new);
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }))
    }

    /// A short name for tables and logs (`status-503`, `slow-drip`, ...).
    pub fn name(&self) -> String {
        match self {
            Fault::Refuse => "refuse".into(),
            Fault::Blackhole => "blackhole".into(),
            Fault::TlsAlert => "tls-alert".into(),
            Fault::Reset => "reset".into(),
            Fault::Status { code, retry_after: None } => format!("status-{code}"),
            Fault::Status { code, retry_after: Some(d) } => format!("status-{code}-retry-after-{}s", d.as_secs()),
            Fault::SlowDrip { .. } => "slow-drip".into(),
            Fault::Truncate => "truncate".into(),
            Fault::Garbage => "garbage".into(),
            Fault::Rewrite(_) => "rewrite".into(),
        }
    }

    fn per_connection(&self) -> bool {
        matches!(self, Fault::Refuse | Fault::TlsAlert)
    }
}

impl std::fmt::Debug for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// A fault and where it applies. The first matching rule with uses left fires.
#[derive(Clone, Debug)]
pub struct Rule {
    pub fault: Fault,
    /// Only requests whose path contains this (HTTP layer); `None` matches all.
    pub path: Option<String>,
    /// How many times it fires; `None` = until removed.
    pub times: Option<u32>,
}

impl Rule {
    /// `fault` on every request or connection, until removed.
    pub fn new(fault: Fault) -> Rule {
        Rule { fault, path: None, times: None }
    }

    /// Only requests whose path contains `p`.
    pub fn path(mut self, p: impl Into<String>) -> Rule {
        self.path = Some(p.into());
        self
    }

    /// Fires `n` times, then is removed.
    pub fn times(mut self, n: u32) -> Rule {
        self.times = Some(n);
        self
    }
}

/// How the proxy reaches a TLS upstream (HTTP layer).
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    /// Roots that verify the upstream's certificate (PEM).
    pub roots_pem: String,
    /// Name to verify (`127.0.0.1`, `localhost`, ...).
    pub server_name: String,
    /// A client certificate and key (PEM) to present, for upstreams that authenticate the
    /// proxy itself.
    pub identity: Option<(String, String)>,
}

/// Where the proxy listens and what it forwards to.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    pub upstream: SocketAddr,
    /// `true`: HTTP/1.1 layer; `false`: TCP relay.
    pub http: bool,
    /// HTTP layer: serve HTTPS with a throwaway CA.
    pub serve_tls: bool,
    /// HTTP layer: speak TLS to the upstream.
    pub upstream_tls: Option<UpstreamTls>,
}

impl ProxyOptions {
    /// A TCP relay to `upstream`.
    pub fn tcp(upstream: SocketAddr) -> ProxyOptions {
        ProxyOptions { upstream, http: false, serve_tls: false, upstream_tls: None }
    }

    /// A plain HTTP/1.1 proxy to a plain HTTP `upstream`.
    pub fn http(upstream: SocketAddr) -> ProxyOptions {
        ProxyOptions { upstream, http: true, serve_tls: false, upstream_tls: None }
    }

    /// Serve HTTPS (throwaway CA) and speak TLS to the upstream.
    pub fn https(upstream: SocketAddr, upstream_tls: UpstreamTls) -> ProxyOptions {
        ProxyOptions { upstream, http: true, serve_tls: true, upstream_tls: Some(upstream_tls) }
    }
}

/// One request (HTTP layer) or connection (TCP layer, `method` = `CONNECT`) the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// The fault that fired, if any.
    pub fault: Option<String>,
    /// The status written back (0: none, e.g. reset, blackhole, TCP).
    pub status: u16,
}

struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
    connections: u64,
}

struct Shared {
    opts: ProxyOptions,
    state: Mutex<State>,
    /// Cancelled to drop every open connection; replaced by a fresh token.
    conns: Mutex<CancellationToken>,
    refusing: watch::Sender<bool>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    connector: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn conn_token(&self) -> CancellationToken {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn drop_connections(&self) {
        let mut t = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        t.cancel();
        *t = CancellationToken::new();
    }

    /// The first matching rule's fault, consuming one use. `path: None` = connection level.
    fn take(&self, path: Option<&str>) -> Option<Fault> {
        let mut s = self.lock();
        let idx = s.rules.iter().position(|r| match path {
            None => r.fault.per_connection() || !self.opts.http,
            Some(p) => !r.fault.per_connection() && r.path.as_deref().is_none_or(|f| p.contains(f)),
        } && !matches!(r.fault, Fault::Refuse))?;
        let rule = &mut s.rules[idx];
        let fault = rule.fault.clone();
        if let Some(t) = rule.times.as_mut() {
            *t = t.saturating_sub(1);
            if *t == 0 {
                s.rules.remove(idx);
            }
        }
        Some(fault)
    }

    fn record(&self, method: &str, path: &str, fault: Option<&Fault>, status: u16) {
        self.lock().seen.push(Seen {
            at: Instant::now(),
            method: method.into(),
            path: path.into(),
            fault: fault.map(Fault::name),
            status,
        });
    }

    fn rules_changed(&self) {
        let (refuse, per_connection) = {
            let s = self.lock();
            (
                s.rules.iter().any(|r| matches!(r.fault, Fault::Refuse)),
                s.rules.iter().any(|r| r.fault.per_connection() || !self.opts.http),
            )
        };
        // A connection fault must reach clients that hold pooled keep-alive connections, as a
        // real network fault would: they reconnect and meet it.
        // `refusing` first, then the connections: the accept loop takes a connection's token
        // before it reads `refusing`, so a connection accepted during this change either holds
        // a token cancelled here or sees `refusing` and is dropped.
        self.refusing.send_replace(refuse);
        if refuse || per_connection {
            self.drop_connections();
        }
    }
}

/// A running proxy; stops (and closes its connections) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    ca_pem: Option<String>,
    shutdown: CancellationToken,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.shared.drop_connections();
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port.
    pub async fn start(opts: ProxyOptions) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let (acceptor, ca_pem) = if opts.serve_tls {
            anyhow::ensure!(opts.http, "serve_tls needs the HTTP layer");
            let material = crate::tls::TlsMaterial::generate(addr.ip())?;
            (Some(tokio_rustls::TlsAcceptor::from(material.server_config())), Some(material.ca_pem))
        } else {
            (None, None)
        };
        let connector = opts.upstream_tls.as_ref().map(upstream_connector).transpose()?;
        let (refusing, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            opts,
            state: Mutex::new(State { rules: vec![], seen: vec![], connections: 0 }),
            conns: Mutex::new(CancellationToken::new()),
            refusing,
            acceptor,
            connector,
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(accept_loop(listener, addr, shared.clone(), shutdown.clone()));
        Ok(FaultProxy { addr, shared, ca_pem, shutdown })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` or `https://` + [`FaultProxy::addr`].
    pub fn url(&self) -> String {
        format!("{}://{}", if self.ca_pem.is_some() { "https" } else { "http" }, self.addr)
    }

    /// The throwaway CA clients must trust when the proxy serves TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Replaces every rule with `fault` on everything, until cleared (see [`FaultProxy::add`]).
    pub fn set(&self, fault: Fault) {
        self.shared.lock().rules = vec![Rule::new(fault)];
        self.shared.rules_changed();
    }

    /// Appends a rule (after the existing ones). Connection faults (and any rule in the TCP
    /// layer) also close the open connections, so that clients meet the fault when they reconnect.
    pub fn add(&self, rule: Rule) {
        self.shared.lock().rules.push(rule);
        self.shared.rules_changed();
    }

    /// Removes every rule: traffic passes untouched again (a refused port is bound again).
    pub fn clear(&self) {
        self.shared.lock().rules.clear();
        self.shared.rules_changed();
    }

    /// Closes every open connection now (clients see their connection drop).
    pub fn drop_connections(&self) {
        self.shared.drop_connections();
    }

    /// Every request (HTTP layer) or connection (TCP layer) seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().seen.clone()
    }

    /// Requests seen whose path contains `path`.
    pub fn requests_to(&self, path: &str) -> usize {
        self.shared.lock().seen.iter().filter(|s| s.path.contains(path)).count()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.lock().connections
    }
}

fn upstream_connector(t: &UpstreamTls) -> anyhow::Result<(tokio_rustls::TlsConnector, ServerName<'static>)> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(t.roots_pem.as_bytes()) {
        roots.add(c.context("upstream roots PEM")?).context("upstream root")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match &t.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain =
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>().context("identity")?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).context("identity key")?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(t.server_name.clone()).context("upstream server name")?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// Listens while no `Refuse` rule is active; unbinds (connects refused) while one is.
async fn accept_loop(first: TcpListener, addr: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut refusing = shared.refusing.subscribe();
    let mut listener = Some(first);
    loop {
        let Some(l) = listener.take() else {
            // Wait for the Refuse rule to go, then bind the same port again.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = refusing.wait_for(|r| !*r) => if r.is_err() { return },
            }
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "fault proxy: rebinding failed, retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = refusing.wait_for(|r| *r) => {
                drop(l);
                continue;
            }
            r = l.accept() => {
                if let Ok((tcp, _)) = r {
                    let cancel = shared.conn_token();
                    if *shared.refusing.borrow() {
                        // Accepted in the instant a Refuse rule arrived: closed like the rest, and
                        // the listener goes too (the loop binds again when the rule goes).
                        drop(tcp);
                        continue;
                    }
                    shared.lock().connections += 1;
                    let s = shared.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            _ = serve_connection(s, tcp) => {}
                        }
                    });
                }
                listener = Some(l);
            }
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, mut tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let fault = shared.take(None);
    if !shared.opts.http {
        shared.record("CONNECT", "", fault.as_ref(), 0);
    }
    match fault {
        Some(Fault::TlsAlert) => {
            let mut buf = [0u8; 1];
            // Wait for the ClientHello's first byte, as a server does, then refuse it.
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.write_all(&TLS_HANDSHAKE_FAILURE_ALERT).await;
            let _ = tcp.shutdown().await;
            return;
        }
        Some(Fault::Blackhole) => {
            // Read and discard whatever comes; never answer.
            let mut buf = [0u8; 4096];
            while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
            return;
        }
        _ => {}
    }
    if !shared.opts.http {
        tcp_relay(&shared, tcp, fault).await;
        return;
    }
    match &shared.acceptor {
        None => serve_http(&shared, tcp, |t| t).await,
        Some(acceptor) => {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                return;
            };
            serve_http(&shared, tls, |t| t.get_ref().0).await;
        }
    }
}

/// TCP layer: relays both ways; `Reset` and `SlowDrip` act on the upstream's bytes.
async fn tcp_relay(shared: &Shared, mut client: TcpStream, fault: Option<Fault>) {
    let Ok(mut upstream) = TcpStream::connect(shared.opts.upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = upstream.set_nodelay(true);
    match fault {
        Some(Fault::Reset) => {
            let (mut cr, mut cw) = client.split();
            let (mut ur, mut uw) = upstream.split();
            let up = tokio::io::copy(&mut cr, &mut uw);
            let down = async {
                let mut buf = vec![0u8; 16 * 1024];
                let n = ur.read(&mut buf).await.unwrap_or(0);
                let _ = cw.write_all(&buf[..n / 2]).await;
            };
            tokio::select! { _ = up => {}, _ = down => {} }
            let _ = client.set_zero_linger();
        }
        Some(Fault::SlowDrip { interval }) => {
            let (mut cr, mut cw) = client.split();
            let (mut ur, mut uw) = upstream.split();
            let up = tokio::io::copy(&mut cr, &mut uw);
            let down = async {
                let mut b = [0u8; 1];
                while matches!(ur.read(&mut b).await, Ok(1)) {
                    if cw.write_all(&b).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(interval).await;
                }
            };
            let _ = tokio::join!(up, down);
        }
        _ => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    }
}

/// A request read off the wire.
struct HttpRequest {
    /// The client asked to close after this answer (`Connection: close`).
    close: bool,
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// HTTP layer: one request at a time on a keep-alive connection.
async fn serve_http<S, F>(shared: &Shared, mut conn: S, tcp_of: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(&S) -> &TcpStream,
{
    let mut buf = Vec::new();
    loop {
        let req = match read_request(&mut conn, &mut buf).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(status) => {
                let _ = conn.write_all(&head(status, &[], 0, true)).await;
                return;
            }
        };
        let fault = shared.take(Some(&req.path));
        let answer = match &fault {
            Some(Fault::Blackhole) => {
                shared.record(&req.method, &req.path, fault.as_ref(), 0);
                // Hold the connection until the client gives up.
                let mut sink = [0u8; 4096];
                while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Some(Fault::Status { code, retry_after }) => {
                shared.record(&req.method, &req.path, fault.as_ref(), *code);
                let mut headers = vec![("content-type".to_owned(), b"application/json".to_vec())];
                if let Some(d) = retry_after {
                    headers.push(("retry-after".to_owned(), d.as_secs().to_string().into_bytes()));
                }
                let body = format!("{{\"error\":\"fault proxy: injected {code}\"}}");
                let _ = conn.write_all(&head(*code, &headers, body.len(), req.close)).await;
                let _ = conn.write_all(body.as_bytes()).await;
                if req.close || conn.flush().await.is_err() {
                    let _ = conn.shutdown().await;
                    return;
                }
                continue;
            }
            _ => forward(shared, &req).await,
        };
        let (status, headers, body) = match answer {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "fault proxy: upstream failed");
                shared.record(&req.method, &req.path, fault.as_ref(), 502);
                let body = b"fault proxy: upstream unreachable";
                let _ = conn.write_all(&head(502, &[], body.len(), true)).await;
                let _ = conn.write_all(body).await;
                return;
            }
        };
        shared.record(
            &req.method,
            &req.path,
            fault.as_ref(),
            if matches!(fault, Some(Fault::Reset)) { 0 } else { status },
        );
        match fault {
            Some(Fault::Reset) => {
                let _ = conn.write_all(&head(status, &headers, body.len(), false)).await;
                let _ = conn.write_all(&body[..body.len() / 2]).await;
                let _ = conn.flush().await;
                let _ = tcp_of(&conn).set_zero_linger();
                return;
            }
            Some(Fault::Truncate) => {
                let _ = conn.write_all(&head(status, &headers, body.len(), true)).await;
                let _ = conn.write_all(&body[..body.len() / 2]).await;
                let _ = conn.shutdown().await;
                return;
            }
            Some(Fault::SlowDrip { interval }) => {
                let mut bytes = head(status, &headers, body.len(), req.close);
                bytes.extend_from_slice(&body);
                for b in bytes {
                    if conn.write_all(&[b]).await.is_err() || conn.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(interval).await;
                }
            }
            Some(Fault::Garbage) => {
                let _ = conn.write_all(&head(status, &headers, GARBAGE.len(), req.close)).await;
                let _ = conn.write_all(GARBAGE).await;
            }
            Some(Fault::Rewrite(f)) => {
                let body = f(&req.path, &body);
                let _ = conn.write_all(&head(status, &headers, body.len(), req.close)).await;
                let _ = conn.write_all(&body).await;
            }
            _ => {
                let _ = conn.write_all(&head(status, &headers, body.len(), req.close)).await;
                let _ = conn.write_all(&body).await;
            }
        }
        if req.close || conn.flush().await.is_err() {
            let _ = conn.shutdown().await;
            return;
        }
    }
}

/// Reads one request; `Ok(None)` when the client closed between requests, `Err(status)` when
/// it is not HTTP/1.1 the proxy can forward.
async fn read_request<S: AsyncRead + Unpin>(conn: &mut S, buf: &mut Vec<u8>) -> Result<Option<HttpRequest>, u16> {
    let (head_len, method, path, headers) = loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let headers: Vec<(String, Vec<u8>)> =
                    req.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
                break (n, req.method.unwrap_or("GET").to_owned(), req.path.unwrap_or("/").to_owned(), headers);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(431),
            Err(_) => return Err(400),
        }
        if read_more(conn, buf).await == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(400) };
        }
    };
    buf.drain(..head_len);
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice());
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")) {
        read_chunked(conn, buf).await?
    } else {
        let len: usize = match header("content-length") {
            None => 0,
            Some(v) => std::str::from_utf8(v).ok().and_then(|v| v.trim().parse().ok()).ok_or(400u16)?,
        };
        while buf.len() < len {
            if read_more(conn, buf).await == 0 {
                return Err(400);
            }
        }
        buf.drain(..len).collect()
    };
    let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
    Ok(Some(HttpRequest { close, method, path, headers, body }))
}

async fn read_more<S: AsyncRead + Unpin>(conn: &mut S, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 8192];
    let n = conn.read(&mut chunk).await.unwrap_or(0);
    buf.extend_from_slice(&chunk[..n]);
    n
}

/// Decodes a chunked body (trailers are read and dropped).
async fn read_chunked<S: AsyncRead + Unpin>(conn: &mut S, buf: &mut Vec<u8>) -> Result<Vec<u8>, u16> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if buf.len() > MAX_HEAD || read_more(conn, buf).await == 0 {
                return Err(400);
            }
        };
        let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| 400u16)?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).map_err(|_| 400u16)?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    let empty = i == 0;
                    buf.drain(..i + 2);
                    if empty {
                        return Ok(body);
                    }
                } else if read_more(conn, buf).await == 0 {
                    return Err(400);
                }
            }
        }
        while buf.len() < size + 2 {
            if read_more(conn, buf).await == 0 {
                return Err(400);
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// Hop-by-hop headers and the ones the proxy recomputes.
fn passes(name: &str) -> bool {
    !matches!(
        name,
        "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade" | "te" | "trailer" | "expect"
    )
}

type Answer = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

/// Sends `req` on a fresh upstream connection and reads the whole answer.
async fn forward(shared: &Shared, req: &HttpRequest) -> anyhow::Result<Answer> {
    let tcp = TcpStream::connect(shared.opts.upstream).await.context("connecting upstream")?;
    let _ = tcp.set_nodelay(true);
    match &shared.connector {
        None => send(tcp, req, &shared.opts.upstream.to_string()).await,
        Some((connector, name)) => {
            let tls = connector.connect(name.clone(), tcp).await.context("upstream TLS")?;
            send(tls, req, &shared.opts.upstream.to_string()).await
        }
    }
}

async fn send<S>(io: S, req: &HttpRequest, authority: &str) -> anyhow::Result<Answer>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::builder().method(req.method.as_str()).uri(req.path.as_str());
    let mut has_host = false;
    for (n, v) in req.headers.iter().filter(|(n, _)| passes(n)) {
        has_host |= n == "host";
        builder = builder.header(n.as_str(), v.as_slice());
    }
    if !has_host {
        builder = builder.header("host", authority);
    }
    let answer = sender.send_request(builder.body(Full::new(Bytes::from(req.body.clone())))?).await?;
    let status = answer.status().as_u16();
    let headers = answer
        .headers()
        .iter()
        .filter(|(n, _)| passes(n.as_str()))
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let body = answer.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, headers, body))
}

/// A response head with `Content-Length: len`.
fn head(status: u16, headers: &[(String, Vec<u8>)], len: usize, close: bool) -> Vec<u8> {
    let reason = hyper::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Unknown");
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Counts of the requests seen, per fault name (`none` for untouched ones).
pub fn tally(seen: &[Seen]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in seen {
        *out.entry(s.fault.clone().unwrap_or_else(|| "none".into())).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_json_sets_the_named_fields_of_matching_answers_only() {
        let other = Arc::new(Mutex::new("OTHER".to_owned()));
        let Fault::Rewrite(rewrite) =
            Fault::replace_json(&["enroll", "search"], &["certificate", "certificates/*/certificate"], other)
        else {
            panic!("a rewrite");
        };
        let json = |b: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
        let one = br#"{"certificate":"MINE","serial":"1"}"#;
        assert_eq!(json(rewrite("/v1/enroll", one)), serde_json::json!({"certificate":"OTHER","serial":"1"}));
        let list = br#"{"certificates":[{"certificate":"A"},{"certificate":"B"},{"x":1}]}"#;
        assert_eq!(
            json(rewrite("/v1/search", list)),
            serde_json::json!({"certificates":[{"certificate":"OTHER"},{"certificate":"OTHER"},{"x":1}]})
        );
        assert_eq!(rewrite("/v1/status", one), one.to_vec(), "other paths pass untouched");
        assert_eq!(rewrite("/v1/enroll", b"not json"), b"not json".to_vec(), "non-JSON passes untouched");
    }
}
