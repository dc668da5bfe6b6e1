//! Our sign path vs. a plain keep-alive HTTP loop, side by side against one OpenBao server.
//!
//!     cargo bench -p certbridge-vault                      # 15 pairs of 200-signature runs
//!     VAULT_BENCH_N=1000 VAULT_BENCH_ROUNDS=7 cargo bench -p certbridge-vault
//!
//! Both sides post the same CSRs with the same body to `pki/sign/web` at concurrency 1 and 8; runs
//! alternate (plain, ours, plain, ours, …) so drift of the shared machine hits both alike. "Ours"
//! is `VaultSigner::sign` with AppRole auth: token cache, body building, error mapping and chain
//! ordering (`Issued::from_pem_bundle`) included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use certbridge::{Issuer, IssuerScope, Resources, SignContext, SignRequest, Signer};
use certbridge_vault::spec::{AppRoleAuth, SecretKeyRef, VaultAuth};
use certbridge_vault::testing::{OpenBao, PKI_MOUNT, ROLE};
use certbridge_vault::{VaultSigner, VaultSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rcgen::{CertificateParams, DnType, KeyPair};
use serde_json::json;

fn csr(i: usize) -> String {
    let key = KeyPair::generate().expect("key");
    let name = format!("bench{i}.example.com");
    let mut p = CertificateParams::new(vec![name.clone()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.serialize_request(&key).expect("csr").pem().expect("pem")
}

/// Runs `n` jobs over `concurrency` workers; returns signatures per second.
async fn run<F, Fut>(n: usize, concurrency: usize, job: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (job, next) = (job.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                job(i).await;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The plain loop: the same body cert-manager sends, keep-alive, answer read as JSON.
async fn plain_pass(
    n: usize,
    concurrency: usize,
    client: reqwest::Client,
    url: String,
    token: String,
    csrs: Arc<Vec<String>>,
) -> f64 {
    run(n, concurrency, move |i| {
        let (client, url, token, csrs) = (client.clone(), url.clone(), token.clone(), csrs.clone());
        async move {
            let body = json!({
                "common_name": format!("bench{i}.example.com"),
                "alt_names": format!("bench{i}.example.com"),
                "ip_sans": "", "uri_sans": "", "ttl": "24h0m0s",
                "csr": csrs[i], "exclude_cn_from_sans": "true",
            });
            let resp = client.post(&url).header("X-Vault-Token", &token).json(&body).send().await.expect("plain sign");
            assert!(resp.status().is_success(), "plain sign: {}", resp.status());
            let v: serde_json::Value = resp.json().await.expect("json");
            assert!(v["data"]["certificate"].is_string());
        }
    })
    .await
}

/// Our path: `VaultSigner::sign` as the controller calls it.
async fn ours_pass(
    n: usize,
    concurrency: usize,
    signer: Arc<VaultSigner>,
    issuer: Arc<Issuer<VaultSpec>>,
    requests: Arc<Vec<SignRequest>>,
    resources: Resources,
) -> f64 {
    run(n, concurrency, move |i| {
        let (signer, issuer, requests, resources) =
            (signer.clone(), issuer.clone(), requests.clone(), resources.clone());
        async move {
            let mut ctx = SignContext::offline(resources);
            signer.sign(&requests[i], &issuer, &mut ctx).await.expect("our sign");
        }
    })
    .await
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("VAULT_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let rounds: usize = std::env::var("VAULT_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let bao = OpenBao::start().await?;
    bao.setup_pki().await?;
    let (role_id, secret_id) = bao.approle("bench", "1h", "24h").await?;
    let token = bao.create_token("1h", true, None).await?;

    eprintln!("generating {n} CSRs");
    let csrs: Arc<Vec<String>> = Arc::new((0..n).map(csr).collect());
    let requests: Arc<Vec<SignRequest>> = Arc::new(
        csrs.iter()
            .map(|c| SignRequest::from_csr_pem::<&str>(c, Duration::from_secs(24 * 3600), false, &[]))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
    );

    let secret = Secret {
        metadata: ObjectMeta { name: Some("approle".into()), namespace: Some("bench".into()), ..Default::default() },
        string_data: Some([("secretId".to_owned(), secret_id)].into()),
        ..Default::default()
    };
    let resources = Resources::from_objects("bench", vec![secret], vec![]);
    let issuer = Arc::new(Issuer {
        name: "vault".into(),
        namespace: Some("bench".into()),
        scope: IssuerScope::Namespaced,
        uid: "bench".into(),
        generation: 1,
        annotations: Default::default(),
        spec: VaultSpec {
            server: bao.addr(),
            path: format!("{PKI_MOUNT}/sign/{ROLE}"),
            auth: VaultAuth {
                app_role: Some(AppRoleAuth {
                    path: "approle".into(),
                    role_id,
                    secret_ref: SecretKeyRef { name: "approle".into(), key: None },
                }),
                ..Default::default()
            },
            ..Default::default()
        },
    });
    let signer = Arc::new(VaultSigner::dev());
    signer.check(&issuer, &resources).await.map_err(|e| anyhow::anyhow!("{e}"))?;

    let plain = reqwest::Client::builder()
        .tls_backend_preconfigured(
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
        .build()?;
    let url = format!("{}/v1/{PKI_MOUNT}/sign/{ROLE}", bao.addr());

    // Warm both paths (connections, token).
    for i in 0..20.min(n) {
        let mut ctx = SignContext::offline(resources.clone());
        signer.sign(&requests[i], &issuer, &mut ctx).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }

    // What the chain handling costs on its own, on a real answer from this server.
    let answer: serde_json::Value = plain
        .post(&url)
        .header("X-Vault-Token", &token)
        .json(&json!({"csr": csrs[0], "common_name": "bench0.example.com", "ttl": "24h"}))
        .send()
        .await?
        .json()
        .await?;
    let d = &answer["data"];
    let mut bundle: String =
        d["ca_chain"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect::<Vec<_>>().join("\n");
    bundle =
        format!("{bundle}\n{}\n{}\n", d["issuing_ca"].as_str().unwrap_or(""), d["certificate"].as_str().unwrap_or(""));
    let t = Instant::now();
    for _ in 0..1000 {
        certbridge::Issued::from_pem_bundle(&bundle).map_err(anyhow::Error::msg)?;
    }
    eprintln!(
        "Issued::from_pem_bundle on a root+intermediate+leaf answer: {:.1} µs per call",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let short = format!("{}\n{}\n", d["certificate"].as_str().unwrap_or(""), d["issuing_ca"].as_str().unwrap_or(""));
    let t = Instant::now();
    for _ in 0..1000 {
        certbridge::Issued::from_pem_bundle(&short).map_err(anyhow::Error::msg)?;
    }
    eprintln!(
        "Issued::from_pem_bundle on leaf+intermediate (the cached path): {:.1} µs per call",
        t.elapsed().as_secs_f64() * 1000.0
    );

    println!(
        "| concurrency | plain HTTP loop (signs/s) | certbridge-vault sign path (signs/s) | ratio (median of pairs) |"
    );
    println!("|---|---|---|---|");
    for concurrency in [1, 8] {
        let (mut plain_rates, mut ours_rates) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which side goes first, so a trend on the shared machine hits both alike.
            let plain_pass = plain_pass(n, concurrency, plain.clone(), url.clone(), token.clone(), csrs.clone());
            let ours_pass =
                ours_pass(n, concurrency, signer.clone(), issuer.clone(), requests.clone(), resources.clone());
            if round % 2 == 0 {
                plain_rates.push(plain_pass.await);
                ours_rates.push(ours_pass.await);
            } else {
                ours_rates.push(ours_pass.await);
                plain_rates.push(plain_pass.await);
            }
        }
        let ratios: Vec<f64> = ours_rates.iter().zip(&plain_rates).map(|(o, p)| o / p).collect();
        let (p, o, r) = (median(plain_rates.clone()), median(ours_rates.clone()), median(ratios.clone()));
        eprintln!(
            "concurrency {concurrency}: plain runs {plain_rates:.0?}, ours runs {ours_rates:.0?}, pair ratios {ratios:.2?}"
        );
        println!("| {concurrency} | {p:.0} | {o:.0} | {r:.2}× |");
    }
    println!(
        "\n{n} signatures per run, {rounds} back-to-back pairs (order alternating); rates are medians, the ratio is the median of the pairs' ratios; tokens issued by Vault for our path: {}",
        bao.token_count().await? - 1
    );
    Ok(())
}
