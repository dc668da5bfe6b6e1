//! Per-request overrides, opt-in per issuer.
//!
//! Some adapters let a request choose part of what the CA is asked for through annotations
//! (EJBCA's CA and profile names, an AD CS template, Venafi custom fields). Whoever writes a
//! Certificate is an untrusted tenant, while the issuer's credentials are the issuer owner's, so
//! an override is honoured only when the issuer lists it in `spec.allowedOverrides`, optionally
//! with the values allowed. The default is an empty list: no override is honoured, and a request
//! carrying one is refused with a message naming the annotation and the issuer field to change.
//!
//! An adapter embeds [`AllowedOverride`] in its spec as `allowedOverrides: Vec<AllowedOverride>`,
//! checks the list with [`validate_allowed`] (unknown names are a spec error) and resolves a
//! request's annotations with [`resolve`]. An override whose value is structured (Venafi's custom
//! fields: a JSON list) takes its rule with [`rule`] and reads `values` as the adapter documents.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One override annotation an issuer honours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedOverride {
    /// The annotation's name after the adapter's `<group>/` prefix, e.g. `certificateProfileName`.
    pub name: String,
    /// The values a request may choose; empty allows any value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Why a request's overrides were refused (a permanent failure of that request: the requester
/// must change the Certificate, or the issuer owner `spec.allowedOverrides`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// The annotation is not in the issuer's `spec.allowedOverrides`.
    #[error(
        "annotation {annotation} is not honoured by this issuer: its spec.allowedOverrides does not list {name:?} (remove the annotation, or have the issuer's owner add {{name: {name}}} to spec.allowedOverrides)"
    )]
    NotAllowed {
        /// The full annotation.
        annotation: String,
        /// Its name after the prefix.
        name: String,
    },
    /// The value is not one of the listed values.
    #[error(
        "annotation {annotation}={value:?} is not allowed by this issuer: spec.allowedOverrides allows {name} only to be one of {allowed:?}"
    )]
    ValueNotAllowed {
        /// The full annotation.
        annotation: String,
        /// Its name after the prefix.
        name: String,
        /// The requested value.
        value: String,
        /// The values the issuer allows.
        allowed: Vec<String>,
    },
}

/// Checks an issuer's `spec.allowedOverrides` against the override names the adapter knows.
/// The error names the field, e.g. `spec.allowedOverrides[1].name`.
pub fn validate_allowed(allowed: &[AllowedOverride], known: &[&str]) -> Result<(), String> {
    for (i, a) in allowed.iter().enumerate() {
        if !known.contains(&a.name.as_str()) {
            return Err(format!(
                "spec.allowedOverrides[{i}].name {:?} is not an override this issuer type knows (known: {})",
                a.name,
                known.join(", ")
            ));
        }
        if allowed[..i].iter().any(|b| b.name == a.name) {
            return Err(format!("spec.allowedOverrides[{i}].name {:?} is listed twice", a.name));
        }
        if a.values.iter().any(|v| v.trim().is_empty()) {
            return Err(format!("spec.allowedOverrides[{i}].values must not contain empty values"));
        }
    }
    Ok(())
}

/// The framework's own annotations under `<group>/` are never overrides (they ask the framework,
/// not the CA, for something: `revoke-on-delete`), so [`resolve`] passes them unchecked. A
/// literal, not the controllers' constant: this contract module sits below the controllers (a
/// test keeps the two equal).
const FRAMEWORK_ANNOTATIONS: &[&str] = &["revoke-on-delete"];

/// The overrides a request may use: every annotation `<group>/<name>` on the request is checked
/// against `allowed`; any annotation under the prefix that is not allowed, or has a value that is
/// not allowed, refuses the whole request (an override silently dropped would issue something
/// the requester did not ask for). `ignore` lists annotations under the prefix that are not
/// overrides (the adapter's own bookkeeping), which pass unchecked and are not returned, as do
/// the framework's own annotations.
pub fn resolve(
    group: &str,
    annotations: &BTreeMap<String, String>,
    allowed: &[AllowedOverride],
    ignore: &[&str],
) -> Result<BTreeMap<String, String>, OverrideError> {
    let prefix = format!("{group}/");
    let mut out = BTreeMap::new();
    for (annotation, value) in annotations {
        let Some(name) = annotation.strip_prefix(&prefix) else { continue };
        if ignore.contains(&name) || FRAMEWORK_ANNOTATIONS.contains(&name) {
            continue;
        }
        let rule = rule(group, name, allowed)?;
        if !rule.values.is_empty() && !rule.values.contains(value) {
            return Err(OverrideError::ValueNotAllowed {
                annotation: annotation.clone(),
                name: name.into(),
                value: value.clone(),
                allowed: rule.values.clone(),
            });
        }
        out.insert(name.to_owned(), value.clone());
    }
    Ok(out)
}

