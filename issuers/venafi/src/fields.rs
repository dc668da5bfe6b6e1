//! Custom fields: cert-manager's `venafi.cert-manager.io/custom-fields` JSON shape
//! (`[{"name","value","type"}]`, `Plain` only), read from the issuer (spec + annotation) and the
//! request (annotation, honoured only as far as `spec.allowedOverrides` allows), merged with the
//! request winning per name and sorted by name — cert-manager ≥ 1.20's merge.

use std::collections::BTreeMap;

use certbridge::SignError;

use crate::spec::{AllowedOverride, CUSTOM_FIELDS_ANNOTATION, CUSTOM_FIELDS_KEY, CustomField, GROUP};

/// Refuses fields of a type other than `Plain` and fields without a name.
pub fn check_issuer_fields(fields: &[CustomField]) -> Result<(), String> {
    for f in fields {
        if f.name.trim().is_empty() {
            return Err("a custom field has an empty name".into());
        }
        match f.type_.as_deref() {
            None | Some("") | Some("Plain") => {}
            Some(other) => {
                return Err(format!(
                    "custom field {:?} has type {other:?}: only \"Plain\" is supported (as in cert-manager)",
                    f.name
                ));
            }
        }
    }
    Ok(())
}

/// Parses the annotation's JSON; `what` names where it came from in errors.
pub fn parse_annotation(json: &str, what: &str) -> Result<Vec<CustomField>, String> {
    let fields: Vec<CustomField> = serde_json::from_str(json).map_err(|e| {
        format!(
            "{what} {CUSTOM_FIELDS_ANNOTATION} is not a JSON list of {{\"name\",\"value\",\"type\"}} ({e}): fix the annotation"
        )
    })?;
    check_issuer_fields(&fields).map_err(|e| format!("{what} {CUSTOM_FIELDS_ANNOTATION}: {e}"))?;
    Ok(fields)
}

/// The fields to send: issuer spec, then issuer annotation, then request annotation, later
/// entries winning per name; sorted by name. Request fields not allowed by `allowed` are refused
/// (permanent: the request must change), naming the field.
pub fn merge(
    spec_fields: &[CustomField],
    issuer_annotation: Option<&str>,
    request_annotation: Option<&str>,
    allowed: &[AllowedOverride],
) -> Result<Vec<(String, String)>, SignError> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for f in spec_fields {
        out.insert(f.name.clone(), f.value.clone());
    }
    if let Some(a) = issuer_annotation {
        // The issuer's own annotation is the issuer owner's configuration: a problem there is the
        // issuer's, fixed without touching the request.
        for f in parse_annotation(a, "issuer annotation").map_err(SignError::issuer_not_ready)? {
            out.insert(f.name, f.value);
        }
    }
    if let Some(a) = request_annotation {
        let fields = parse_annotation(a, "request annotation").map_err(SignError::permanent)?;
        // The annotation's value is a JSON list, so its rule's `values` name the fields a request
        // may set rather than whole annotation values (`resolve` would compare the JSON).
        let rule = certbridge::overrides::rule(GROUP, CUSTOM_FIELDS_KEY, allowed)
            .map_err(|e| SignError::permanent(e.to_string()))?;
        for f in fields {
            if !rule.values.is_empty() && !rule.values.contains(&f.name) {
                return Err(SignError::permanent(format!(
                    "request annotation {CUSTOM_FIELDS_ANNOTATION} sets custom field {:?}, which the issuer's spec.allowedOverrides does not list (it allows {:?}): remove it from the annotation",
                    f.name, rule.values
                )));
            }
            out.insert(f.name, f.value);
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: &str, v: &str) -> CustomField {
        CustomField { name: n.into(), value: v.into(), type_: None }
    }

    #[test]
    fn request_wins_and_the_result_is_sorted() {
        let allow = [AllowedOverride { name: "custom-fields".into(), values: vec![] }];
        let got = merge(
            &[field("Owner", "spec"), field("Zeta", "z")],
            Some(r#"[{"name":"Cost Center","value":"issuer","type":"Plain"},{"name":"Owner","value":"annotation"}]"#),
            Some(r#"[{"name":"Cost Center","value":"request"},{"name":"Alpha","value":"a","type":""}]"#),
            &allow,
        )
        .unwrap();
        let want: Vec<(String, String)> =
            [("Alpha", "a"), ("Cost Center", "request"), ("Owner", "annotation"), ("Zeta", "z")]
                .iter()
                .map(|(a, b)| ((*a).into(), (*b).into()))
                .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn request_fields_need_allowed_overrides_and_name_the_field() {
        let req = Some(r#"[{"name":"Cost Center","value":"x"}]"#);
        let e = merge(&[], None, req, &[]).unwrap_err();
        assert!(e.to_string().contains(CUSTOM_FIELDS_ANNOTATION) && e.to_string().contains("allowedOverrides"), "{e}");
        assert!(e.reaction == certbridge::Reaction::Permanent);
        let only_owner = [AllowedOverride { name: "custom-fields".into(), values: vec!["Owner".into()] }];
        let e = merge(&[], None, req, &only_owner).unwrap_err();
        assert!(e.to_string().contains("does not list") && e.to_string().contains("Cost Center"), "{e}");
        assert!(merge(&[], None, Some(r#"[{"name":"Owner","value":"me"}]"#), &only_owner).is_ok());
        let e = merge(&[], None, Some(r#"[{"name":"A","value":"1","type":"MultiLine"}]"#), &only_owner).unwrap_err();
        assert!(e.to_string().contains("only \"Plain\""), "{e}");
        let e = merge(&[], Some("{"), None, &[]).unwrap_err();
        assert!(e.reaction == certbridge::Reaction::IssuerNotReady, "{e}");
    }
}
