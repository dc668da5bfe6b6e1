//! Request and response validation against EJBCA's OpenAPI spec (`spec/ejbca-rest-openapi.yaml`,
//! embedded at build time), plus the documented deltas between that spec and EJBCA's code.
//!
//! Only the subset of OpenAPI the spec uses is implemented: path templates, `$ref` to
//! `#/components/schemas`, `type`, `format: int32`, `enum`, `properties`, `items`, `required`.
//! The validator is *stricter* than EJBCA on purpose: a property the spec does not list (and no
//! delta allows) is an error, because EJBCA would silently ignore it and a typo would go unseen.

use std::collections::BTreeMap;

use serde_json::Value;

/// The vendored spec.
pub const SPEC_YAML: &str = include_str!("../../spec/ejbca-rest-openapi.yaml");

/// A request matched to an operation of the spec.
#[derive(Debug, Clone)]
pub struct Route {
    /// `operationId`, e.g. `enrollPkcs10Certificate`.
    pub operation_id: String,
    /// Path template, e.g. `/v1/certificate/{request_id}/finalize`.
    pub template: String,
    /// Path parameters, percent-decoded.
    pub params: BTreeMap<String, String>,
    operation: Value,
}

/// The loaded spec.
pub struct OpenApi {
    doc: Value,
    base: String,
}

/// Request properties current EJBCA accepts that the spec does not list (EJBCA-ce
/// `EnrollCertificateRestRequest.java` @1cb1f428).
fn extra_request_properties(operation_id: &str) -> &'static [(&'static str, &'static str)] {
    match operation_id {
        "enrollPkcs10Certificate" => &[
            ("response_format", "string"),
            ("start_time", "string"),
            ("end_time", "string"),
            ("subject_dn", "string"),
            ("extension_data", "array"),
            ("custom_data", "array"),
        ],
        _ => &[],
    }
}

/// Fields EJBCA needs although the spec marks nothing as required.
fn required_request_properties(operation_id: &str) -> &'static [&'static str] {
    match operation_id {
        "enrollPkcs10Certificate" => &[
            "certificate_request",
            "certificate_profile_name",
            "end_entity_profile_name",
            "certificate_authority_name",
            "username",
        ],
        "searchCertificates" => &["max_number_of_results", "criteria"],
        "finalizeEnrollment" => &["response_format", "password"],
        _ => &[],
    }
}

impl OpenApi {
    /// Parses the embedded spec.
    pub fn load() -> Result<OpenApi, String> {
        let doc: Value =
            serde_yaml::from_str(SPEC_YAML).map_err(|e| format!("the OpenAPI spec does not parse: {e}"))?;
        let base = doc["servers"][0]["url"].as_str().ok_or("the OpenAPI spec has no servers[0].url")?.to_owned();
        Ok(OpenApi { doc, base })
    }

