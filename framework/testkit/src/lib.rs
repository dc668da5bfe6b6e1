//! `certbridge-testkit`: an embedded Kubernetes API server for tests.
//!
//! [`KubeSim`] serves the Kubernetes REST API on 127.0.0.1 with in-memory state, over plain
//! HTTP by default or HTTPS on request (see [TLS mode](#tls-mode)), faithfully enough that
//! kube-rs (client, watcher, `Controller`, `Recorder`, kube-lease-manager) and kubectl run
//! against it unmodified: discovery, CRDs with structural-schema
//! pruning/defaulting/validation, resourceVersion/conflict semantics,
//! watches with bookmarks and 410 Gone, status subresources, server-side apply with
//! managedFields and conflicts, merge/JSON/strategic patches, selectors, finalizers,
//! TokenRequest/TokenReview, SubjectAccessReview with RBAC evaluation (Roles, ClusterRoles
//! and their bindings, for resource and non-resource URLs) and CertificateSigningRequest
//! approval.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = certbridge_testkit::KubeSim::start().await?;
//! sim.install_cert_manager_crds().await?;
//! let client = sim.client();
//! # let _ = client; Ok(()) }
//! ```
//!
//! # TLS mode
//!
//! [`KubeSim::start_tls`] (or [`SimOptions::tls`], or `kube-sim --tls`) serves HTTPS only,
//! like a real API server. At start it generates a throwaway CA (ECDSA P-256, in memory only)
//! and a serving certificate for `localhost`, `127.0.0.1`, `::1` and the bound address. The
//! kubeconfig it writes carries an `https://` server URL and the CA as
//! `certificate-authority-data`, so kubectl and `kube::Config::from_custom_kubeconfig` verify
//! the server; [`KubeSim::client`] trusts exactly that CA; [`KubeSim::ca_pem`] gives it to
//! anything else. A client that does not trust the CA, or that speaks plain HTTP to the TLS
//! port, fails its handshake: there is no fallback to plain HTTP.
//!
//! What is *not* checked: clients are not authenticated at all (no client certificates, no
//! bearer-token checks, no authorization of kube-sim's own callers — SubjectAccessReview
//! answers questions about others), as in plain mode. The TLS kubeconfig's user carries
//! the placeholder token `kube-sim` only because kubectl prompts for a username when an HTTPS
//! cluster's user has no credentials. ALPN offers `http/1.1` only (real API servers also
//! offer h2); TLS 1.2 and 1.3 are accepted. A fresh CA is made for
//! every server, so a kubeconfig is only valid for the server that wrote it.

mod apply;
mod builtin;
pub mod chaos;
mod crd;
mod discovery;
pub mod endless;
mod error;
mod events;
pub mod fault_proxy;
mod faults;
#[doc(hidden)]
pub mod fuzzing;
pub mod leaks;
mod managed;
mod objects;
mod openapi;
mod patch;
mod protobuf;
mod rbac;
mod resources;
mod rest;
mod schema;
mod selector;
mod server;
mod store;
mod table;
mod tls;
mod token;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use faults::{FaultAction, FaultId, FaultRule, Faults, Verb};

/// The real cert-manager CRDs (CertificateRequest and Certificate) as one multi-document YAML.
pub const CERT_MANAGER_CRDS: &str = concat!(
    include_str!("../crds/cert-manager.io_certificaterequests.yaml"),
    "\n---\n",
    include_str!("../crds/cert-manager.io_certificates.yaml"),
);

