//! SubjectAccessReview evaluated against stored RBAC: kube-rs typed clients and kubectl.

use certbridge_testkit::KubeSim;
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

const RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: metrics-reader}
rules:
- nonResourceURLs: ["/metrics"]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: prometheus-metrics}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: metrics-reader}
subjects:
- {kind: ServiceAccount, name: prometheus, namespace: monitoring}
- {kind: Group, name: "system:monitoring"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: secret-reader}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list]
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  resourceNames: [vault-auth]
  verbs: [create]
- nonResourceURLs: ["/healthz/*"]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-secrets, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: secret-reader}
subjects:
- {kind: User, name: alice}
- {kind: ServiceAccount, name: builder}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cm-writer, namespace: team-a}
rules:
- apiGroups: ["*"]
  resources: ["*"]
  verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bob-all, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-writer}
subjects:
- {kind: User, name: bob}
"#;

async fn apply_rbac(client: &Client) {
    let ns = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    for doc in RBAC.split("\n---\n") {
        let v: serde_json::Value = serde_yaml::from_str(doc).unwrap();
        let ns = v["metadata"]["namespace"].as_str();
        let pp = PostParams::default();
        match v["kind"].as_str().unwrap() {
            "ClusterRole" => {
                Api::<ClusterRole>::all(client.clone()).create(&pp, &serde_json::from_value(v).unwrap()).await.unwrap();
            }
            "ClusterRoleBinding" => {
                Api::<ClusterRoleBinding>::all(client.clone())
                    .create(&pp, &serde_json::from_value(v).unwrap())
                    .await
                    .unwrap();
            }
            "Role" => {
                Api::<Role>::namespaced(client.clone(), ns.unwrap())
                    .create(&pp, &serde_json::from_value(v).unwrap())
                    .await
                    .unwrap();
            }
            "RoleBinding" => {
                Api::<RoleBinding>::namespaced(client.clone(), ns.unwrap())
                    .create(&pp, &serde_json::from_value(v).unwrap())
                    .await
                    .unwrap();
            }
            k => panic!("unexpected {k}"),
        }
    }
}

