//! kube-rs against the embedded API server: CRUD, conflicts, watches, a Controller,
//! server-side apply on status, and the real cert-manager schemas; `tls` covers TLS mode
//! (kube-rs and kubectl).

use std::sync::Arc;

use crate::common::*;
use certbridge_testkit::{KubeSim, SimOptions};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{Controller, controller::Action, watcher};
use kube::{Api, CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "demo"}}, "data": {"k": v}})).unwrap()
}

#[tokio::test]
async fn configmap_crud_and_stale_update_conflict() {
    let sim = KubeSim::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let created = api.create(&PostParams::default(), &cm("one", "a")).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();

    let got = api.get("one").await.unwrap();
    assert_eq!(got.data.unwrap()["k"], "a");

    let mut upd = created.clone();
    upd.data = Some([("k".to_string(), "b".to_string())].into());
    let updated = api.replace("one", &PostParams::default(), &upd).await.unwrap();
    let rv2: u64 = updated.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);

    // The same stale object again: 409 Conflict.
    let e = api_err(api.replace("one", &PostParams::default(), &upd).await);
    assert_eq!(e.code, 409);
    assert_eq!(e.reason, "Conflict");
    assert!(e.message.contains("the object has been modified"), "{}", e.message);

    let e = api_err(api.create(&PostParams::default(), &cm("one", "x")).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));

    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv >= rv2);

    api.delete("one", &DeleteParams::default()).await.unwrap();
    let e = api_err(api.get("one").await);
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "configmaps \"one\" not found");

    // Unknown namespace.
    let other: Api<ConfigMap> = Api::namespaced(sim.client(), "nope");
    let e = api_err(other.create(&PostParams::default(), &cm("x", "y")).await);
    assert_eq!(e.code, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn generate_name_and_merge_json_strategic_patches() {
    let sim = KubeSim::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let mut c = cm("", "a");
    c.metadata.name = None;
    c.metadata.generate_name = Some("gen-".into());
    let created = api.create(&PostParams::default(), &c).await.unwrap();
    let name = created.name_any();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let p = api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"data": {"m": "1"}}))).await.unwrap();
    assert_eq!(p.data.as_ref().unwrap()["m"], "1");
    let p = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([{"op": "add", "path": "/data/j", "value": "2"}])).unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(p.data.as_ref().unwrap()["j"], "2");
    let p = api.patch(&name, &PatchParams::default(), &Patch::Strategic(json!({"data": {"k": null}}))).await.unwrap();
    assert!(!p.data.as_ref().unwrap().contains_key("k"));
    // A merge patch carrying a stale resourceVersion is a conflict.
    let e = api_err(
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "data": {"z": "1"}})),
        )
        .await,
    );
    assert_eq!(e.code, 409);
}