/// Options for [`KubeSim::start_with`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Listen address; port 0 picks a free port.
    pub addr: SocketAddr,
    /// How many changes are kept for watches resuming from an old resourceVersion;
    /// older resourceVersions get 410 Gone.
    pub watch_history: usize,
    /// How often watches that asked for bookmarks receive one.
    pub bookmark_interval: Duration,
    /// Namespaces that exist at start.
    pub namespaces: Vec<String>,
    /// `iss` of service-account tokens.
    pub token_issuer: String,
    /// Audiences used when a TokenRequest or TokenReview names none.
    pub api_audiences: Vec<String>,
    /// Serve HTTPS with a throwaway CA instead of plain HTTP (see [TLS mode](crate#tls-mode)).
    pub tls: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(1),
            namespaces: vec!["default".into(), "kube-system".into(), "kube-public".into(), "cert-manager".into()],
            token_issuer: "https://kubernetes.default.svc.cluster.local".into(),
            api_audiences: vec!["https://kubernetes.default.svc.cluster.local".into()],
            tls: false,
        }
    }
}

/// A running embedded API server. Dropping it without [`KubeSim::shutdown`] also stops
/// the server (the background task is cancelled).
pub struct KubeSim {
    addr: SocketAddr,
    tls: Option<tls::TlsMaterial>,
    shared: Arc<server::Shared>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl KubeSim {
    /// Starts a server with default options.
    pub async fn start() -> anyhow::Result<KubeSim> {
        Self::start_with(SimOptions::default()).await
    }

    /// Starts an HTTPS-only server with default options and a fresh throwaway CA
    /// (see [TLS mode](crate#tls-mode)).
    pub async fn start_tls() -> anyhow::Result<KubeSim> {
        Self::start_with(SimOptions { tls: true, ..SimOptions::default() }).await
    }

    /// Starts a server; it accepts requests once this returns.
    pub async fn start_with(opts: SimOptions) -> anyhow::Result<KubeSim> {
        let listener =
            tokio::net::TcpListener::bind(opts.addr).await.with_context(|| format!("binding {}", opts.addr))?;
        let addr = listener.local_addr()?;
        let tls = if opts.tls { Some(tls::TlsMaterial::generate(addr.ip())?) } else { None };
        let base_url = format!("{}://{addr}", scheme(tls.is_some()));
        let shutdown = CancellationToken::new();
        let (tx, _) = broadcast::channel(16 * 1024);
        let store = store::Store::new(builtin::registry(), opts.watch_history, tx);
        let signer = token::TokenSigner::new(opts.token_issuer.clone(), opts.api_audiences.clone())?;
        let faults = Faults::new(&shutdown);
        let shared =
            Arc::new(server::Shared::new(store, faults, shutdown.clone(), opts.bookmark_interval, signer, base_url));
        for ns in &opts.namespaces {
            internal_create(
                &shared,
                "",
                "v1",
                "namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )?;
        }
        let app = server::router(shared.clone());
        let stop = shutdown.clone();
        let task = match &tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
            }),
            Some(material) => {
                let listener = material.listener(listener, shutdown.clone())?;
                tokio::spawn(async move {
                    let _ =
                        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
                })
            }
        };
        Ok(KubeSim { addr, tls, shared, shutdown, task: Some(task) })
    }

    /// Base URL, e.g. `http://127.0.0.1:43123`, or `https://…` in TLS mode.
    pub fn url(&self) -> String {
        format!("{}://{}", scheme(self.tls.is_some()), self.addr)
    }

    /// The CA that signed the serving certificate (PEM), in TLS mode; `None` for plain HTTP.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kube-rs client for this server with default namespace `default`; in TLS mode it
    /// trusts this server's CA and nothing else.
    pub fn client(&self) -> kube::Client {
        let url: axum::http::Uri = self.url().parse().expect("own URL is valid");
        let mut config = kube::Config::new(url);
        if let Some(t) = &self.tls {
            // kube-rs builds its rustls config from the process-wide provider; rustls can only
            // pick one by itself when exactly one is compiled in, so name ring (the workspace's).
            let _ = rustls::crypto::ring::default_provider().install_default();
            config.root_cert = Some(vec![t.ca_der.clone()]);
        }
        kube::Client::try_from(config).expect("kube client for kube-sim builds")
    }

    /// A kubeconfig (context `kube-sim`, namespace `default`, no credentials); in TLS mode
    /// see [`kubeconfig_with_ca`].
    pub fn kubeconfig_yaml(&self) -> String {
        match self.ca_pem() {
            None => kubeconfig_for(&self.url()),
            Some(ca) => kubeconfig_with_ca(&self.url(), ca),
        }
    }

    /// Writes [`KubeSim::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml()).with_context(|| format!("writing {}", path.display()))
    }

    /// Creates (or replaces) every CustomResourceDefinition in a multi-document YAML; each
    /// resource is served when this returns.
    pub async fn install_crds_yaml(&self, yaml: &str) -> anyhow::Result<()> {
        install_crds(&self.shared, yaml)
    }

    /// Installs the embedded cert-manager CRDs ([`CERT_MANAGER_CRDS`]).
    pub async fn install_cert_manager_crds(&self) -> anyhow::Result<()> {
        self.install_crds_yaml(CERT_MANAGER_CRDS).await
    }

    /// Fault injection, watch dropping and request counters.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Stops serving and closes all watches.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A kubeconfig pointing at `url`.
