//! EJBCA's REST operations as the simulator answers them (after authentication and spec
//! validation in `front`): status, CA list and chain download, pkcs10enroll, search, finalize.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::openapi::Route;
use super::options::ApprovalMode;
use super::state::{Approval, ApprovalStatus, B64, IssuedCert, Shared, SimState, ejbca_error};

pub(super) enum Answer {
    Json(u16, Value),
    Pem(String),
}

pub(super) type Handled = Result<Answer, (u16, Value)>;

fn str_field<'a>(body: Option<&'a Value>, key: &str) -> &'a str {
    body.and_then(|b| b.get(key)).and_then(Value::as_str).unwrap_or_default()
}

pub(super) fn dispatch(s: &Shared, st: &mut SimState, route: &Route, body: Option<&Value>) -> Handled {
    match route.operation_id.as_str() {
        "status_2" | "status" | "status_1" | "status_3" => Ok(Answer::Json(
            200,
            json!({ "status": "OK", "version": "1.0", "revision": "EJBCA 9.1.1 Community (certbridge simulator)" }),
        )),
        "listCas" => Ok(Answer::Json(
            200,
            json!({ "certificate_authorities": s.pki.cas.iter().enumerate().map(|(i, c)| json!({
                "id": 1000 + i as i64,
                "name": c.name,
                "subject_dn": c.subject_dn,
                "issuer_dn": "CN=certbridge Sim Root CA,O=certbridge sim",
                "expiration_date": "2036-01-01T00:00:00Z",
            })).collect::<Vec<_>>() }),
        )),
        "getCertificateAsPem" => {
            let dn = &route.params["subject_dn"];
            let ca = s
                .pki
                .cas
                .iter()
                .find(|c| &c.subject_dn == dn)
                .ok_or_else(|| ejbca_error(404, &format!("CA with DN {dn} doesn't exist.")))?;
            Ok(Answer::Pem(ca.chain_der.iter().map(|d| certbridge::pki::to_pem(d)).collect()))
        }
        "enrollPkcs10Certificate" => enroll(s, st, body),
        "searchCertificates" => search(st, body),
        "finalizeEnrollment" => finalize(s, st, route, body),
        other => Err(ejbca_error(501, &format!("the simulator does not implement {other}"))),
    }
}

/// EJBCA's `end_time` format; anything else is refused (EJBCA ignores it with a log line).
fn parse_end_time(v: &str) -> Result<jiff::Timestamp, String> {
    jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", v)
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp())
        .map_err(|_| format!("Invalid end_time {v:?}: use \"yyyy-MM-dd HH:mm:ss\" (UTC)"))
}

fn enroll(s: &Shared, st: &mut SimState, body: Option<&Value>) -> Handled {
    let format = str_field(body, "response_format");
    let format = if format.is_empty() { "DER".to_owned() } else { format.to_uppercase() };
    if format != "DER" && format != "PKCS7" {
        return Err(ejbca_error(400, "Invalid input. Response format can only be DER or PKCS7"));
    }
    if format == "PKCS7" {
        return Err(ejbca_error(501, "the simulator answers DER only"));
    }
    let ca_name = str_field(body, "certificate_authority_name");
    let ca = s.pki.ca(ca_name).ok_or_else(|| ejbca_error(400, &format!("CA with name \"{ca_name}\" doesn't exist")))?;
    let cp = str_field(body, "certificate_profile_name");
    if !s.opts.certificate_profiles.iter().any(|p| p == cp) {
        return Err(ejbca_error(400, &format!("Certificate profile with name \"{cp}\" doesn't exist")));
    }
    let eep = str_field(body, "end_entity_profile_name");
    if !s.opts.end_entity_profiles.iter().any(|p| p == eep) {
        return Err(ejbca_error(400, &format!("End entity profile with name \"{eep}\" doesn't exist")));
    }
    let csr = str_field(body, "certificate_request");
    if certbridge::Csr::from_pem(csr).is_err() {
        return Err(ejbca_error(400, "Invalid certificate request"));
    }
    let now = jiff::Timestamp::now();
    let validity = match body.and_then(|b| b.get("end_time")).and_then(Value::as_str) {
        Some(v) => {
            let end = parse_end_time(v).map_err(|m| ejbca_error(400, &m))?;
            let secs = end.as_second() - now.as_second();
            if secs <= 0 {
                return Err(ejbca_error(422, "The end time is in the past"));
            }
            Duration::from_secs(secs as u64)
        }
        None => Duration::from_secs(30 * 86400),
    };
    let username = str_field(body, "username");
    if username.is_empty() {
        return Err(ejbca_error(400, "Invalid input. Username must not be empty"));
    }
    let approval = Approval {
        username: username.to_owned(),
        ca: ca_name.to_owned(),
        certificate_profile: cp.to_owned(),
        end_entity_profile: eep.to_owned(),
        csr: csr.to_owned(),
        validity,
        status: ApprovalStatus::Waiting,
    };
    if st.approval != ApprovalMode::Off {
        let id = st.next_approval;
        st.next_approval += 1;
        st.approvals.insert(id, approval);
        let message = if st.approval == ApprovalMode::Finalize {
            format!("Request with Id '{id}' has been added for approval by authorized administrators.")
        } else {
            "Add End Entity Action has been added for approval by authorized administrators.".to_owned()
        };
        return Ok(Answer::Json(202, json!({ "status_code": 202, "info_message": message })));
    }
    let der = s.issue(st, &approval)?;
    let include_chain = body.and_then(|b| b.get("include_chain")).and_then(Value::as_bool).unwrap_or(false);
    let serial = st.issued.last().map(|c| c.serial.clone()).unwrap_or_default();
    let mut resp = json!({
        "certificate": B64.encode(&der),
        "serial_number": serial,
        "response_format": "DER",
        "certificate_profile": cp,
        "end_entity_profile": eep,
    });
    if include_chain {
        resp["certificate_chain"] = json!(ca.chain_der.iter().map(|d| B64.encode(d)).collect::<Vec<_>>());
    }
    Ok(Answer::Json(201, resp))
}