#[tokio::test]
async fn label_and_field_selectors() {
    let sim = KubeSim::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    for (n, tier) in [("a", "web"), ("b", "db"), ("c", "cache")] {
        let mut c = cm(n, "v");
        c.metadata.labels = Some([("tier".to_string(), tier.to_string())].into());
        api.create(&PostParams::default(), &c).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>();
    assert_eq!(names(api.list(&ListParams::default().labels("tier=web")).await.unwrap()), ["a"]);
    assert_eq!(names(api.list(&ListParams::default().labels("tier!=web")).await.unwrap()), ["b", "c"]);
    assert_eq!(names(api.list(&ListParams::default().labels("tier in (db,cache)")).await.unwrap()), ["b", "c"]);
    assert_eq!(names(api.list(&ListParams::default().labels("tier notin (db,cache)")).await.unwrap()), ["a"]);
    assert_eq!(names(api.list(&ListParams::default().labels("tier")).await.unwrap()), ["a", "b", "c"]);
    assert_eq!(names(api.list(&ListParams::default().labels("!tier")).await.unwrap()), Vec::<String>::new());
    assert_eq!(names(api.list(&ListParams::default().fields("metadata.name=b")).await.unwrap()), ["b"]);
    assert_eq!(
        names(api.list(&ListParams::default().fields("metadata.name!=b,metadata.namespace=default")).await.unwrap()),
        ["a", "c"]
    );
    let e = api_err(api.list(&ListParams::default().fields("data.k=v")).await);
    assert_eq!(e.code, 400);
    // Pagination.
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let next = page.metadata.continue_.clone().unwrap();
    let page2 = api.list(&ListParams::default().limit(2).continue_token(&next)).await.unwrap();
    assert_eq!(names(page2), ["c"]);
}

#[tokio::test]
async fn watcher_stream_sees_changes_in_order() {
    let sim = KubeSim::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &cm("pre", "0")).await.unwrap();
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    // Initial list.
    let mut seen_pre = false;
    loop {
        match tokio::time::timeout(WAIT, stream.try_next()).await.unwrap().unwrap().unwrap() {
            watcher::Event::InitApply(o) => seen_pre |= o.name_any() == "pre",
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert!(seen_pre);
    api.create(&PostParams::default(), &cm("live", "1")).await.unwrap();
    api.patch("live", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "2"}}))).await.unwrap();
    api.delete("live", &DeleteParams::default()).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        match tokio::time::timeout(WAIT, stream.try_next()).await.unwrap().unwrap().unwrap() {
            watcher::Event::Apply(o) => got.push(format!("apply:{}:{}", o.name_any(), o.data.unwrap()["k"])),
            watcher::Event::Delete(o) => got.push(format!("delete:{}", o.name_any())),
            _ => {}
        }
    }
    assert_eq!(got, ["apply:live:1", "apply:live:2", "delete:live"]);
}

