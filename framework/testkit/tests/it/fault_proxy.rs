//! The fault proxy itself, in front of kube-sim (plain and HTTPS) as the upstream: each fault
//! as a client sees it on the wire, whether the upstream was reached, and switching at run time.

use std::sync::Arc;
use std::time::Duration;

use certbridge_testkit::fault_proxy::{Fault, FaultProxy, ProxyOptions, Rule, UpstreamTls};
use certbridge_testkit::{KubeSim, Verb};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

const PATH: &str = "/api/v1/namespaces";

/// What a raw HTTP/1.1 client got: the bytes read, and the read error that ended it, if any.
struct Got {
    bytes: Vec<u8>,
    error: Option<std::io::ErrorKind>,
}

impl Got {
    fn status(&self) -> u16 {
        let text = String::from_utf8_lossy(&self.bytes);
        text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }
    fn head_and_body(&self) -> (String, Vec<u8>) {
        let i = self.bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
        (String::from_utf8_lossy(&self.bytes[..i]).to_lowercase(), self.bytes[i + 4..].to_vec())
    }
    fn content_length(&self) -> usize {
        let (head, _) = self.head_and_body();
        head.lines().find_map(|l| l.strip_prefix("content-length: ")).and_then(|v| v.parse().ok()).unwrap()
    }
}

/// Sends one `GET path` with `Connection: close` and reads until the server closes.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, path: &str) -> Got {
    let req = format!("GET {path} HTTP/1.1\r\nHost: proxy\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    io.write_all(req.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match io.read(&mut buf).await {
            Ok(0) => return Got { bytes, error: None },
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => return Got { bytes, error: Some(e.kind()) },
        }
    }
}

async fn get_plain(proxy: &FaultProxy, path: &str) -> Got {
    get(TcpStream::connect(proxy.addr()).await.unwrap(), path).await
}

fn lists(kube: &KubeSim) -> u64 {
    kube.faults().count(Verb::List, "namespaces")
}

async fn http_proxy() -> (KubeSim, FaultProxy) {
    let kube = KubeSim::start().await.unwrap();
    let proxy = FaultProxy::start(ProxyOptions::http(kube.addr())).await.unwrap();
    (kube, proxy)
}

#[tokio::test]
async fn passes_requests_through_untouched_and_records_them() {
    let (kube, proxy) = http_proxy().await;
    let got = get_plain(&proxy, PATH).await;
    assert_eq!(got.status(), 200);
    let (_, body) = got.head_and_body();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["kind"], "NamespaceList");
    assert_eq!(lists(&kube), 1);
    let seen = proxy.seen();
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str(), seen[0].status), ("GET", PATH, 200));
    assert_eq!(seen[0].fault, None);
}

#[tokio::test]
async fn status_faults_answer_without_reaching_the_upstream() {
    let (kube, proxy) = http_proxy().await;
    for code in [500, 502, 503, 504] {
        proxy.set(Fault::Status { code, retry_after: None });
        assert_eq!(get_plain(&proxy, PATH).await.status(), code);
    }
    proxy.set(Fault::Status { code: 429, retry_after: Some(Duration::from_secs(7)) });
    let got = get_plain(&proxy, PATH).await;
    assert_eq!(got.status(), 429);
    assert!(got.head_and_body().0.contains("retry-after: 7"), "{}", got.head_and_body().0);
    assert_eq!(lists(&kube), 0, "no request reached the upstream");
    proxy.clear();
    assert_eq!(get_plain(&proxy, PATH).await.status(), 200);
    assert_eq!(lists(&kube), 1);
}

#[tokio::test]
async fn rules_match_paths_and_run_out() {
    let (kube, proxy) = http_proxy().await;
    proxy.add(Rule::new(Fault::Status { code: 503, retry_after: None }).path("/namespaces").times(2));
    assert_eq!(get_plain(&proxy, "/api/v1/configmaps").await.status(), 200, "other paths pass");
    assert_eq!(get_plain(&proxy, PATH).await.status(), 503);
    assert_eq!(get_plain(&proxy, PATH).await.status(), 503);
    assert_eq!(get_plain(&proxy, PATH).await.status(), 200, "the rule ran out");
    assert_eq!(lists(&kube), 1);
    let tally = certbridge_testkit::fault_proxy::tally(&proxy.seen());
    assert_eq!((tally["status-503"], tally["none"]), (2, 2));
}

#[tokio::test]
async fn refuse_unbinds_the_port_and_clear_binds_it_again() {
    let (_kube, proxy) = http_proxy().await;
    // An open keep-alive connection is closed too, as when a server stops.
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    proxy.set(Fault::Refuse);
    let mut buf = [0u8; 1];
    assert!(matches!(open.read(&mut buf).await, Ok(0) | Err(_)), "the open connection was closed");
    let mut refused = false;
    // The accept loop drops its listener asynchronously; it is gone after a few polls at most.
    for _ in 0..200 {
        match TcpStream::connect(proxy.addr()).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::task::yield_now().await,
        }
    }
    assert!(refused, "connects are refused");
    proxy.clear();
    let mut back = None;
    for _ in 0..200 {
        if let Ok(c) = TcpStream::connect(proxy.addr()).await {
            back = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(back.expect("the port is bound again"), PATH).await.status(), 200);
}