fn search(st: &mut SimState, body: Option<&Value>) -> Handled {
    let max = body.and_then(|b| b["max_number_of_results"].as_u64()).unwrap_or(0) as usize;
    let mut hits: Vec<&IssuedCert> = st.issued.iter().collect();
    for c in body.and_then(|b| b["criteria"].as_array()).into_iter().flatten() {
        let (prop, value, op) = (
            c["property"].as_str().unwrap_or_default(),
            c["value"].as_str().unwrap_or_default(),
            c["operation"].as_str().unwrap_or_default(),
        );
        match (prop, op) {
            ("QUERY", "EQUAL") => hits.retain(|h| h.username == value || h.serial == value),
            ("QUERY", "LIKE") => hits.retain(|h| h.username.contains(value)),
            ("CA", "EQUAL") => hits.retain(|h| h.ca == value),
            ("CERTIFICATE_PROFILE", "EQUAL") => hits.retain(|h| h.certificate_profile == value),
            ("END_ENTITY_PROFILE", "EQUAL") => hits.retain(|h| h.end_entity_profile == value),
            ("ISSUED_DATE", "AFTER" | "BEFORE") => {
                let t: jiff::Timestamp =
                    value.parse().map_err(|_| ejbca_error(400, &format!("Invalid ISO 8601 date {value:?}")))?;
                if op == "AFTER" {
                    hits.retain(|h| h.issued_at > t);
                } else {
                    hits.retain(|h| h.issued_at < t);
                }
            }
            _ => return Err(ejbca_error(400, &format!("Invalid search criteria {prop} {op}"))),
        }
    }
    let more = hits.len() > max;
    let certificates: Vec<Value> = hits
        .iter()
        .take(max)
        .map(|h| {
            json!({
                "certificate": B64.encode(&h.der),
                "serial_number": h.serial,
                "response_format": "DER",
                "certificate_profile": h.certificate_profile,
                "end_entity_profile": h.end_entity_profile,
            })
        })
        .collect();
    Ok(Answer::Json(200, json!({ "certificates": certificates, "more_results": more })))
}

fn finalize(s: &Shared, st: &mut SimState, route: &Route, body: Option<&Value>) -> Handled {
    let id: i32 = route.params["request_id"].parse().map_err(|_| ejbca_error(404, "bad request id"))?;
    let format = str_field(body, "response_format");
    let a = st
        .approvals
        .get(&id)
        .cloned()
        .ok_or_else(|| ejbca_error(400, &format!("Could not find request with Id '{id}'")))?;
    match a.status {
        ApprovalStatus::Waiting => {
            return Ok(Answer::Json(
                202,
                json!({ "status_code": 202, "info_message": format!("Request with Id '{id}' is still waiting for approval") }),
            ));
        }
        ApprovalStatus::Rejected => return Err(ejbca_error(400, &format!("Request with Id '{id}' has been rejected"))),
        ApprovalStatus::Finalized => {
            return Err(ejbca_error(400, &format!("Enrollment with Id '{id}' has already been finalized")));
        }
        ApprovalStatus::Approved => {}
    }
    if format != "DER" {
        return Err(ejbca_error(
            400,
            "Invalid response format. Cannot create keystore for certificate request  with user generated keys",
        ));
    }
    let der = s.issue(st, &a)?;
    if let Some(x) = st.approvals.get_mut(&id) {
        x.status = ApprovalStatus::Finalized;
    }
    let serial = st.issued.last().map(|c| c.serial.clone()).unwrap_or_default();
    Ok(Answer::Json(201, json!({ "certificate": B64.encode(&der), "serial_number": serial, "response_format": "DER" })))
}