pub fn kubeconfig_for(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\ncurrent-context: kube-sim\nusers:\n- name: kube-sim\n  user: {{}}\npreferences: {{}}\n"
    )
}

/// A kubeconfig pointing at `url` whose server certificate must chain to `ca_pem`.
///
/// Its user has the bearer token `kube-sim`, which nothing checks: kubectl asks for a username
/// on stdin when an HTTPS cluster's user has no credentials at all.
pub fn kubeconfig_with_ca(url: &str, ca_pem: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\ncurrent-context: kube-sim\nusers:\n- name: kube-sim\n  user:\n    token: kube-sim\npreferences: {{}}\n"
    )
}

fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// Runs a create through the normal write pipeline without HTTP.
fn internal_create(
    shared: &server::Shared,
    group: &str,
    version: &str,
    plural: &str,
    obj: Value,
) -> anyhow::Result<Value> {
    let mut store = shared.lock();
    let def = store.registry.lookup(group, version, plural).context("unknown resource")?;
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).map(String::from);
    let req = rest::Req {
        def,
        version: version.into(),
        ns,
        name: None,
        sub: String::new(),
        query: Default::default(),
        body: serde_json::to_vec(&obj)?.into(),
        content_type: "application/json".into(),
        user_agent: "kube-sim".into(),
        wants_table: false,
    };
    let (_, v) = rest::create(&mut store, &req).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(v)
}

fn install_crds(shared: &server::Shared, yaml: &str) -> anyhow::Result<()> {
    use serde::Deserialize as _;
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc).context("parsing CRD YAML")?;
        if v.is_null() {
            continue;
        }
        if v["kind"] != "CustomResourceDefinition" {
            anyhow::bail!("not a CustomResourceDefinition: kind {}", v["kind"]);
        }
        let name =
            v.pointer("/metadata/name").and_then(Value::as_str).context("CRD without metadata.name")?.to_string();
        let existing = {
            let store = shared.lock();
            let key =
                resources::ResKey { group: "apiextensions.k8s.io".into(), plural: "customresourcedefinitions".into() };
            store.get(&key, "", &name).cloned()
        };
        match existing {
            None => {
                internal_create(shared, "apiextensions.k8s.io", "v1", "customresourcedefinitions", v)?;
            }
            Some(old) => {
                let mut store = shared.lock();
                let def = store
                    .registry
                    .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
                    .context("CRD resource")?;
                let mut body = v.clone();
                body["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                let req = rest::Req {
                    def,
                    version: "v1".into(),
                    ns: None,
                    name: Some(name),
                    sub: String::new(),
                    query: Default::default(),
                    body: serde_json::to_vec(&body)?.into(),
                    content_type: "application/json".into(),
                    user_agent: "kube-sim".into(),
                    wants_table: false,
                };
                rest::update(&mut store, &req).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
    }
    Ok(())
}
