//! The `certbridge-venafi` binary's offline commands against the simulator: `check -f` and
//! `sign -f` with a manifest holding a VenafiIssuer and its Secrets.

use certbridge::KeyKind;

use crate::common::*;

fn manifest(sim: &certbridge_venafi::sim::VenafiSim, zone: &str) -> String {
    let o = sim.options();
    let root = sim.root_pem().replace('\n', "\n    ");
    format!(
        r#"apiVersion: venafi.certbridge.io/v1alpha1
kind: VenafiIssuer
metadata: {{name: venafi, namespace: {NS}}}
spec:
  zone: '{zone}'
  tpp:
    url: {url}
    credentialsRef: {{name: tpp-creds}}
    caBundleSecretRef: {{name: tpp-ca, key: ca.crt}}
---
apiVersion: v1
kind: Secret
metadata: {{name: tpp-creds, namespace: {NS}}}
stringData: {{username: "{user}", password: "{pw}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: tpp-ca, namespace: {NS}}}
stringData:
  ca.crt: |
    {root}
"#,
        url = sim.tpp_url(),
        user = o.username,
        pw = o.password,
    )
}

async fn run(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_certbridge-venafi"))
        .current_dir(dir)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_sign_from_a_manifest() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("issuer.yaml"), manifest(&sim, ZONE)).unwrap();
    let (csr, _) = certbridge::testing::generate_csr(&KeyKind::EcP256, &["cli.example.com"]).unwrap();
    std::fs::write(dir.path().join("app.csr"), &csr).unwrap();
    let pw = sim.options().password.clone();

    let (ok, out, err) = run(dir.path(), &["check", "-f", "issuer.yaml"]).await;
    assert!(ok, "{out}{err}");
    assert!(!out.contains(&pw) && !err.contains(&pw));

    let (ok, chain, err) =
        run(dir.path(), &["sign", "-f", "issuer.yaml", "--csr", "app.csr", "--duration", "24h", "--ca-out", "ca.pem"])
            .await;
    assert!(ok, "{err}");
    assert_eq!(pem::parse_many(&chain).unwrap().len(), 2, "leaf + issuing CA");
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    assert_eq!(pem::parse(&ca).unwrap().contents(), pem::parse(sim.root_pem()).unwrap().contents());
    assert_eq!(sim.requests_for(&csr), 1);
    assert!(!err.contains(&pw));

    // A zone TPP does not have: check fails naming it.
    std::fs::write(dir.path().join("bad.yaml"), manifest(&sim, "Certificates\\Nowhere")).unwrap();
    let (ok, out, err) = run(dir.path(), &["check", "-f", "bad.yaml"]).await;
    assert!(!ok, "{out}{err}");
    assert!(format!("{out}{err}").contains("ZoneNotFound"), "{out}{err}");
}
