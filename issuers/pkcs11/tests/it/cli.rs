//! The built binary's offline paths: `certbridge-pkcs11 check -f` and `sign -f --csr`, against the
//! same SoftHSM token (a separate process, as an operator would run it).

use std::path::Path;
use std::process::{Command, Output};

use crate::fixture::*;

fn manifest(dir: &Path, token: &str, module: &str, pin: &str, chain: &str) -> std::path::PathBuf {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let yaml = format!(
        r#"apiVersion: pkcs11.certbridge.io/v1alpha1
kind: Pkcs11Issuer
metadata: {{name: hsm, namespace: {NS}}}
spec:
  module: {module}
  token: {{label: {token}}}
  key: {{label: ca-p256}}
  pinSecretRef: {{name: hsm-pin, key: pin}}
  caChain: {{configMapRef: {{name: ca, key: ca.crt}}}}
  policy: {{maxDuration: 720h}}
---
apiVersion: v1
kind: Secret
metadata: {{name: hsm-pin, namespace: {NS}}}
stringData: {{pin: "{pin}"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ca, namespace: {NS}}}
data:
  ca.crt: |
{}"#,
        indent(chain)
    );
    let path = dir.join(format!("{token}-{pin}.yaml"));
    std::fs::write(&path, yaml).expect("write manifest");
    path
}

fn cli(args: &[&str], file: &Path, allowed: Option<&str>) -> Output {
    // The policy file lives as long as this call: a file shared by every test and rewritten by
    // each was read half-written by another test's binary now and then (nextest runs tests in
    // parallel processes), which failed `check_and_sign_from_a_manifest` once.
    let policy_dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_certbridge-pkcs11"));
    cmd.args(&args[..1]).arg("-f").arg(file).args(&args[1..]);
    cmd.env("SOFTHSM2_CONF", hsm().dir.join("softhsm2.conf"));
    cmd.env("CERTBRIDGE_PKCS11_TOKEN_POLICY", token_policy(policy_dir.path()));
    match allowed {
        Some(a) => cmd.env("CERTBRIDGE_PKCS11_ALLOWED_MODULES", a),
        None => cmd.env_remove("CERTBRIDGE_PKCS11_ALLOWED_MODULES"),
    };
    cmd.output().expect("run certbridge-pkcs11")
}

/// A token policy granting the test namespace every token of the fixture (the manifests are
/// namespaced issuers, which the default policy refuses), written into `dir`.
fn token_policy(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("token-policy.yaml");
    let grants: String = [MAIN, BADPIN, RECOVER, BURST, CTLBAD]
        .iter()
        .map(|t| format!("- namespaces: [{NS}]\n  token: {{label: {t}}}\n"))
        .collect();
    std::fs::write(&path, format!("grants:\n{grants}")).expect("write token policy");
    path
}

