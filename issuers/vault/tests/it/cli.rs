//! The `certbridge-vault` binary's offline commands against OpenBao: `check -f` and `sign -f` with a
//! manifest holding a VaultIssuer and its token Secret.

use std::process::Command;

use certbridge_vault::testing::{PKI_MOUNT, ROLE};

use crate::*;

fn manifest(server: &str, token: &str) -> String {
    format!(
        r#"apiVersion: vault.certbridge.io/v1alpha1
kind: VaultIssuer
metadata: {{name: vault, namespace: {NS}}}
spec:
  server: {server}
  path: {PKI_MOUNT}/sign/{ROLE}
  auth:
    tokenSecretRef: {{name: vault-token}}
---
apiVersion: v1
kind: Secret
metadata: {{name: vault-token, namespace: {NS}}}
stringData: {{token: "{token}"}}
"#
    )
}

#[tokio::test]
async fn check_and_sign_from_a_manifest() {
    let (bao, pki) = openbao().await;
    let token = bao.create_token("1h", true, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_certbridge-vault");
    std::fs::write(dir.path().join("issuer.yaml"), manifest(&bao.addr(), &token)).unwrap();
    std::fs::write(dir.path().join("app.csr"), csr(&["app.example.com"], &[], &[])).unwrap();

    // The dev server speaks plain HTTP: refused unless the controller's dev flag says otherwise.
    let out = Command::new(bin)
        .current_dir(dir.path())
        .env_remove("CERTBRIDGE_VAULT_ALLOW_INSECURE_HTTP")
        .args(["check", "-f", "issuer.yaml"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && text.contains("is not https://") && !text.contains(&token), "{text}");
    let out = Command::new(bin)
        .current_dir(dir.path())
        .args(["check", "-f", "issuer.yaml", "--allow-insecure-http"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(&token), "{text}");

    let out = Command::new(bin)
        .current_dir(dir.path())
        .env("CERTBRIDGE_VAULT_ALLOW_INSECURE_HTTP", "true")
        .args(["sign", "-f", "issuer.yaml", "--csr", "app.csr", "--duration", "24h", "--ca-out", "ca.pem"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let chain = String::from_utf8(out.stdout).unwrap();
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    assert_eq!(pem::parse(&ca).unwrap(), pem::parse(&pki.root_pem).unwrap());
    openssl_verify(&pki.root_pem, &certbridge::Issued { chain_pem: chain.clone(), ca_pem: Some(ca) });
    assert!(!chain.contains(&token) && !stderr.contains(&token));

    // A sealed server: check fails with the reason, non-zero exit.
    bao.seal().await.unwrap();
    let out = Command::new(bin)
        .current_dir(dir.path())
        .args(["check", "-f", "issuer.yaml", "--allow-insecure-http"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("is sealed"), "{text}");
}
