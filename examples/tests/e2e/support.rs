//! Test equipment: a CA and CSRs made by the real openssl CLI, and `openssl verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Runs openssl in `dir`; panics with the fix when it is missing or fails.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): run ./scripts/test.sh, which installs it"));
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A self-signed CA made by openssl: `ca.crt` and its key `ca.key` (PKCS#8) in a temp dir.
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new(key_alg: &[&str]) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["req", "-x509", "-newkey"];
        args.extend_from_slice(key_alg);
        args.extend_from_slice(&[
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "30",
            "-subj",
            "/CN=certbridge test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir.path(), &args);
        TestCa { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap()
    }

    /// A kubernetes.io/tls Secret with this CA.
    pub fn secret(&self, namespace: &str, name: &str) -> Secret {
        tls_secret(namespace, name, &self.read("ca.crt"), &self.read("ca.key"))
    }

    /// A fresh key and CSR for `cn` with DNS SANs; returns the CSR PEM (the key stays in the dir as `<cn>.key`).
    pub fn csr(&self, cn: &str, dns: &[&str]) -> String {
        let san = format!("subjectAltName={}", dns.iter().map(|d| format!("DNS:{d}")).collect::<Vec<_>>().join(","));
        let (key, csr) = (format!("{cn}.key"), format!("{cn}.csr"));
        openssl(
            self.dir.path(),
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                &san,
            ],
        );
        self.read(&csr)
    }

    /// Writes `chain` and asserts `openssl verify` accepts it against this CA and that the leaf carries
    /// the public key of `<cn>.key`.
    pub fn assert_verifies(&self, cn: &str, chain: &str) {
        std::fs::write(self.path(&format!("{cn}.crt")), chain).unwrap();
        let out = openssl(self.dir.path(), &["verify", "-CAfile", "ca.crt", &format!("{cn}.crt")]);
        assert!(out.contains(": OK"), "{out}");
        let from_cert = openssl(self.dir.path(), &["x509", "-in", &format!("{cn}.crt"), "-noout", "-pubkey"]);
        let from_key = openssl(self.dir.path(), &["pkey", "-in", &format!("{cn}.key"), "-pubout"]);
        assert_eq!(from_cert, from_key, "the leaf's key is the CSR's");
    }
}

pub fn tls_secret(namespace: &str, name: &str, crt: &str, key: &str) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(namespace.into()), ..Default::default() },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [("tls.crt", crt), ("tls.key", key)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Runs kubectl against `kubeconfig`; panics with its stderr on failure.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl ({e}): put kubectl >= 1.27 on PATH"));
    assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