fn non_resource(user: &str, groups: &[&str], verb: &str, path: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            non_resource_attributes: Some(NonResourceAttributes { path: Some(path.into()), verb: Some(verb.into()) }),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn resource(user: &str, ns: &str, verb: &str, resource: &str, sub: &str, name: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.into()),
                verb: Some(verb.into()),
                group: Some(String::new()),
                resource: Some(resource.into()),
                subresource: (!sub.is_empty()).then(|| sub.into()),
                name: (!name.is_empty()).then(|| name.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn allowed(api: &Api<SubjectAccessReview>, r: SubjectAccessReview) -> bool {
    let out = api.create(&PostParams::default(), &r).await.unwrap();
    out.status.unwrap().allowed
}

#[tokio::test]
async fn subject_access_review_evaluates_rbac() {
    let sim = KubeSim::start().await.unwrap();
    let client = sim.client();
    apply_rbac(&client).await;
    let sar: Api<SubjectAccessReview> = Api::all(client.clone());

    // Non-resource /metrics: only through the ClusterRoleBinding's subjects.
    let prom = "system:serviceaccount:monitoring:prometheus";
    let out = sar.create(&PostParams::default(), &non_resource(prom, &[], "get", "/metrics")).await.unwrap();
    let status = out.status.unwrap();
    assert!(status.allowed);
    assert!(status.reason.unwrap().contains("prometheus-metrics"));
    assert!(allowed(&sar, non_resource("carol", &["system:monitoring"], "get", "/metrics")).await);
    assert!(!allowed(&sar, non_resource(prom, &[], "post", "/metrics")).await, "verb must match");
    assert!(!allowed(&sar, non_resource(prom, &[], "get", "/metrics/extra")).await, "exact path only");
    assert!(!allowed(&sar, non_resource("system:serviceaccount:other:prometheus", &[], "get", "/metrics")).await);
    assert!(!allowed(&sar, non_resource("mallory", &["system:authenticated"], "get", "/metrics")).await);
    assert!(allowed(&sar, non_resource("root", &["system:masters"], "get", "/metrics")).await);
    // A RoleBinding never grants non-resource URLs, even of a ClusterRole that lists them.
    assert!(!allowed(&sar, non_resource("alice", &[], "get", "/healthz/ping")).await);

    // Resource rules through RoleBindings: only in the binding's namespace.
    assert!(allowed(&sar, resource("alice", "team-a", "get", "secrets", "", "x")).await);
    assert!(!allowed(&sar, resource("alice", "team-b", "get", "secrets", "", "x")).await);
    assert!(!allowed(&sar, resource("alice", "team-a", "delete", "secrets", "", "x")).await);
    assert!(!allowed(&sar, resource("alice", "", "list", "secrets", "", "")).await, "cluster scope");
    // resourceNames and subresources.
    assert!(allowed(&sar, resource("alice", "team-a", "create", "serviceaccounts", "token", "vault-auth")).await);
    assert!(!allowed(&sar, resource("alice", "team-a", "create", "serviceaccounts", "token", "default")).await);
    assert!(!allowed(&sar, resource("alice", "team-a", "create", "serviceaccounts", "", "vault-auth")).await);
    // A ServiceAccount subject without a namespace is in the RoleBinding's namespace.
    assert!(allowed(&sar, resource("system:serviceaccount:team-a:builder", "team-a", "list", "secrets", "", "")).await);
    assert!(
        !allowed(&sar, resource("system:serviceaccount:team-b:builder", "team-a", "list", "secrets", "", "")).await
    );
    // Wildcards in a Role.
    assert!(allowed(&sar, resource("bob", "team-a", "deletecollection", "configmaps", "", "")).await);
    assert!(allowed(&sar, resource("bob", "team-a", "create", "serviceaccounts", "token", "any")).await);
    assert!(!allowed(&sar, resource("bob", "team-b", "get", "configmaps", "", "x")).await);

    // Removing the binding revokes.
    Api::<ClusterRoleBinding>::all(client.clone()).delete("prometheus-metrics", &Default::default()).await.unwrap();
    assert!(!allowed(&sar, non_resource(prom, &[], "get", "/metrics")).await);

    // Malformed reviews are rejected as the apiserver does.
    let err = sar.create(&PostParams::default(), &SubjectAccessReview::default()).await.unwrap_err();
    let kube::Error::Api(e) = err else { panic!("{err}") };
    assert_eq!(e.code, 422, "{e:?}");
    let mut both = non_resource("alice", &[], "get", "/metrics");
    both.spec.resource_attributes = Some(ResourceAttributes::default());
    let kube::Error::Api(e) = sar.create(&PostParams::default(), &both).await.unwrap_err() else { panic!() };
    assert!(e.message.contains("exactly one of"), "{}", e.message);
    sim.shutdown().await;
}

/// kubectl writes the RBAC objects and posts the review (JSON bodies, as for any `-f` file).
#[tokio::test]
async fn kubectl_applies_rbac_and_creates_subject_access_reviews() {
    let sim = KubeSim::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let kubectl = |args: &[&str], stdin: String| {
        let mut c = std::process::Command::new("kubectl");
        c.args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("KUBECACHEDIR", dir.path().join("cache"))
            .env("HOME", dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        async move {
            tokio::task::spawn_blocking(move || {
                use std::io::Write as _;
                let mut child = c.spawn().expect("kubectl on PATH");
                child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
                let o = child.wait_with_output().unwrap();
                let out = String::from_utf8_lossy(&o.stdout).to_string();
                assert!(o.status.success(), "kubectl failed: {}\n{out}", String::from_utf8_lossy(&o.stderr));
                out
            })
            .await
            .unwrap()
        }
    };
    kubectl(&["create", "namespace", "team-a"], String::new()).await;
    let applied = kubectl(&["apply", "-f", "-"], RBAC.to_string()).await;
    assert!(applied.contains("clusterrolebinding.rbac.authorization.k8s.io/prometheus-metrics created"), "{applied}");
    let roles = kubectl(&["get", "clusterroles", "-o", "name"], String::new()).await;
    assert!(roles.contains("clusterrole.rbac.authorization.k8s.io/metrics-reader"), "{roles}");

    let review = |user: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
               "spec": {"user": user, "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}})
        .to_string()
    };
    let out =
        kubectl(&["create", "-f", "-", "-o", "json"], review("system:serviceaccount:monitoring:prometheus")).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["allowed"], true, "{v}");
    let out = kubectl(&["create", "-f", "-", "-o", "json"], review("system:serviceaccount:team-a:builder")).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["allowed"], false, "{v}");
    sim.shutdown().await;
}