    /// The base path (`/ejbca/ejbca-rest-api`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Every `(method, template)` the spec documents.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        if let Some(paths) = self.doc["paths"].as_object() {
            for (template, item) in paths {
                for method in item.as_object().into_iter().flat_map(|o| o.keys()) {
                    out.push((method.to_uppercase(), template.clone()));
                }
            }
        }
        out
    }

    /// Finds the operation for `method` + `path` (a full path including the base). `Err` is the
    /// HTTP status and message the server answers (404 unknown path, 405 wrong method).
    pub fn route(&self, method: &str, path: &str) -> Result<Route, (u16, String)> {
        let rel = path.strip_prefix(&self.base).ok_or((404, format!("{path} is not under {}", self.base)))?;
        let segs: Vec<&str> = rel.split('/').collect();
        let paths = self.doc["paths"].as_object().ok_or((500, "spec has no paths".to_owned()))?;
        let mut matched_path = false;
        // Literal segments win over templates (`/v1/ca/status` vs `/v1/ca/{subject_dn}/...`).
        let mut candidates: Vec<(&String, &Value, usize)> = vec![];
        for (template, item) in paths {
            let tsegs: Vec<&str> = template.split('/').collect();
            if tsegs.len() != segs.len() {
                continue;
            }
            let mut literal = 0;
            let ok = tsegs.iter().zip(&segs).all(|(t, s)| {
                if t.starts_with('{') && t.ends_with('}') {
                    !s.is_empty()
                } else {
                    literal += 1;
                    t == s
                }
            });
            if ok {
                candidates.push((template, item, literal));
            }
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.2));
        for (template, item, _) in candidates {
            matched_path = true;
            let Some(op) = item.get(method.to_ascii_lowercase()) else { continue };
            let mut params = BTreeMap::new();
            for (t, s) in template.split('/').zip(&segs) {
                if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    let v = percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
                    params.insert(name.to_owned(), v);
                }
            }
            let route = Route {
                operation_id: op["operationId"].as_str().unwrap_or_default().to_owned(),
                template: template.clone(),
                params,
                operation: op.clone(),
            };
            self.check_path_params(&route).map_err(|m| (404, m))?;
            return Ok(route);
        }
        if matched_path {
            Err((405, format!("{method} is not allowed on {path}")))
        } else {
            Err((404, format!("no resource at {path}")))
        }
    }

    fn check_path_params(&self, route: &Route) -> Result<(), String> {
        for p in route.operation["parameters"].as_array().into_iter().flatten() {
            if p["in"] != "path" {
                continue;
            }
            let name = p["name"].as_str().unwrap_or_default();
            let value = route.params.get(name).ok_or(format!("path parameter {name} missing"))?;
            if p["schema"]["type"] == "integer" && value.parse::<i32>().is_err() {
                return Err(format!("path parameter {name}={value:?} is not an int32"));
            }
        }
        Ok(())
    }

    /// Validates a request body. Returns the parsed JSON (if the operation takes one).
    pub fn check_request(
        &self,
        route: &Route,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Option<Value>, String> {
        let Some(schema) = route.operation["requestBody"]["content"]["application/json"].get("schema") else {
            if !body.is_empty() && route.operation.get("requestBody").is_none() {
                return Err(format!("{} takes no request body", route.operation_id));
            }
            return Ok(None);
        };
        if !content_type
            .is_some_and(|c| c.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")))
        {
            return Err(format!("{} needs Content-Type application/json, got {content_type:?}", route.operation_id));
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("request body is not JSON: {e}"))?;
        let schema = self.resolve(schema)?;
        let obj = value.as_object().ok_or("request body is not a JSON object")?;
        for req in required_request_properties(&route.operation_id) {
            if obj.get(*req).is_none_or(Value::is_null) {
                return Err(format!("request body misses required property {req:?}"));
            }
        }
        self.check_value(&schema, &value, "body", extra_request_properties(&route.operation_id))?;
        Ok(Some(value))
    }

    /// Validates a JSON response the simulator is about to send against the documented one.
    pub fn check_response(&self, route: &Route, status: u16, body: &Value) -> Result<(), String> {
        let responses = &route.operation["responses"];
        let Some(resp) = responses.get(status.to_string()).or_else(|| responses.get("default")) else {
            // Error statuses are not documented by the spec; their shape is the delta.
            if status >= 400 {
                return check_error_body(status, body);
            }
            if status == 202 {
                return check_info_body(body);
            }
            return Err(format!("{}: status {status} is not documented", route.operation_id));
        };
        match resp["content"]["application/json"].get("schema") {
            Some(schema) => {
                let schema = self.resolve(schema)?;
                self.check_value(&schema, body, "response", &[])
            }
            None => Ok(()),
        }
    }

    fn resolve(&self, schema: &Value) -> Result<Value, String> {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix("#/components/schemas/").ok_or(format!("unsupported $ref {r}"))?;
                let s = self.doc["components"]["schemas"].get(name).ok_or(format!("unknown schema {name}"))?;
                self.resolve(s)
            }
            None => Ok(schema.clone()),
        }
    }

    fn check_value(&self, schema: &Value, v: &Value, at: &str, extra: &[(&str, &str)]) -> Result<(), String> {
        let schema = self.resolve(schema)?;
        if v.is_null() {
            return Ok(()); // Jackson accepts null for any property.
        }
        let ty = schema["type"].as_str().unwrap_or(if schema.get("properties").is_some() { "object" } else { "" });
        let ok = match ty {
            "object" => v.is_object(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "array" => v.is_array(),
            _ => true,
        };
        if !ok {
            return Err(format!("{at}: expected {ty}, got {v}"));
        }
        if schema["format"] == "int32" && v.as_i64().is_some_and(|n| i32::try_from(n).is_err()) {
            return Err(format!("{at}: {v} does not fit int32"));
        }
        if let Some(en) = schema["enum"].as_array()
            && !en.contains(v)
        {
            return Err(format!("{at}: {v} is not one of {}", Value::Array(en.clone())));
        }
        if ty == "object" {
            let props = schema["properties"].as_object();
            for (k, val) in v.as_object().into_iter().flatten() {
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => self.check_value(ps, val, &format!("{at}.{k}"), &[])?,
                    None => match extra.iter().find(|(name, _)| name == k) {
                        Some((_, ety)) => {
                            self.check_value(&serde_json::json!({ "type": ety }), val, &format!("{at}.{k}"), &[])?
                        }
                        None => return Err(format!("{at}: property {k:?} is not in the OpenAPI spec")),
                    },
                }
            }
            for r in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if v.get(r).is_none() {
                    return Err(format!("{at}: required property {r:?} missing"));
                }
            }
        }
        if ty == "array"
            && let Some(items) = schema.get("items")
        {
            for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                self.check_value(items, item, &format!("{at}[{i}]"), &[])?;
            }
        }
        Ok(())
    }
}

