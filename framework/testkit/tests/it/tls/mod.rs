//! TLS mode: kube-rs and kubectl verify the server against the CA kube-sim generated, clients
//! that do not trust it are refused with a TLS error, and plain mode stays plain.

use certbridge_testkit::{KubeSim, SimOptions};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::WAIT;

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(group = "tls.example.com", version = "v1", kind = "Sprocket", namespaced)]
struct SprocketSpec {
    teeth: i32,
}

/// The whole source chain of an error, so assertions see the TLS cause under hyper's wrapping.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(" | ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn kube_client_trusting(url: &str, ca_der: Option<Vec<u8>>) -> Result<kube::Client, kube::Error> {
    let mut config = kube::Config::new(url.parse().unwrap());
    config.root_cert = ca_der.map(|d| vec![d]);
    kube::Client::try_from(config)
}

fn der_of(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).unwrap().into_contents()
}

/// Runs kubectl with `kubeconfig` (its own cache and HOME), feeding `stdin`.
async fn kubectl(dir: &std::path::Path, kubeconfig: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("KUBECACHEDIR", dir.join("cache"))
        .env("HOME", dir)
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
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.success(), text)
}

#[tokio::test]
async fn kube_rs_creates_gets_and_watches_a_custom_resource_over_verified_tls() {
    let sim = KubeSim::start_tls().await.unwrap();
    assert!(sim.url().starts_with("https://127.0.0.1:"), "{}", sim.url());
    let ca = sim.ca_pem().expect("TLS mode has a CA").to_string();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");

    // The kubeconfig path: what controllers and adapters use.
    let yaml = sim.kubeconfig_yaml();
    assert!(yaml.contains(&format!("server: {}\n", sim.url())), "{yaml}");
    assert!(yaml.contains("certificate-authority-data: "), "{yaml}");
    let kc = Kubeconfig::from_yaml(&yaml).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    assert_eq!(config.root_cert.as_deref(), Some(&[der_of(&ca)][..]), "kubeconfig CA is the server's CA");
    let client = kube::Client::try_from(config).unwrap();

    // The CRD itself goes in over TLS too.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Sprocket::crd()).await.unwrap();

    let api: Api<Sprocket> = Api::default_namespaced(client);
    let listed = api.list(&ListParams::default()).await.unwrap();
    let rv = listed.metadata.resource_version.clone().unwrap();
    let mut watch = api.watch(&WatchParams::default(), &rv).await.unwrap().boxed();

    let created = api.create(&PostParams::default(), &Sprocket::new("gear", SprocketSpec { teeth: 12 })).await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert_eq!(api.get("gear").await.unwrap().spec.teeth, 12);

    let event = tokio::time::timeout(WAIT, watch.try_next()).await.expect("watch event arrives").unwrap();
    match event {
        Some(WatchEvent::Added(o)) => {
            assert_eq!(o.name_any(), "gear");
            assert_eq!(o.spec.teeth, 12);
        }
        other => panic!("expected Added, got {other:?}"),
    }

    // `client()` trusts the CA as well.
    let via_helper: Api<Sprocket> = Api::default_namespaced(sim.client());
    assert_eq!(via_helper.get("gear").await.unwrap().spec.teeth, 12);
}

