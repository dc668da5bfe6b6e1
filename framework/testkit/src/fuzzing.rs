//! Entry points for the `fuzz/` crate and its corpus replay: kube-sim's request-body decoding
//! (JSON, YAML, protobuf) and patch application, exactly as the REST handlers run them.
//! Not an API for tests; hidden from the docs.

use serde_json::Value;

/// Decodes a request body of `content_type` the way kube-sim's handlers do.
pub fn decode_body(content_type: &str, body: &[u8]) -> Result<Value, String> {
    match content_type {
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(body),
        "application/yaml" => serde_yaml::from_slice(body).map_err(|e| e.to_string()),
        _ => serde_json::from_slice(body).map_err(|e| e.to_string()),
    }
}

/// Applies `patch` to `target` as a JSON patch, a merge patch and a strategic-merge patch.
pub fn apply_patches(target: &Value, patch: &[u8]) {
    let mut t = target.clone();
    let _ = crate::patch::json_patch(&mut t, patch);
    if let Ok(p) = serde_json::from_slice::<Value>(patch) {
        let mut t = target.clone();
        crate::patch::merge_patch(&mut t, &p);
        let mut t = target.clone();
        crate::patch::strategic(&mut t, &p, None);
    }
}
