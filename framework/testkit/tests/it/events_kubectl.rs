//! One Event storage behind core `v1` and `events.k8s.io/v1`: what a controller records with
//! kube-rs' Recorder (events.k8s.io) is what `kubectl describe` and `kubectl get events` show
//! (core v1), and the other way round.

use crate::common::*;
use certbridge_testkit::KubeSim;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{ListParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource};
use serde_json::{Value, json};

/// kubectl as a user runs it, with the kubeconfig the server writes and its own cache dir.
struct Kubectl {
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(sim: &KubeSim) -> Self {
        let dir = tempfile::tempdir().unwrap();
        sim.write_kubeconfig(&dir.path().join("kubeconfig")).unwrap();
        Kubectl { dir }
    }

    async fn run(&self, args: &[&str], stdin: &str) -> String {
        use tokio::io::AsyncWriteExt as _;
        let mut child = tokio::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .env("HOME", self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl on PATH");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let o = tokio::time::timeout(WAIT, child.wait_with_output()).await.expect("kubectl finished").unwrap();
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "kubectl {args:?} failed: {err}\n{out}");
        out.into_owned()
    }
}

#[tokio::test]
async fn events_recorded_through_events_k8s_io_are_shown_by_kubectl_describe_and_get_events() {
    let sim = KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let client = sim.client();
    let cr = cr_api(&client, "default").create(&PostParams::default(), &certificate_request("web")).await.unwrap();
    let other = cr_api(&client, "default").create(&PostParams::default(), &certificate_request("api")).await.unwrap();

    let recorder = Recorder::new(client.clone(), Reporter { controller: "certbridge-test".into(), instance: None });
    let issued = Event {
        type_: EventType::Normal,
        reason: "Issued".into(),
        note: Some("Certificate fetched from issuer successfully".into()),
        action: "Sign".into(),
        secondary: None,
    };
    recorder.publish(&issued, &cr.object_ref(&cr_resource())).await.unwrap();
    recorder.publish(&issued, &cr.object_ref(&cr_resource())).await.unwrap();
    let waiting = Event {
        type_: EventType::Warning,
        reason: "WaitingForApproval".into(),
        note: Some("Not signing CertificateRequest until it is Approved".into()),
        action: "Sign".into(),
        secondary: None,
    };
    recorder.publish(&waiting, &other.object_ref(&cr_resource())).await.unwrap();

    let kubectl = Kubectl::new(&sim);
    // The core API finds it by the involved object, with the fields renamed.
    let out = kubectl.run(&["get", "events", "--field-selector", "involvedObject.name=web", "-o", "json"], "").await;
    let list: Value = serde_json::from_str(&out).unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{out}");
    let e = &items[0];
    assert_eq!(e["apiVersion"], "v1");
    assert_eq!(e["message"], "Certificate fetched from issuer successfully");
    assert_eq!(e["reason"], "Issued");
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["involvedObject"]["kind"], "CertificateRequest");
    assert_eq!(e["involvedObject"]["uid"], json!(cr.meta().uid));
    assert_eq!(e["reportingComponent"], "certbridge-test");
    assert_eq!(e["series"]["count"], 2);
    for v1_only in ["regarding", "note", "reportingController"] {
        assert!(e.get(v1_only).is_none(), "core v1 serves no {v1_only}: {e}");
    }

    // The table kubectl prints.
    let table = kubectl.run(&["get", "events", "--field-selector", "involvedObject.name=web"], "").await;
    let header = table.lines().next().unwrap_or_default();
    for column in ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"] {
        assert!(header.contains(column), "{table}");
    }
    assert!(table.contains("certificaterequest/web") && table.contains("Certificate fetched from issuer"), "{table}");
    assert!(!table.contains("certificaterequest/api"), "{table}");

    // kubectl describe lists the request's own events, and only those.
    let described = kubectl.run(&["describe", "certificaterequest", "web"], "").await;
    let events = described.split("Events:").nth(1).unwrap_or_default();
    assert!(!events.trim_start().starts_with("<none>"), "{described}");
    assert!(
        events.contains("Issued") && events.contains("Certificate fetched from issuer successfully"),
        "{described}"
    );
    assert!(events.contains("certbridge-test"), "the From column names the reporting controller: {described}");
    assert!(!events.contains("WaitingForApproval"), "{described}");
}

#[tokio::test]
async fn a_core_event_is_served_through_events_k8s_io_with_its_deprecated_fields() {
    let sim = KubeSim::start().await.unwrap();
    let kubectl = Kubectl::new(&sim);
    let core = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "cm.1", "namespace": "default"},
        "involvedObject": {"kind": "ConfigMap", "name": "settings", "namespace": "default", "apiVersion": "v1"},
        "reason": "Updated", "message": "settings changed", "type": "Normal",
        "source": {"component": "legacy-controller"},
        "firstTimestamp": "2026-12-01T00:00:00Z", "lastTimestamp": "2026-12-01T00:05:00Z", "count": 4
    });
    kubectl.run(&["create", "-f", "-"], &core.to_string()).await;

    let events: Api<K8sEvent> = Api::namespaced(sim.client(), "default");
    let list = events.list(&ListParams::default().fields("regarding.name=settings")).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.note.as_deref(), Some("settings changed"));
    assert_eq!(e.regarding.as_ref().and_then(|r| r.kind.as_deref()), Some("ConfigMap"));
    assert_eq!(e.deprecated_count, Some(4));
    assert_eq!(e.deprecated_source.as_ref().and_then(|s| s.component.as_deref()), Some("legacy-controller"));
    let json = serde_json::to_value(e).unwrap();
    assert_eq!(json["deprecatedFirstTimestamp"], "2026-12-01T00:00:00Z");
    assert_eq!(json["deprecatedLastTimestamp"], "2026-12-01T00:05:00Z");
    assert!(json.get("involvedObject").is_none() && json.get("message").is_none(), "{json}");
    // The same object, one storage: deleting it through one API removes it from the other.
    assert!(events.list(&ListParams::default().fields("involvedObject.name=settings")).await.is_err());
    events.delete("cm.1", &Default::default()).await.unwrap();
    let left = kubectl.run(&["get", "events", "-o", "name"], "").await;
    assert!(left.trim().is_empty(), "{left}");
}
