// The body of each fuzz target: shared by the cargo-fuzz binaries (fuzz/src/lib.rs) and the
// corpus replay test in the workspace (tests/e2e/fuzz_corpus.rs `include!`s this file), so CI
// replays exactly what was fuzzed. Each must return without panicking for any input.

/// CSR PEM or DER → `SignRequest` (parse, verify the signature, usage defaults).
pub fn csr(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = certbridge::SignRequest::from_csr_pem::<&str>(&text, std::time::Duration::from_secs(3600), false, &[]);
    let _ = certbridge::SignRequest::from_csr_pem(&text, std::time::Duration::from_secs(3600), true, &["server auth"]);
    let _ = certbridge::Csr::from_der(data);
}

/// PEM bundle and DER list → `Issued` (chain parsing and ordering), then its accessors.
pub fn chain(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(issued) = certbridge::pki::Issued::from_pem_bundle(&text) {
        let _ = issued.leaf_public_key_der();
    }
    // The same bytes cut into DER certificates at every 0xff (any split will do).
    let ders: Vec<Vec<u8>> = data.split(|b| *b == 0xff).map(<[u8]>::to_vec).collect();
    if let Ok(issued) = certbridge::pki::Issued::from_der_certs(ders) {
        let _ = issued.leaf_public_key_der();
    }
}

/// EJBCA's enrollment/search answer (JSON) → certificate and chain DER.
pub fn ejbca_response(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<certbridge_ejbca::client::CertificateResponse>(data) {
        let _ = r.decode();
    }
}

/// kube-sim's request bodies: the first byte picks the content type; JSON bodies are also
/// applied as JSON, merge and strategic-merge patches to a fixed object.
pub fn kube_sim_body(data: &[u8]) {
    let Some((first, body)) = data.split_first() else { return };
    let content_type = match first % 3 {
        0 => "application/json",
        1 => "application/yaml",
        _ => "application/vnd.kubernetes.protobuf",
    };
    let _ = certbridge_testkit::fuzzing::decode_body(content_type, body);
    if first % 3 == 0 {
        let target = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "labels": {"a": "b"}, "finalizers": ["f"]},
            "data": {"k": "v"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]},
        });
        certbridge_testkit::fuzzing::apply_patches(&target, body);
    }
}

/// AD CS certsrv answers: the page as HTML (submit, status and `certcarc.asp` readers), and the
/// same bytes as a `certnew.p7b` bag (PEM of any label, bare base64 or DER) → `Issued`.
pub fn adcs_page(data: &[u8]) {
    use certbridge_adcs::pages;
    let html = String::from_utf8_lossy(data);
    let _ = pages::parse_submit(&html);
    let _ = pages::parse_status(&html);
    let _ = pages::parse_renewals(&html);
    if let Ok(ders) = pages::parse_pkcs7(data) {
        let _ = certbridge::pki::Issued::from_der_certs(ders);
    }
}

/// Venafi answers (TPP WebSDK and TLS Protect Cloud JSON). The first byte picks the HTTP status
/// and whether the status line carried a reason phrase; the rest is the body, fed to every
/// answer reader the signer uses, and an issued bundle on to `Issued::from_pem_bundle`.
pub fn venafi_response(data: &[u8]) {
    use certbridge_venafi::{client, cloud, http};
    let Some((first, body)) = data.split_first() else { return };
    const STATUSES: [u16; 8] = [200, 201, 202, 400, 401, 409, 500, 503];
    let status = STATUSES[usize::from(first & 7)];
    let reason = (first & 8 != 0).then(|| "Certificate is being processed".to_owned());
    let a = http::Answer { status, reason, body: body.to_vec() };
    let _ = client::check_policy_answer(&a);
    let _ = client::request_answer(&a);
    if let Ok(client::Retrieved::Issued(pem)) = client::retrieve_answer(&a) {
        let _ = certbridge::pki::Issued::from_pem_bundle(&pem);
    }
    let _ = cloud::request_answer(&a);
    let _ = http::json::<cloud::RequestStatus>(&a, &[200], &["secret"]);
    let _ = http::error_text(&a, &["secret"]);
    if let Ok(Some(pem)) = cloud::contents_answer(a) {
        let _ = certbridge::pki::Issued::from_pem_bundle(&pem);
    }
}
