//! The CA fault matrix for EJBCA (a measurement, not a CI test: `#[ignore]`). The real
//! controllers (in process, default options) on kube-sim sign at the EJBCA simulator through the
//! fault proxy (HTTPS on both sides, OAuth bearer tokens). For each fault: switch it on for every
//! request, create a request, watch the request's and the issuer's Ready conditions for
//! `FAULT_WINDOW`, count the requests that reached the proxy meanwhile, switch the fault off and
//! time how long until the request is Ready. Prints a Markdown table (and writes it to
//! `$MATRIX_OUT` when set); RELIABILITY.md has the command and the last table.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use certbridge::api::CertificateRequest;
use certbridge::runtime::Options;
use certbridge::testing::matrix::ready_state;
use certbridge::testing::{
    approve, certificate_request, create_certificate_request, create_issuer, generate_csr, install_crds, issuer_api,
};
use certbridge::{IssuerScope, KeyKind};
use certbridge_ejbca::{EjbcaIssuerSpec, EjbcaSigner};
use certbridge_testkit::KubeSim;
use certbridge_testkit::fault_proxy::{Fault, FaultProxy, ProxyOptions, UpstreamTls};
use kube::api::{Api, PostParams};

use crate::common::{NS, config_map, secret, sim, spec};

const FAULT_WINDOW: Duration = Duration::from_secs(8);
const RECOVERY_CAP: Duration = Duration::from_secs(60);