/// The issuer's rule for the override `<group>/<name>`, or the error naming the annotation and
/// the field to change when `allowed` does not list it. For overrides whose value is not a plain
/// string; [`resolve`] uses it for the others.
pub fn rule<'a>(group: &str, name: &str, allowed: &'a [AllowedOverride]) -> Result<&'a AllowedOverride, OverrideError> {
    allowed
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| OverrideError::NotAllowed { annotation: format!("{group}/{name}"), name: name.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = "ejbca.certbridge.io";

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (format!("{GROUP}/{k}"), (*v).into())).collect()
    }

    fn allow(name: &str, values: &[&str]) -> AllowedOverride {
        AllowedOverride { name: name.into(), values: values.iter().map(|v| (*v).into()).collect() }
    }

    #[test]
    fn nothing_is_honoured_by_default() {
        let err = resolve(GROUP, &ann(&[("certificateProfileName", "SubCA")]), &[], &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ejbca.certbridge.io/certificateProfileName"), "{msg}");
        assert!(msg.contains("spec.allowedOverrides"), "{msg}");
        // No annotations under the prefix: nothing to resolve; other groups are not ours.
        let other = BTreeMap::from([("cert-manager.io/certificate-name".to_string(), "x".to_string())]);
        assert_eq!(resolve(GROUP, &other, &[], &[]).unwrap(), BTreeMap::new());
    }

    #[test]
    fn listed_names_and_values_are_honoured_others_refused() {
        let allowed = [allow("certificateProfileName", &["Server", "Client"]), allow("endEntityName", &[])];
        let ok = resolve(GROUP, &ann(&[("certificateProfileName", "Server"), ("endEntityName", "cn")]), &allowed, &[]);
        assert_eq!(ok.unwrap().get("certificateProfileName").map(String::as_str), Some("Server"));
        let err = resolve(GROUP, &ann(&[("certificateProfileName", "SubCA")]), &allowed, &[]).unwrap_err();
        assert!(matches!(&err, OverrideError::ValueNotAllowed { value, .. } if value == "SubCA"));
        assert!(err.to_string().contains("[\"Server\", \"Client\"]"), "{err}");
        let err = resolve(GROUP, &ann(&[("certificateAuthorityName", "OtherTeamCA")]), &allowed, &[]).unwrap_err();
        assert!(matches!(err, OverrideError::NotAllowed { .. }));
        // Bookkeeping annotations of the adapter are skipped.
        assert!(resolve(GROUP, &ann(&[("note", "x")]), &[], &["note"]).unwrap().is_empty());
    }

    #[test]
    fn spec_list_is_checked() {
        let known = ["certificateProfileName", "endEntityName"];
        assert!(validate_allowed(&[allow("endEntityName", &[])], &known).is_ok());
        let e = validate_allowed(&[allow("endEntityName", &[]), allow("bogus", &[])], &known).unwrap_err();
        assert!(e.contains("spec.allowedOverrides[1].name"), "{e}");
        let e = validate_allowed(&[allow("endEntityName", &[]), allow("endEntityName", &[])], &known).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = validate_allowed(&[allow("endEntityName", &[" "])], &known).unwrap_err();
        assert!(e.contains("values"), "{e}");
    }

    #[test]
    fn the_frameworks_own_annotations_are_not_overrides() {
        assert!(FRAMEWORK_ANNOTATIONS.contains(&crate::controllers::request::revoke::NAME));
        let a = ann(&[("revoke-on-delete", "true")]);
        assert!(resolve(GROUP, &a, &[], &[]).unwrap().is_empty());
        let err = rule(GROUP, "custom-fields", &[]).unwrap_err();
        assert!(err.to_string().contains("ejbca.certbridge.io/custom-fields"), "{err}");
        let allowed = [allow("custom-fields", &["Owner"])];
        assert_eq!(rule(GROUP, "custom-fields", &allowed).unwrap().values, vec!["Owner".to_string()]);
    }
}
