//! `--otlp-endpoint`: a request's reconcile is exported as one `reconcile` span carrying the
//! request's uid, with a child `sign` span for the adapter's call, to an in-process OTLP/HTTP
//! collector stub that decodes what the real exporter sends.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use certbridge::IssuerScope;
use certbridge::testing::{approve, certificate_request, create_certificate_request, wait_ready};
use kube::ResourceExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as Status;
use prost::Message;

use crate::support::*;

/// An OTLP/HTTP collector on its own thread and runtime: the exporter's flush at the end blocks
/// the test's (single) thread while it posts.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
    /// The service.name of every export.
    services: Arc<Mutex<Vec<String>>>,
}

fn collector() -> Collector {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let services: Arc<Mutex<Vec<String>>> = Arc::default();
    let (s, v) = (spans.clone(), services.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/traces",
                post(move |body: Bytes| async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                    for resource_spans in request.resource_spans {
                        for attr in resource_spans.resource.iter().flat_map(|r| &r.attributes) {
                            if attr.key == "service.name" {
                                v.lock().unwrap().push(string(attr.value.as_ref()));
                            }
                        }
                        for scope in resource_spans.scope_spans {
                            s.lock().unwrap().extend(scope.spans);
                        }
                    }
                    // An empty ExportTraceServiceResponse: everything accepted.
                    ([(axum::http::header::CONTENT_TYPE, "application/x-protobuf")], Vec::<u8>::new())
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    Collector { url: format!("http://{addr}/"), spans, services }
}

fn string(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).map(|a| string(a.value.as_ref()))
}

#[tokio::test]
async fn a_reconcile_is_one_span_with_a_child_sign_span_exported_over_otlp() {
    let collector = collector();
    let (layer, guard) = certbridge::telemetry::otlp_layer(&collector.url, "certbridge-test").unwrap();
    // Other tests' spans are exported too while it is in: this test picks its own by name.
    let traces = &crate::subscriber::global().traces;
    traces.reload(Some(layer)).unwrap();

    let env = Env::start().await;
    env.ready_issuer(IssuerScope::Namespaced, "ca", TestSpec::default()).await;
    let (pem, _) = csr("traced.example.com");
    let req = certificate_request::<TestSpec>(NS, "traced", &pem, IssuerScope::Namespaced, "ca");
    let uid = create_certificate_request(&env.client, &req).await.unwrap().uid().unwrap();
    approve(&env.client, NS, "traced").await.unwrap();
    wait_ready(&env.client, NS, "traced", TIMEOUT).await.unwrap();
    // A CA error on the first try: that sign span is marked as an error.
    env.signer.push([Step::Transient("the CA is down")]);
    let (pem, _) = csr("flaky-traced.example.com");
    let req = certificate_request::<TestSpec>(NS, "flaky-traced", &pem, IssuerScope::Namespaced, "ca");
    create_certificate_request(&env.client, &req).await.unwrap();
    approve(&env.client, NS, "flaky-traced").await.unwrap();
    wait_ready(&env.client, NS, "flaky-traced", TIMEOUT).await.unwrap();
    env.stop().await;
    traces.reload(None).unwrap();
    // Flushes the batch: every span ended so far reaches the collector before this returns.
    drop(guard);

    let spans = collector.spans.lock().unwrap().clone();
    let names = || spans.iter().map(|s| &s.name).collect::<Vec<_>>();
    // The "traced" request's pass that signed: a reconcile span with a child sign span.
    let (parent, sign) = spans
        .iter()
        .filter(|s| s.name == "sign" && attribute(s, "sign.result").as_deref() == Some("issued"))
        .find_map(|sign| {
            let parent = spans.iter().find(|p| p.span_id == sign.parent_span_id)?;
            (attribute(parent, "request.name").as_deref() == Some("traced")).then_some((parent, sign))
        })
        .unwrap_or_else(|| panic!("no issued sign span under the request's reconcile in {:?}", names()));
    assert_eq!(parent.name, "reconcile");
    assert_eq!(parent.trace_id, sign.trace_id);
    assert_eq!(attribute(parent, "request.uid").as_deref(), Some(uid.as_str()), "{parent:?}");
    assert_eq!(attribute(parent, "request.name").as_deref(), Some("traced"));
    assert_eq!(attribute(parent, "issuer.kind").as_deref(), Some("TestIssuer"));
    assert_eq!(attribute(parent, "issuer.name").as_deref(), Some("ca"));
    // The sign span lies within its reconcile.
    assert!(
        parent.start_time_unix_nano <= sign.start_time_unix_nano
            && sign.end_time_unix_nano <= parent.end_time_unix_nano
    );
    let parent_of = |span: &Span| spans.iter().find(|p| p.span_id == span.parent_span_id);
    let failed = spans
        .iter()
        .filter(|s| s.name == "sign" && attribute(s, "sign.result").as_deref() == Some("retry"))
        .find(|s| parent_of(s).is_some_and(|p| attribute(p, "request.name").as_deref() == Some("flaky-traced")))
        .unwrap_or_else(|| panic!("no failed sign span under the flaky request's reconcile in {:?}", names()));
    let status = failed.status.as_ref().expect("a span status");
    assert_eq!((status.code, status.message.as_str()), (Status::Error as i32, "the CA is down"), "{failed:?}");
    // The issuer's check is a child span of the issuer's reconcile. (Spans of the other tests
    // running meanwhile are exported too.)
    assert!(
        spans.iter().filter(|s| s.name == "check").filter_map(parent_of).any(|p| p.name == "reconcile"
            && attribute(p, "issuer.kind").as_deref() == Some("TestIssuer")
            && attribute(p, "issuer.name").as_deref() == Some("ca")),
        "no check span under an issuer reconcile in {:?}",
        names()
    );
    assert!(collector.services.lock().unwrap().iter().all(|s| s == "certbridge-test"));
}