#[tokio::test]
async fn kubectl_applies_and_gets_over_verified_tls_and_refuses_without_the_ca() {
    let sim = KubeSim::start_tls().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc).unwrap();

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: over-tls\ndata:\n  k: v1\n";
    let (ok, out) = kubectl(dir.path(), &kc, &["apply", "-f", "-"], cm).await;
    assert!(ok, "kubectl apply over TLS failed: {out}");
    assert!(out.contains("configmap/over-tls created"), "{out}");
    let (ok, out) = kubectl(dir.path(), &kc, &["get", "configmap", "over-tls", "-o", "jsonpath={.data.k}"], "").await;
    assert!(ok, "kubectl get over TLS failed: {out}");
    assert_eq!(out, "v1");
    let (ok, out) = kubectl(dir.path(), &kc, &["apply", "-f", "-"], &cm.replace("k: v1", "k: v2")).await;
    assert!(ok && out.contains("configmap/over-tls configured"), "{out}");
    let (ok, out) = kubectl(dir.path(), &kc, &["get", "configmap", "over-tls", "-o", "jsonpath={.data.k}"], "").await;
    assert!(ok && out == "v2", "{out}");

    // The same kubeconfig without the CA: kubectl falls back to the system roots, which do
    // not contain kube-sim's throwaway CA, so verification fails.
    let bare = dir.path().join("kubeconfig-no-ca");
    let without_ca: String = sim
        .kubeconfig_yaml()
        .lines()
        .filter(|l| !l.contains("certificate-authority-data"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without_ca, sim.kubeconfig_yaml());
    std::fs::write(&bare, without_ca).unwrap();
    let nocache = tempfile::tempdir().unwrap();
    let (ok, out) = kubectl(nocache.path(), &bare, &["get", "configmap", "over-tls"], "").await;
    assert!(!ok, "kubectl without the CA must fail: {out}");
    assert!(
        out.contains("certificate signed by unknown authority") || out.contains("failed to verify certificate"),
        "{out}"
    );
}

#[tokio::test]
async fn clients_that_do_not_trust_the_ca_are_refused_with_a_tls_error() {
    let sim = KubeSim::start_tls().await.unwrap();
    let other = KubeSim::start_tls().await.unwrap();
    assert_ne!(sim.ca_pem(), other.ca_pem(), "each server makes its own CA");

    // Trusting another kube-sim's CA: the handshake fails on the certificate.
    let wrong = kube_client_trusting(&sim.url(), Some(der_of(other.ca_pem().unwrap()))).unwrap();
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(wrong);
    let e = api.list(&ListParams::default()).await.expect_err("wrong CA must be refused");
    let text = chain(&e);
    assert!(text.contains("invalid peer certificate") && text.contains("UnknownIssuer"), "{text}");

    // No CA at all (platform roots): refused as well, whether at build time or at connect time.
    match kube_client_trusting(&sim.url(), None) {
        Err(e) => assert!(chain(&e).to_lowercase().contains("cert"), "{}", chain(&e)),
        Ok(c) => {
            let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c);
            let e = api.list(&ListParams::default()).await.expect_err("platform roots must not trust kube-sim");
            assert!(chain(&e).contains("invalid peer certificate"), "{}", chain(&e));
        }
    }

    // Plain HTTP to the TLS port is not answered in clear.
    let plain_url = sim.url().replacen("https://", "http://", 1);
    let plain = kube_client_trusting(&plain_url, None).unwrap();
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(plain);
    let e = api.list(&ListParams::default()).await.expect_err("plain HTTP to the TLS port must fail");
    assert!(!matches!(e, kube::Error::Api(_)), "the server must not answer plain HTTP: {e:?}");

    // The trusting client still works against the same server.
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(sim.client());
    assert!(api.list(&ListParams::default()).await.unwrap().items.iter().any(|n| n.name_any() == "default"));
}

#[tokio::test]
async fn plain_mode_is_unchanged() {
    assert!(!SimOptions::default().tls, "TLS is opt-in");
    let sim = KubeSim::start().await.unwrap();
    assert!(sim.url().starts_with("http://127.0.0.1:"), "{}", sim.url());
    assert_eq!(sim.ca_pem(), None);
    let yaml = sim.kubeconfig_yaml();
    assert_eq!(yaml, certbridge_testkit::kubeconfig_for(&sim.url()));
    assert!(!yaml.contains("certificate-authority"), "{yaml}");
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(sim.client());
    assert!(api.list(&ListParams::default()).await.unwrap().items.iter().any(|n| n.name_any() == "default"));

    // And it really is plain: a TLS client gets no handshake from it.
    let tls_url = sim.url().replacen("http://", "https://", 1);
    let ca = KubeSim::start_tls().await.unwrap().ca_pem().unwrap().to_string();
    let tls_client = kube_client_trusting(&tls_url, Some(der_of(&ca))).unwrap();
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(tls_client);
    let e = api.list(&ListParams::default()).await.expect_err("a TLS client cannot talk to the plain server");
    assert!(!matches!(e, kube::Error::Api(_)), "{e:?}");
}
