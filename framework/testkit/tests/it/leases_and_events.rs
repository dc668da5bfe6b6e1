//! Leader election with kube-lease-manager and event publishing with kube-rs' Recorder.

use crate::common::*;
use certbridge_testkit::KubeSim;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{ListParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource};
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::json;

#[tokio::test]
async fn lease_manager_acquires_and_hands_over_the_lease() {
    let sim = KubeSim::start().await.unwrap();
    let client = sim.client();
    let first = LeaseManagerBuilder::new(client.clone(), "certbridge-leader")
        .with_namespace("cert-manager")
        .with_identity("pod-a")
        .with_duration(3)
        .with_grace(1)
        .build()
        .await
        .unwrap();
    let second = LeaseManagerBuilder::new(client.clone(), "certbridge-leader")
        .with_namespace("cert-manager")
        .with_identity("pod-b")
        .with_duration(3)
        .with_grace(1)
        .build()
        .await
        .unwrap();
    assert!(tokio::time::timeout(WAIT, first.changed()).await.unwrap().unwrap(), "pod-a becomes leader");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "cert-manager");
    let l = leases.get("certbridge-leader").await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("pod-a"));

    // pod-b waits; once pod-a releases, pod-b takes over.
    let waiter = tokio::spawn(async move {
        let r = second.changed().await;
        (r, second)
    });
    first.release().await.unwrap();
    let (r, second) = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
    assert!(r.unwrap(), "pod-b becomes leader");
    let l = leases.get("certbridge-leader").await.unwrap();
    assert_eq!(l.spec.as_ref().unwrap().holder_identity.as_deref(), Some("pod-b"));
    assert!(l.spec.unwrap().lease_transitions.unwrap_or_default() >= 1);
    second.release().await.unwrap();
}

#[tokio::test]
async fn recorder_publishes_and_deduplicates_events() {
    let sim = KubeSim::start().await.unwrap();
    let client = sim.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm = cms
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "target"}})).unwrap())
        .await
        .unwrap();
    let recorder = Recorder::new(client.clone(), Reporter { controller: "certbridge-test".into(), instance: None });
    let ev = Event {
        type_: EventType::Warning,
        reason: "RetryableError".into(),
        note: Some("try again".into()),
        action: "Sign".into(),
        secondary: None,
    };
    recorder.publish(&ev, &cm.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &cm.object_ref(&())).await.unwrap();
    let events: Api<K8sEvent> = Api::default_namespaced(client.clone());
    let list = events.list(&ListParams::default().fields("regarding.name=target")).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("RetryableError"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
}