#[test]
fn a_namespaced_issuer_needs_a_token_policy_grant() {
    let h = hsm();
    let dir = tempfile::tempdir().unwrap();
    let file = manifest(dir.path(), MAIN, certbridge_pkcs11::module::DEFAULT_MODULE, PIN, &h.ca_pem(MAIN, "p256"));
    let out = Command::new(env!("CARGO_BIN_EXE_certbridge-pkcs11"))
        .args(["check", "-f"])
        .arg(&file)
        .env("SOFTHSM2_CONF", h.dir.join("softhsm2.conf"))
        .env_remove("CERTBRIDGE_PKCS11_TOKEN_POLICY")
        .env_remove("CERTBRIDGE_PKCS11_ALLOWED_MODULES")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("--token-policy") && t.contains("namespace \"team-a\""), "{t}");
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn check_and_sign_from_a_manifest() {
    let h = hsm();
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = h.ca_pem(MAIN, "p256");
    let m = manifest(dir.path(), MAIN, certbridge_pkcs11::module::DEFAULT_MODULE, PIN, &ca_pem);

    let out = cli(&["check"], &m, None);
    assert!(out.status.success(), "check failed: {}", text(&out));

    let csr = dir.path().join("csr.pem");
    std::fs::write(&csr, openssl_csr("ec:P-384", "/CN=cli.example.com", "DNS:cli.example.com,IP:192.0.2.5")).unwrap();
    let ca_out = dir.path().join("ca-out.pem");
    let csr_arg = csr.to_str().unwrap();
    let ca_arg = ca_out.to_str().unwrap();
    let out =
        cli(&["sign", "--csr", csr_arg, "--duration", "24h", "--usage", "server auth", "--ca-out", ca_arg], &m, None);
    assert!(out.status.success(), "sign failed: {}", text(&out));
    let written = std::fs::read_to_string(&ca_out).unwrap();
    let issued =
        certbridge::Issued { chain_pem: String::from_utf8(out.stdout).unwrap(), ca_pem: Some(written.clone()) };
    openssl_verify(&ca_pem, &issued).unwrap();
    assert_eq!(pem::parse(&written).unwrap().contents(), pem::parse(&ca_pem).unwrap().contents());
    let req = request(&std::fs::read_to_string(&csr).unwrap(), 24, false, &["server auth"]);
    crate::matrix::check_leaf(&issued, &ca_pem, &req);

    // Over the policy cap: refused, nothing printed on stdout.
    let out = cli(&["sign", "--csr", csr_arg, "--duration", "1000h"], &m, None);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no half-written output");
    assert!(text(&out).contains("spec.policy.maxDuration"), "{}", text(&out));
}

#[test]
fn check_fails_clearly_for_a_wrong_pin_and_a_module_not_allowed() {
    let h = hsm();
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = h.ca_pem(BADPIN, "p256");
    let m = manifest(dir.path(), BADPIN, certbridge_pkcs11::module::DEFAULT_MODULE, "31337", &ca_pem);
    let out = cli(&["check"], &m, None);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("user PIN in spec.pinSecretRef is incorrect"), "{t}");
    assert!(!t.contains("31337"), "the PIN is never printed: {t}");

    let m = manifest(dir.path(), MAIN, certbridge_pkcs11::module::DEFAULT_MODULE, PIN, &h.ca_pem(MAIN, "p256"));
    let out = cli(&["check"], &m, Some("/opt/vendor/libcknfast.so"));
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("is not allowed by this controller") && t.contains("/opt/vendor/libcknfast.so"), "{t}");
}

#[test]
fn allowed_module_flag_overrides_the_default_and_is_validated() {
    let h = hsm();
    let dir = tempfile::tempdir().unwrap();
    // The issuer names the module through a symlink that only the flag allows.
    let link = dir.path().join("vendor-hsm.so");
    std::os::unix::fs::symlink(certbridge_pkcs11::module::DEFAULT_MODULE, &link).unwrap();
    let link = link.to_str().unwrap();
    let m = manifest(dir.path(), MAIN, link, PIN, &h.ca_pem(MAIN, "p256"));
    let out = cli(&["check", "--allowed-module", "/opt/other.so", "--allowed-module", link], &m, None);
    assert!(out.status.success(), "check with --allowed-module failed: {}", text(&out));

    // The flag replaces the default list: SoftHSM's own path is no longer allowed.
    let m = manifest(dir.path(), MAIN, certbridge_pkcs11::module::DEFAULT_MODULE, PIN, &h.ca_pem(MAIN, "p256"));
    let out = cli(&["check", "--allowed-module", "/opt/vendor/libcknfast.so"], &m, None);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("is not allowed by this controller") && t.contains("--allowed-module"), "{t}");

    let out = cli(&["check", "--allowed-module", "libsofthsm2.so"], &m, None);
    assert_eq!(out.status.code(), Some(2), "a bad flag is a usage error: {}", text(&out));
    let t = text(&out);
    assert!(t.contains("--allowed-module libsofthsm2.so") && t.contains("absolute path"), "{t}");
}
