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