#[tokio::test]
async fn blackhole_accepts_and_never_answers() {
    let (kube, proxy) = http_proxy().await;
    proxy.set(Fault::Blackhole);
    let waited = tokio::time::timeout(Duration::from_millis(300), get_plain(&proxy, PATH)).await;
    assert!(waited.is_err(), "no answer");
    assert_eq!(lists(&kube), 0);
    assert_eq!(proxy.seen()[0].fault.as_deref(), Some("blackhole"));
}

#[tokio::test]
async fn reset_mid_body_forwards_then_resets() {
    let (kube, proxy) = http_proxy().await;
    proxy.set(Fault::Reset);
    let got = get_plain(&proxy, PATH).await;
    assert_eq!(got.error, Some(std::io::ErrorKind::ConnectionReset), "the connection is reset");
    assert_eq!(got.status(), 200, "after the head");
    assert!(got.head_and_body().1.len() < got.content_length(), "and part of the body");
    assert_eq!(lists(&kube), 1, "the upstream did the work");
}

#[tokio::test]
async fn truncated_garbage_and_rewritten_bodies() {
    let (kube, proxy) = http_proxy().await;
    proxy.set(Fault::Truncate);
    let got = get_plain(&proxy, PATH).await;
    assert_eq!(got.error, None, "closed cleanly");
    let (_, body) = got.head_and_body();
    assert_eq!(body.len(), got.content_length() / 2, "half the announced body");

    proxy.set(Fault::Garbage);
    let got = get_plain(&proxy, PATH).await;
    assert_eq!(got.status(), 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&got.head_and_body().1).is_err(), "not JSON");

    proxy.set(Fault::Rewrite(Arc::new(|path: &str, body: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["kind"] = format!("Rewritten {path}").into();
        serde_json::to_vec(&v).unwrap()
    })));
    let got = get_plain(&proxy, PATH).await;
    let v: serde_json::Value = serde_json::from_slice(&got.head_and_body().1).unwrap();
    assert_eq!(v["kind"], format!("Rewritten {PATH}"));
    assert_eq!(lists(&kube), 3, "every one of them was forwarded");
}

#[tokio::test]
async fn slow_drip_delivers_the_whole_answer_a_byte_at_a_time() {
    let (_kube, proxy) = http_proxy().await;
    proxy.set(Fault::SlowDrip { interval: Duration::from_micros(100) });
    let mut io = TcpStream::connect(proxy.addr()).await.unwrap();
    io.write_all(format!("GET {PATH} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let (mut reads, mut bytes) = (0, Vec::new());
    let mut buf = [0u8; 4096];
    loop {
        let n = io.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        reads += 1;
        bytes.extend_from_slice(&buf[..n]);
    }
    let got = Got { bytes, error: None };
    assert_eq!(got.head_and_body().1.len(), got.content_length(), "complete");
    assert!(reads > got.bytes.len() / 4, "{reads} reads for {} bytes: dripped", got.bytes.len());
}

#[tokio::test]
async fn tls_alert_fails_the_handshake() {
    let kube = KubeSim::start_tls().await.unwrap();
    let proxy = FaultProxy::start(ProxyOptions::tcp(kube.addr())).await.unwrap();
    let connector = tls_connector(kube.ca_pem().unwrap());
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    // Untouched, TLS passes end to end through the TCP layer.
    let tls = connector.connect(name.clone(), TcpStream::connect(proxy.addr()).await.unwrap()).await.unwrap();
    assert_eq!(get(tls, PATH).await.status(), 200);
    proxy.set(Fault::TlsAlert);
    let err = connector.connect(name, TcpStream::connect(proxy.addr()).await.unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("HandshakeFailure"), "{err}");
}

#[tokio::test]
async fn https_layer_terminates_tls_and_speaks_tls_upstream() {
    let kube = KubeSim::start_tls().await.unwrap();
    let upstream =
        UpstreamTls { roots_pem: kube.ca_pem().unwrap().into(), server_name: "127.0.0.1".into(), identity: None };
    let proxy = FaultProxy::start(ProxyOptions::https(kube.addr(), upstream)).await.unwrap();
    assert!(proxy.url().starts_with("https://"));
    let connector = tls_connector(proxy.ca_pem().unwrap());
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name.clone(), TcpStream::connect(proxy.addr()).await.unwrap()).await.unwrap();
    assert_eq!(get(tls, PATH).await.status(), 200);
    proxy.set(Fault::Status { code: 502, retry_after: None });
    let tls = connector.connect(name, TcpStream::connect(proxy.addr()).await.unwrap()).await.unwrap();
    assert_eq!(get(tls, PATH).await.status(), 502);
    assert_eq!(lists(&kube), 1);
}

#[tokio::test]
async fn tcp_layer_relays_streams_and_resets_after_the_first_bytes() {
    let kube = KubeSim::start().await.unwrap();
    let proxy = FaultProxy::start(ProxyOptions::tcp(kube.addr())).await.unwrap();
    assert_eq!(get_plain(&proxy, PATH).await.status(), 200);
    proxy.add(Rule::new(Fault::Reset).times(1));
    let got = get_plain(&proxy, PATH).await;
    assert_eq!(got.error, Some(std::io::ErrorKind::ConnectionReset));
    assert_eq!(get_plain(&proxy, PATH).await.status(), 200, "one use only");
    assert_eq!(proxy.connections(), 3);
}

fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
