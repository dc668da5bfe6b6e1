//! Fault injection, request counters and dropped watches.

use std::time::Duration;

use crate::common::*;
use certbridge_testkit::{FaultRule, KubeSim, Verb};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

#[tokio::test]
async fn injected_errors_fire_the_requested_number_of_times() {
    let sim = KubeSim::start().await.unwrap();
    let faults = sim.faults();
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    faults.inject(
        FaultRule::error(500, "InternalError", "etcd is on fire").verb(Verb::Create).resource("configmaps").times(1),
    );
    let e = api_err(api.create(&PostParams::default(), &cm("a")).await);
    assert_eq!((e.code, e.reason.as_str(), e.message.as_str()), (500, "InternalError", "etcd is on fire"));
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    assert_eq!(faults.count(Verb::Create, "configmaps"), 2);
    assert_eq!(faults.count(Verb::Get, "configmaps"), 0);

    // Subresource-scoped rule: status patches of cert-manager CRs conflict forever until cleared.
    sim.install_cert_manager_crds().await.unwrap();
    let crs = cr_api(&sim.client(), "default");
    crs.create(&PostParams::default(), &certificate_request("cr")).await.unwrap();
    let id = faults.inject(
        FaultRule::error(409, "Conflict", "injected")
            .verb(Verb::Patch)
            .resource("certificaterequests")
            .subresource("status"),
    );
    let st = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    for _ in 0..3 {
        assert_eq!(
            api_err(crs.patch_status("cr", &PatchParams::apply("c").force(), &Patch::Apply(&st)).await).code,
            409
        );
    }
    // The main resource is unaffected.
    crs.patch("cr", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}}))).await.unwrap();
    faults.remove(id);
    crs.patch_status("cr", &PatchParams::apply("c").force(), &Patch::Apply(&st)).await.unwrap();
    assert_eq!(faults.count_subresource(Verb::Patch, "certificaterequests", "status"), 4);
    assert_eq!(faults.count_subresource(Verb::Patch, "certificaterequests", ""), 1);
    assert_eq!(faults.count(Verb::Patch, "certificaterequests"), 5);

    // Latency rules delay but do not fail.
    faults.inject(FaultRule::latency(Duration::from_millis(50)).verb(Verb::Get).times(1));
    api.get("a").await.unwrap();
    faults.clear();
    faults.reset_counts();
    assert_eq!(faults.count(Verb::Get, "configmaps"), 0);
}

#[tokio::test]
async fn dropped_watches_end_and_watchers_recover() {
    let sim = KubeSim::start().await.unwrap();
    let faults = sim.faults();
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());

    // A raw watch stream ends when watches are dropped.
    let mut raw = api.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    api.create(&PostParams::default(), &cm("first")).await.unwrap();
    match tokio::time::timeout(WAIT, raw.try_next()).await.unwrap().unwrap().unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "first"),
        other => panic!("unexpected {other:?}"),
    }

    let mut w = watcher(api.clone(), watcher::Config::default()).boxed();
    loop {
        if let watcher::Event::InitDone = tokio::time::timeout(WAIT, w.try_next()).await.unwrap().unwrap().unwrap() {
            break;
        }
    }
    let watches_before = faults.count(Verb::Watch, "configmaps");
    faults.drop_watches();
    loop {
        match tokio::time::timeout(WAIT, raw.try_next()).await.unwrap() {
            Ok(None) => break,
            Ok(Some(WatchEvent::Bookmark(_))) => continue,
            other => panic!("expected the stream to end, got {other:?}"),
        }
    }
    api.create(&PostParams::default(), &cm("second")).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, w.try_next()).await.unwrap().unwrap().unwrap() {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) if o.name_any() == "second" => break,
            _ => {}
        }
    }
    assert!(faults.count(Verb::Watch, "configmaps") > watches_before);
}
