//! The HTTPS front of the simulator: TLS with optional client certificates, authentication
//! (client certificate or bearer token, as EJBCA's `BaseRestResource.getAdmin`), routing and
//! validation through the OpenAPI spec, fault injection, and the OAuth 2.0 token endpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use certbridge::testing::SimPki;

use super::endpoints::{Answer, Handled, dispatch};
use super::openapi::Route;
use super::options::{Fault, Logged, TOKEN_PATH};
use super::state::{B64, Shared, ejbca_error};

/// The message of a 503 while the CA is offline.
const CA_OFFLINE: &str = "CA is offline: the CA's crypto token is not active.";

type Resp = Response<Full<Bytes>>;

fn json_response(status: u16, body: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The simulator's TLS server: its own server certificate, client certificates optional (those
/// chaining to the simulator's root authenticate).
pub(super) fn tls_acceptor(pki: &SimPki) -> Result<tokio_rustls::TlsAcceptor, String> {
    let (cert_der, key_der) = pki.server_cert("ejbca-sim").map_err(|e| format!("simulator server certificate: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.root_der().to_vec().into()).map_err(|e| format!("client CA: {e}"))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert_der.into()], rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()))
        .map_err(|e| format!("TLS: {e}"))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
}

/// Accepts connections on `listener` until the returned task is aborted.
pub(super) fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, s: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            let s = s.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
                let svc = hyper::service::service_fn(move |req| handle(s.clone(), peer.is_some(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    })
}

async fn handle(
    s: Arc<Shared>,
    client_cert: bool,
    req: Request<hyper::body::Incoming>,
) -> Result<Resp, std::io::Error> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let authorization = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // A body that cannot be read to its end is a client that went away mid-request (the chaos
    // harness kills the controller at any point): nothing to answer, and not a spec violation.
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(std::io::Error::other(format!("request body not received: {e}"))),
    };
    let latency = s.state.lock().map(|st| st.latency).unwrap_or_default();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if path == TOKEN_PATH {
        return Ok(token_endpoint(&s, &method, content_type.as_deref(), authorization.as_deref(), &body));
    }
    let route = match s.api.route(&method, &path) {
        Ok(r) => r,
        Err((status, m)) => {
            let (st, b) = ejbca_error(status, &m);
            return Ok(json_response(st, &b));
        }
    };
    let (body, fault) =
        match admit(&s, client_cert, &method, &route, content_type.as_deref(), authorization.as_deref(), &body) {
            Admission::Work(body, fault) => (body, fault),
            Admission::Answered(answer) => return answer,
        };
    let dispatched = match &fault {
        Some(Fault::IssueLate(delay)) => {
            // The work happens in its own task, so it completes even when the client has given
            // up and the connection (and this handler) is gone.
            let (s2, route2, delay) = (s.clone(), route.clone(), *delay);
            let late = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut st = s2.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                dispatch(&s2, &mut st, &route2, body.as_ref())
            });
            late.await.map_err(|e| std::io::Error::other(e.to_string()))?
        }
        _ => {
            let mut st = s.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            dispatch(&s, &mut st, &route, body.as_ref())
        }
    };
    finish(&s, &method, &route, fault, dispatched)
}

/// What [`admit`] decided.
enum Admission {
    /// Do the work with this validated body, then apply this fault (if any).
    Work(Option<Value>, Option<Fault>),
    /// The answer is already decided.
    Answered(Result<Resp, std::io::Error>),
}

/// The part of a call that happens before EJBCA does any work, under the state lock:
/// authentication, logging, spec validation, access rules, the CA outage, and faults that answer
/// before the work.
fn admit(
    s: &Shared,
    client_cert: bool,
    method: &str,
    route: &Route,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> Admission {
    let mut st = s.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Authentication, as EJBCA's BaseRestResource.getAdmin: client certificate or bearer token.
    let auth = match authorization.and_then(|a| a.strip_prefix("Bearer ")) {
        Some(token) => match st.tokens.get(token) {
            Some(exp) if Instant::now() < *exp => "bearer",
            _ => {
                let code = st.bad_token_status;
                st.requests.push(Logged { operation: route.operation_id.clone(), body: None, auth: "bearer" });
                let (c, b) = ejbca_error(
                    code,
                    "Authentication failed using OAuth Bearer Token: the token is expired or unknown.",
                );
                return Admission::Answered(Ok(json_response(c, &b)));
            }
        },
        None if client_cert => "mtls",
        None => {
            st.requests.push(Logged { operation: route.operation_id.clone(), body: None, auth: "none" });
            let (c, b) = ejbca_error(403, "Error no client certificate or OAuth token received for authentication.");
            return Admission::Answered(Ok(json_response(c, &b)));
        }
    };
    let parsed = s.api.check_request(route, content_type, body);
    st.requests.push(Logged {
        operation: route.operation_id.clone(),
        body: parsed.as_ref().ok().cloned().flatten(),
        auth,
    });
    if route.operation_id == "enrollPkcs10Certificate" {
        s.enroll_calls.fetch_add(1, Ordering::SeqCst);
    }
    let body = match parsed {
        Ok(b) => b,
        Err(m) => {
            st.violations.push(format!("{} {}: {m}", method, route.template));
            let (c, b) = ejbca_error(400, &format!("Invalid input (simulator: {m})"));
            return Admission::Answered(Ok(json_response(c, &b)));
        }
    };
    if st.denied.contains(&route.operation_id) {
        // Approximates EJBCA's AuthorizationDeniedException text (not verified verbatim).
        let (c, b) = ejbca_error(
            403,
            &format!("Not authorized to resource: the role has no access rule for {}.", route.operation_id),
        );
        return Admission::Answered(Ok(json_response(c, &b)));
    }
    if st.ca_offline {
        let (c, b) = ejbca_error(503, CA_OFFLINE);
        return Admission::Answered(Ok(json_response(c, &b)));
    }
    let fault = st
        .faults
        .iter()
        .position(|(op, _)| op == "*" || *op == route.operation_id)
        .and_then(|i| st.faults.remove(i))
        .map(|(_, f)| f);
    match &fault {
        Some(Fault::Status(code)) => {
            let msg = match code {
                500 => "General failure.",
                503 => CA_OFFLINE,
                _ => "Simulated failure.",
            };
            let (c, b) = ejbca_error(*code, msg);
            return Admission::Answered(Ok(json_response(c, &b)));
        }
        Some(Fault::Garbage) => {
            return Admission::Answered(Ok(Response::builder()
                .status(if route.operation_id == "enrollPkcs10Certificate" { 201 } else { 200 })
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"<html><body>Proxy error \x00\x01 {\"certificate\":")))
                .unwrap_or_default()));
        }
        Some(Fault::Reset) => {
            return Admission::Answered(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "simulated reset",
            )));
        }
        Some(Fault::RateLimited(retry_after)) => {
            let (c, b) = ejbca_error(429, "Too many requests.");
            return Admission::Answered(Ok(Response::builder()
                .status(c)
                .header("content-type", "application/json")
                .header("retry-after", retry_after.as_str())
                .body(Full::new(Bytes::from(b.to_string())))
                .unwrap_or_default()));
        }
        _ => {}
    }
    Admission::Work(body, fault)
}