fn faults(replacement: Arc<Mutex<String>>) -> Vec<Fault> {
    let other_key = Fault::replace_json(
        &["pkcs10enroll", "finalize", "search"],
        &["certificate", "certificates/*/certificate"],
        replacement,
    );
    vec![
        Fault::Refuse,
        Fault::Blackhole,
        Fault::TlsAlert,
        Fault::Reset,
        Fault::Status { code: 500, retry_after: None },
        Fault::Status { code: 502, retry_after: None },
        Fault::Status { code: 503, retry_after: None },
        Fault::Status { code: 504, retry_after: None },
        Fault::Status { code: 429, retry_after: Some(Duration::from_secs(5)) },
        Fault::SlowDrip { interval: Duration::from_secs(1) },
        Fault::Truncate,
        Fault::Garbage,
        other_key,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement (~4 min): the EJBCA fault matrix; see RELIABILITY.md"]
async fn ejbca_fault_matrix() {
    let mut opts = certbridge_testkit::SimOptions::default();
    opts.namespaces.push(NS.into());
    let kube = KubeSim::start_with(opts).await.unwrap();
    kube.install_cert_manager_crds().await.unwrap();
    let client = kube.client();
    install_crds::<EjbcaIssuerSpec>(&client).await.unwrap();
    let ejbca = sim().await;
    let upstream = UpstreamTls { roots_pem: ejbca.root_pem(), server_name: "127.0.0.1".into(), identity: None };
    let addr: std::net::SocketAddr = ejbca.host().parse().unwrap();
    let proxy = FaultProxy::start(ProxyOptions::https(addr, upstream)).await.unwrap();
    let (id, secret_value) = ejbca.oauth_client();
    let token_url = format!("https://{}/oauth/token", proxy.addr());
    let creds = secret(
        "creds",
        &[("tokenUrl", &token_url), ("clientId", &id), ("clientSecret", &secret_value), ("scopes", "ejbca:enroll")],
    );
    Api::namespaced(client.clone(), NS).create(&PostParams::default(), &creds).await.unwrap();
    let cm = config_map("ejbca-ca", "ca.crt", proxy.ca_pem().unwrap());
    Api::namespaced(client.clone(), NS).create(&PostParams::default(), &cm).await.unwrap();
    let mut issuer_spec = spec(&ejbca);
    issuer_spec.hostname = proxy.addr().to_string();
    create_issuer(&client, IssuerScope::Namespaced, NS, "ejbca", &issuer_spec).await.unwrap();
    let handle = certbridge::runtime::start(EjbcaSigner::new(), client.clone(), Options::default()).await.unwrap();
    let issuers = issuer_api::<EjbcaIssuerSpec>(&client, IssuerScope::Namespaced, NS);
    let requests: Api<CertificateRequest> = Api::namespaced(client.clone(), NS);

    let create = async |name: &str| {
        let (csr, _) = generate_csr(&KeyKind::EcP256, &[&format!("{name}.example")]).unwrap();
        let cr = certificate_request::<EjbcaIssuerSpec>(NS, name, &csr, IssuerScope::Namespaced, "ejbca");
        create_certificate_request(&client, &cr).await.unwrap();
        approve(&client, NS, name).await.unwrap();
        csr
    };
    // Whether the request's leaf carries its CSR's key.
    let right_key = async |name: &str, csr: &str| {
        let cr = requests.get(name).await.unwrap();
        let chain = String::from_utf8(cr.status.unwrap().certificate.unwrap().0).unwrap();
        let issued = certbridge::Issued { chain_pem: chain, ca_pem: None };
        issued.leaf_public_key_der().ok() == Some(certbridge::Csr::from_pem(csr).unwrap().public_key_der)
    };
    let ready = async |name: &str| {
        let cr = requests.get(name).await.unwrap();
        cr.condition("Ready").is_some_and(|c| c.status == "True")
    };
    // A baseline request; its certificate is the "certificate for another key" of the last row.
    create("baseline").await;
    let t = Instant::now();
    while !ready("baseline").await {
        assert!(t.elapsed() < RECOVERY_CAP, "baseline never Ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let baseline = requests.get("baseline").await.unwrap();
    let chain = baseline.status.unwrap().certificate.unwrap().0;
    let leaf = certbridge::pki::Issued::from_pem_bundle(&String::from_utf8(chain).unwrap()).unwrap();
    let leaf_der = pem::parse_many(&leaf.chain_pem).unwrap()[0].contents().to_vec();
    let replacement = Arc::new(Mutex::new(base64::engine::general_purpose::STANDARD.encode(leaf_der)));

    let mut table = String::from(
        "| fault | request Ready during the fault | issuer Ready during the fault | requests to EJBCA during the fault (enroll / search / other) | Ready after the fault cleared | certificates issued |\n|---|---|---|---|---|---|\n",
    );
    for (i, fault) in faults(replacement).into_iter().enumerate() {
        let name = format!("m{i:02}-{}", fault.name().replace(['_', '.'], "-"));
        let seen_before = proxy.seen().len();
        let issued_before = ejbca.enrollments();
        proxy.set(fault.clone());
        let csr = create(&name).await;
        let t = Instant::now();
        let (mut req_states, mut iss_states) = (Vec::<String>::new(), Vec::<String>::new());
        while t.elapsed() < FAULT_WINDOW {
            let cr = serde_json::to_value(requests.get(&name).await.unwrap()).unwrap();
            let iss = issuers.get("ejbca").await.unwrap().data;
            for (v, list) in [(ready_state(&cr).0, &mut req_states), (ready_state(&iss).0, &mut iss_states)] {
                if list.last() != Some(&v) {
                    list.push(v);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let during: Vec<_> = proxy.seen()[seen_before..].to_vec();
        let count = |p: &str| during.iter().filter(|s| s.path.contains(p)).count();
        let (enroll, search) = (count("pkcs10enroll") + count("finalize"), count("search"));
        let other = during.len() - enroll - search;
        proxy.clear();
        let cleared = Instant::now();
        let recovered = loop {
            if ready(&name).await {
                let wrong = if right_key(&name, &csr).await { "" } else { " — WRONG KEY" };
                break format!("{:.1} s{wrong}", cleared.elapsed().as_secs_f64());
            }
            if cleared.elapsed() > RECOVERY_CAP {
                let cr = serde_json::to_value(requests.get(&name).await.unwrap()).unwrap();
                break format!("not within {} s ({})", RECOVERY_CAP.as_secs(), ready_state(&cr).0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let issued = ejbca.enrollments() - issued_before;
        let row = format!(
            "| {} | {} | {} | {enroll} / {search} / {other} | {recovered} | {issued} |\n",
            fault.name(),
            req_states.join(" → "),
            iss_states.join(" → "),
        );
        eprint!("{row}");
        table.push_str(&row);
    }
    println!("\n{table}");
    if let Ok(path) = std::env::var("MATRIX_OUT") {
        std::fs::write(path, &table).unwrap();
    }
    handle.shutdown().await;
    kube.shutdown().await;
}