/// EJBCA's error body: `{"error_code": <status>, "error_message": "..."}`.
pub fn check_error_body(status: u16, body: &Value) -> Result<(), String> {
    match (body["error_code"].as_u64(), body["error_message"].as_str()) {
        (Some(c), Some(_)) if c == u64::from(status) => Ok(()),
        _ => Err(format!("error body {body} is not {{error_code: {status}, error_message}}")),
    }
}

/// EJBCA's 202 body: `{"status_code": 202, "info_message": "..."}`.
pub fn check_info_body(body: &Value) -> Result<(), String> {
    match (body["status_code"].as_u64(), body["info_message"].as_str()) {
        (Some(202), Some(_)) => Ok(()),
        _ => Err(format!("info body {body} is not {{status_code: 202, info_message}}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_bodies_follow_the_spec() {
        let api = OpenApi::load().unwrap();
        assert!(api.operations().len() > 40);
        let r = api.route("POST", "/ejbca/ejbca-rest-api/v1/certificate/pkcs10enroll").unwrap();
        assert_eq!(r.operation_id, "enrollPkcs10Certificate");
        assert_eq!(api.route("GET", "/ejbca/ejbca-rest-api/v1/certificate/pkcs10enroll").unwrap_err().0, 405);
        assert_eq!(api.route("GET", "/ejbca/ejbca-rest-api/v1/nothing").unwrap_err().0, 404);
        assert_eq!(api.route("GET", "/ejbca/ejbca-rest-api/v1/ca/status").unwrap().template, "/v1/ca/status");
        let dl = api.route("GET", "/ejbca/ejbca-rest-api/v1/ca/CN%3DSim%2C%20O%3Dx/certificate/download").unwrap();
        assert_eq!(dl.params["subject_dn"], "CN=Sim, O=x");
        assert_eq!(api.route("POST", "/ejbca/ejbca-rest-api/v1/certificate/abc/finalize").unwrap_err().0, 404);
        let ok = br#"{"certificate_request":"x","certificate_profile_name":"P","end_entity_profile_name":"E",
            "certificate_authority_name":"C","username":"u","password":"p","include_chain":true,
            "response_format":"DER","end_time":"2026-01-01 00:00:00"}"#;
        api.check_request(&r, Some("application/json"), ok).unwrap();
        let typo = br#"{"certificate_request":"x","certificate_profile_name":"P","end_entity_profile_name":"E",
            "certificate_authority_name":"C","username":"u","include_chains":true}"#;
        assert!(api.check_request(&r, Some("application/json"), typo).unwrap_err().contains("include_chains"));
        let wrong_type = br#"{"certificate_request":"x","certificate_profile_name":"P","end_entity_profile_name":"E",
            "certificate_authority_name":"C","username":"u","include_chain":"yes"}"#;
        assert!(api.check_request(&r, Some("application/json"), wrong_type).unwrap_err().contains("expected boolean"));
        let missing = br#"{"certificate_request":"x"}"#;
        assert!(api.check_request(&r, Some("application/json"), missing).unwrap_err().contains("required"));
        assert!(api.check_request(&r, Some("text/plain"), ok).unwrap_err().contains("Content-Type"));
        let s = api.route("POST", "/ejbca/ejbca-rest-api/v1/certificate/search").unwrap();
        let bad_enum =
            br#"{"max_number_of_results":1,"criteria":[{"property":"USERNAME","value":"u","operation":"EQUAL"}]}"#;
        assert!(api.check_request(&s, Some("application/json"), bad_enum).unwrap_err().contains("is not one of"));
        let resp = serde_json::json!({"certificate":"AA==","serial_number":"01","response_format":"DER","certificate_chain":["AA=="]});
        api.check_response(&r, 201, &resp).unwrap();
        assert!(api.check_response(&r, 201, &serde_json::json!({"certificate": 5})).is_err());
        api.check_response(&r, 404, &serde_json::json!({"error_code":404,"error_message":"x"})).unwrap();
        api.check_response(&r, 202, &serde_json::json!({"status_code":202,"info_message":"x"})).unwrap();
    }
}