#[tokio::test]
async fn raw_watch_from_resource_version_and_gone() {
    let sim = KubeSim::start_with(SimOptions { watch_history: 3, ..Default::default() }).await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let first = api.create(&PostParams::default(), &cm("w", "0")).await.unwrap();
    let rv0 = first.resource_version().unwrap();
    api.patch("w", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "1"}}))).await.unwrap();
    // Resume right after the create: exactly the later MODIFIED.
    let mut s = api.watch(&WatchParams::default().timeout(5), &rv0).await.unwrap().boxed();
    match tokio::time::timeout(WAIT, s.try_next()).await.unwrap().unwrap().unwrap() {
        WatchEvent::Modified(o) => assert_eq!(o.data.unwrap()["k"], "1"),
        other => panic!("unexpected {other:?}"),
    }
    drop(s);
    for i in 2..8 {
        api.patch("w", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": i.to_string()}}))).await.unwrap();
    }
    let mut s = api.watch(&WatchParams::default(), &rv0).await.unwrap().boxed();
    match tokio::time::timeout(WAIT, s.try_next()).await.unwrap().unwrap().unwrap() {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    // Bookmarks when asked for.
    let list = api.list(&ListParams::default()).await.unwrap();
    let mut s = api.watch(&WatchParams::default(), &list.metadata.resource_version.unwrap()).await.unwrap().boxed();
    match tokio::time::timeout(WAIT, s.try_next()).await.unwrap().unwrap().unwrap() {
        WatchEvent::Bookmark(b) => assert!(!b.metadata.resource_version.is_empty()),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn streaming_list_watcher_works() {
    let sim = KubeSim::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    api.create(&PostParams::default(), &cm("s1", "0")).await.unwrap();
    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut names = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, stream.try_next()).await.unwrap().unwrap().unwrap() {
            watcher::Event::InitApply(o) => names.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(names, ["s1"]);
    api.create(&PostParams::default(), &cm("s2", "0")).await.unwrap();
    loop {
        if let watcher::Event::Apply(o) = tokio::time::timeout(WAIT, stream.try_next()).await.unwrap().unwrap().unwrap()
        {
            assert_eq!(o.name_any(), "s2");
            break;
        }
    }
}

/// A CRD defined with kube-derive, like the framework's issuer types.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "testing.certbridge.io",
    version = "v1alpha1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    shortname = "wd"
)]
pub struct WidgetSpec {
    pub size: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct WidgetStatus {
    pub observed_size: Option<i32>,
}

#[tokio::test]
async fn controller_reconciles_custom_resources() {
    let sim = KubeSim::start().await.unwrap();
    sim.install_crds_yaml(&serde_yaml::to_string(&Widget::crd()).unwrap()).await.unwrap();
    let client = sim.client();
    let api: Api<Widget> = Api::default_namespaced(client.clone());

    struct Ctx {
        api: Api<Widget>,
    }
    async fn reconcile(w: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
        let patch = json!({"apiVersion": "testing.certbridge.io/v1alpha1", "kind": "Widget", "status": {"observed_size": w.spec.size}});
        ctx.api.patch_status(&w.name_any(), &PatchParams::apply("widget-ctrl").force(), &Patch::Apply(patch)).await?;
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<Widget>, _: &kube::Error, _: Arc<Ctx>) -> Action {
        Action::requeue(std::time::Duration::from_millis(100))
    }
    let ctrl = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, error_policy, Arc::new(Ctx { api: api.clone() }))
            .for_each(|_| async {}),
    );

    let w = Widget::new("w1", WidgetSpec { size: 3, color: None });
    api.create(&PostParams::default(), &w).await.unwrap();
    let cond = kube::runtime::wait::await_condition(api.clone(), "w1", |o: Option<&Widget>| {
        o.and_then(|w| w.status.as_ref()).and_then(|s| s.observed_size) == Some(3)
    });
    tokio::time::timeout(WAIT, cond).await.unwrap().unwrap();
    api.patch("w1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 5}}))).await.unwrap();
    let cond = kube::runtime::wait::await_condition(api.clone(), "w1", |o: Option<&Widget>| {
        o.and_then(|w| w.status.as_ref()).and_then(|s| s.observed_size) == Some(5)
    });
    tokio::time::timeout(WAIT, cond).await.unwrap().unwrap();
    let w = api.get("w1").await.unwrap();
    assert_eq!(w.metadata.generation, Some(2));
    let managers: Vec<_> = w
        .managed_fields()
        .iter()
        .map(|m| (m.manager.clone().unwrap(), m.operation.clone().unwrap(), m.subresource.clone()))
        .collect();
    assert!(managers.contains(&("widget-ctrl".into(), "Apply".into(), Some("status".into()))), "{managers:?}");
    ctrl.abort();
}

#[tokio::test]
async fn generation_and_status_subresource_isolation() {
    let sim = KubeSim::start().await.unwrap();
    sim.install_crds_yaml(&serde_yaml::to_string(&Widget::crd()).unwrap()).await.unwrap();
    let api: Api<Widget> = Api::default_namespaced(sim.client());
    let w = api.create(&PostParams::default(), &Widget::new("g", WidgetSpec { size: 1, color: None })).await.unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    // Status on create is dropped.
    assert!(w.status.is_none());

    // Labels change: no generation bump.
    let w = api
        .patch("g", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    // Status through the main endpoint is ignored.
    let w =
        api.patch("g", &PatchParams::default(), &Patch::Merge(json!({"status": {"observed_size": 9}}))).await.unwrap();
    assert!(w.status.is_none());
    assert_eq!(w.metadata.generation, Some(1));
    // Status subresource ignores spec.
    let w = api
        .patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 100}, "status": {"observed_size": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(w.spec.size, 1);
    assert_eq!(w.status.unwrap().observed_size, Some(1));
    assert_eq!(w.metadata.generation, Some(1));
    // Spec change bumps.
    let w = api.patch("g", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();
    assert_eq!(w.metadata.generation, Some(2));
    // A no-op patch does not change the resourceVersion.
    let again = api.patch("g", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();
    assert_eq!(again.resource_version(), w.resource_version());
    // Unknown fields are pruned.
    let w = api.patch("g", &PatchParams::default(), &Patch::Merge(json!({"spec": {"bogus": true}}))).await.unwrap();
    let raw: Api<DynamicObject> =
        Api::default_namespaced_with(sim.client(), &kube::api::ApiResource::erase::<Widget>(&()));
    assert!(raw.get("g").await.unwrap().data["spec"].get("bogus").is_none());
    assert_eq!(w.metadata.generation, Some(2));
    // Type errors are 422.
    let e = api_err(api.patch("g", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": "big"}}))).await);
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.size"), "{}", e.message);
    // PUT without resourceVersion on a custom resource is invalid.
    let mut w2 = api.get("g").await.unwrap();
    w2.metadata.resource_version = None;
    let e = api_err(api.replace("g", &PostParams::default(), &w2).await);
    assert_eq!(e.code, 422);
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let sim = KubeSim::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let mut c = cm("f", "v");
    c.metadata.finalizers = Some(vec!["certbridge.io/cleanup".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let got = api.get("f").await.unwrap();
    assert!(got.metadata.deletion_timestamp.is_some());
    // No new finalizers while deleting.
    let e = api_err(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["certbridge.io/cleanup", "other"]}})),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    api.patch("f", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    assert_eq!(api_err(api.get("f").await).code, 404);
    // Preconditions.
    let o = api.create(&PostParams::default(), &cm("p", "v")).await.unwrap();
    let e = api_err(
        api.delete(
            "p",
            &DeleteParams {
                preconditions: Some(kube::api::Preconditions { uid: Some("wrong".into()), resource_version: None }),
                ..Default::default()
            },
        )
        .await,
    );
    assert_eq!(e.code, 409);
    api.delete(
        "p",
        &DeleteParams {
            preconditions: Some(kube::api::Preconditions { uid: o.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn cert_manager_schema_is_enforced() {
    let sim = KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let api = cr_api(&sim.client(), "default");

    let mut missing = certificate_request("missing");
    missing.data["spec"].as_object_mut().unwrap().remove("request");
    let e = api_err(api.create(&PostParams::default(), &missing).await);
    assert_eq!(e.code, 422);
    assert_eq!(e.reason, "Invalid");
    assert_eq!(e.message, "CertificateRequest.cert-manager.io \"missing\" is invalid: spec.request: Required value");

    let mut bad_usage = certificate_request("bad-usage");
    bad_usage.data["spec"]["usages"] = json!(["digital signature", "world domination"]);
    let e = api_err(api.create(&PostParams::default(), &bad_usage).await);
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.usages[1]: Unsupported value: \"world domination\""), "{}", e.message);

    let mut bad_bytes = certificate_request("bad-bytes");
    bad_bytes.data["spec"]["request"] = json!("%%% not base64 %%%");
    let e = api_err(api.create(&PostParams::default(), &bad_bytes).await);
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.request"), "{}", e.message);

    api.create(&PostParams::default(), &certificate_request("ok")).await.unwrap();
    let bad_status = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}});
    let e = api_err(api.patch_status("ok", &PatchParams::apply("ctrl").force(), &Patch::Apply(bad_status)).await);
    assert_eq!(e.code, 422);
    assert!(e.message.contains("status.conditions[0].status: Unsupported value: \"Maybe\""), "{}", e.message);

    let bad_time = json!({"status": {"failureTime": "yesterday"}});
    let e = api_err(api.patch_status("ok", &PatchParams::default(), &Patch::Merge(bad_time)).await);
    assert_eq!(e.code, 422);
    assert!(e.message.contains("status.failureTime"), "{}", e.message);

    // issuerRef.name is required inside spec.
    let mut no_issuer = certificate_request("no-issuer");
    no_issuer.data["spec"]["issuerRef"] = json!({"kind": "X"});
    let e = api_err(api.create(&PostParams::default(), &no_issuer).await);
    assert!(e.message.contains("spec.issuerRef.name: Required value"), "{}", e.message);
}

#[tokio::test]
async fn server_side_apply_list_map_merge_and_conflicts() {
    let sim = KubeSim::start().await.unwrap();
    sim.install_cert_manager_crds().await.unwrap();
    let api = cr_api(&sim.client(), "default");
    api.create(&PostParams::default(), &certificate_request("ssa")).await.unwrap();
    let cond = |t: &str, s: &str, reason: &str| json!({"type": t, "status": s, "reason": reason, "message": "m", "lastTransitionTime": "2024-01-01T00:00:00Z"});
    let body = |conds: Vec<serde_json::Value>| json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "status": {"conditions": conds}});

    // The approver sets Approved.
    api.patch_status(
        "ssa",
        &PatchParams::apply("approver"),
        &Patch::Apply(body(vec![cond("Approved", "True", "cert-manager.io")])),
    )
    .await
    .unwrap();
    // The controller applies Ready (force, like issuer-lib): Approved survives.
    let o = api
        .patch_status(
            "ssa",
            &PatchParams::apply("issuer").force(),
            &Patch::Apply(body(vec![cond("Ready", "Unknown", "Initializing")])),
        )
        .await
        .unwrap();
    assert_eq!(
        conditions(&o.data),
        [("Approved".to_string(), "True".to_string()), ("Ready".to_string(), "Unknown".to_string())]
    );
    let o = api
        .patch_status(
            "ssa",
            &PatchParams::apply("issuer").force(),
            &Patch::Apply(body(vec![cond("Ready", "True", "Issued")])),
        )
        .await
        .unwrap();
    assert_eq!(
        conditions(&o.data),
        [("Approved".to_string(), "True".to_string()), ("Ready".to_string(), "True".to_string())]
    );

    // Changing a field another manager owns without force: 409 naming manager and field.
    let e = api_err(
        api.patch_status(
            "ssa",
            &PatchParams::apply("intruder"),
            &Patch::Apply(body(vec![cond("Approved", "False", "nope")])),
        )
        .await,
    );
    assert_eq!(e.code, 409);
    assert!(e.message.contains("conflict") && e.message.contains("\"approver\""), "{}", e.message);
    assert!(e.message.contains(".status.conditions[type=\"Approved\"].status"), "{}", e.message);
    // Applying the same value is shared ownership, not a conflict.
    api.patch_status(
        "ssa",
        &PatchParams::apply("sharer"),
        &Patch::Apply(body(vec![cond("Approved", "True", "cert-manager.io")])),
    )
    .await
    .unwrap();

    // A manager dropping a condition it solely owned removes it; Approved stays.
    let o = api
        .patch_status(
            "ssa",
            &PatchParams::apply("issuer").force(),
            &Patch::Apply(json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "status": {}})),
        )
        .await
        .unwrap();
    assert_eq!(conditions(&o.data), [("Approved".to_string(), "True".to_string())]);

    // Applying through the main endpoint: status is ignored, and changing a spec field
    // the creator owns conflicts.
    let e = api_err(
        api.patch(
            "ssa",
            &PatchParams::apply("other"),
            &Patch::Apply(json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "spec": {"issuerRef": {"name": "changed"}}})),
        )
        .await,
    );
    assert_eq!(e.code, 409);
    assert!(e.message.contains(".spec.issuerRef.name"), "{}", e.message);
    let o = api
        .patch(
            "ssa",
            &PatchParams::apply("other"),
            &Patch::Apply(json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "metadata": {"labels": {"a": "b"}}, "status": {"certificate": "AAAA"}})),
        )
        .await
        .unwrap();
    assert!(o.data["status"].get("certificate").is_none());
    assert_eq!(o.labels()["a"], "b");
}
