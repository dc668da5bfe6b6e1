//! The `kube-sim` binary: readiness line, kubeconfig, CRDs from files, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn kube_sim_binary_serves_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let crd = dir.path().join("crd.yaml");
    std::fs::write(
        &crd,
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gadgets.example.com\nspec:\n  group: example.com\n  names: {kind: Gadget, plural: gadgets}\n  scope: Cluster\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--addr", "127.0.0.1:0", "--kubeconfig-out"])
        .arg(&kc)
        .arg("--crds")
        .arg(&crd)
        .arg("--cert-manager-crds")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("kube-sim listening on http://127.0.0.1:"), "{line}");
    let out = Command::new("kubectl")
        .args(["get", "crd", "-o", "name"])
        .env("KUBECONFIG", &kc)
        .env("KUBECACHEDIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(names.contains("gadgets.example.com") && names.contains("certificaterequests.cert-manager.io"), "{names}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn kube_sim_binary_with_tls_serves_https_and_writes_a_verifying_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let ca = dir.path().join("ca.pem");
    let child = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--addr", "127.0.0.1:0", "--tls", "--kubeconfig-out"])
        .arg(&kc)
        .arg("--ca-out")
        .arg(&ca)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let child = &mut child.0;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("kube-sim listening on https://127.0.0.1:"), "{line}");
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"), "{ca_pem}");
    let kubeconfig = std::fs::read_to_string(&kc).unwrap();
    assert!(kubeconfig.contains("server: https://127.0.0.1:"), "{kubeconfig}");
    assert!(kubeconfig.contains("certificate-authority-data: "), "{kubeconfig}");
    let out = Command::new("kubectl")
        .args(["get", "namespace", "default", "-o", "name"])
        .env("KUBECONFIG", &kc)
        .env("KUBECACHEDIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "namespace/default");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
}

/// Kills the server if an assertion fails before the test sends SIGTERM.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