/// The answer after the work: faults that corrupt it, and the spec check of what is sent.
fn finish(
    s: &Shared,
    method: &str,
    route: &Route,
    fault: Option<Fault>,
    dispatched: Handled,
) -> Result<Resp, std::io::Error> {
    let (status, mut answer) = match dispatched {
        Ok(Answer::Json(status, v)) => (status, Some(v)),
        Ok(Answer::Pem(text)) => {
            return Ok(Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .body(Full::new(Bytes::from(text)))
                .unwrap_or_default());
        }
        Err((status, v)) => (status, Some(v)),
    };
    match fault {
        Some(Fault::GarbageAfterIssue) => {
            return Ok(Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{\"certificate\": \"MII")))
                .unwrap_or_default());
        }
        Some(Fault::ResetAfterIssue) => {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated reset after issuing"));
        }
        Some(Fault::OtherKeyAfterIssue) => {
            if let Some(v) = answer.as_mut().filter(|v| v.get("certificate").is_some()) {
                v["certificate"] = json!(B64.encode(other_key_certificate(s)?));
            }
        }
        _ => {}
    }
    let answer = answer.unwrap_or(Value::Null);
    let mut st = s.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(m) = s.api.check_response(route, status, &answer) {
        st.violations.push(format!("simulator answer to {} {} broke the spec: {m}", method, route.template));
    }
    Ok(json_response(status, &answer))
}

fn token_endpoint(
    s: &Shared,
    method: &str,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> Resp {
    s.token_calls.fetch_add(1, Ordering::SeqCst);
    let mut st = s.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let form: BTreeMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    st.requests.push(Logged { operation: "token".into(), body: Some(json!(form)), auth: "none" });
    if let Some(i) = st.faults.iter().position(|(op, _)| op == "token")
        && let Some((_, Fault::Status(code))) = st.faults.remove(i)
    {
        return json_response(code, &json!({ "error": "server_error" }));
    }
    if method != "POST" || !content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
        return json_response(400, &json!({ "error": "invalid_request", "error_description": "POST a form" }));
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return json_response(400, &json!({ "error": "unsupported_grant_type" }));
    }
    let basic = authorization.and_then(|a| a.strip_prefix("Basic ")).and_then(|b| B64.decode(b).ok()).and_then(|d| {
        let text = String::from_utf8(d).ok()?;
        let (id, secret) = text.split_once(':')?;
        let dec = |v: &str| form_urlencoded::parse(format!("v={v}").as_bytes()).next().map(|(_, v)| v.into_owned());
        Some((dec(id)?, dec(secret)?))
    });
    let (id, secret) = basic.unwrap_or_else(|| {
        (form.get("client_id").cloned().unwrap_or_default(), form.get("client_secret").cloned().unwrap_or_default())
    });
    if id != s.opts.client_id || secret != s.opts.client_secret {
        return json_response(
            401,
            &json!({ "error": "invalid_client", "error_description": "Invalid client or Invalid client credentials" }),
        );
    }
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let ttl = st.token_ttl;
    st.tokens.insert(token.clone(), Instant::now() + ttl);
    json_response(200, &json!({ "access_token": token, "token_type": "Bearer", "expires_in": ttl.as_secs() }))
}

/// A certificate for a fresh key nobody asked for, signed by the first CA (not recorded as issued).
fn other_key_certificate(s: &Shared) -> Result<Vec<u8>, std::io::Error> {
    let (csr, _key) = certbridge::testing::generate_csr(&certbridge::KeyKind::EcP256, &["someone-else.example"])
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let ca = s.pki.cas.first().ok_or_else(|| std::io::Error::other("the simulator has no CA"))?;
    ca.sign(&csr, std::time::Duration::from_secs(86400)).map_err(|e| std::io::Error::other(format!("{e:?}")))
}
