//! Requested certificate lifetimes: Go duration strings (what cert-manager writes into
//! `CertificateRequest.spec.duration` and the CSR duration annotation) and the Kubernetes CSR
//! precedence rules.
//!
//! Hand-written because `humantime` does not accept Go's grammar (fractions like `1.5h`, `µs`),
//! and the grammar is small: `[+]?(<decimal><unit>)+` or `0`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::request::DEFAULT_DURATION;

/// cert-manager's CSR annotation for the requested duration (a Go duration string).
pub(crate) const CSR_DURATION_ANNOTATION: &str = "experimental.cert-manager.io/request-duration";
/// cert-manager's CSR annotation asking for a CA certificate (`"true"`).
pub(crate) const CSR_IS_CA_ANNOTATION: &str = "experimental.cert-manager.io/request-is-ca";

/// Parses a Go duration string (`"2160h0m0s"`, `"896h"`, `"1.5h"`, `"90m"`). Negative durations
/// are refused: a certificate cannot have one.
pub(crate) fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad =
        |why: &str| format!("{s:?} is not a valid duration ({why}); use a Go duration such as \"2160h\" or \"90m\"");
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(bad("negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad("expected a number"));
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| bad("number too large"))? };
        let mut value = int.checked_mul(nanos_per_unit).ok_or_else(|| bad("too large"))?;
        // Fractional digits beyond nanosecond precision are dropped, as Go does.
        let mut scale = nanos_per_unit;
        for d in frac_part.chars().take(30) {
            scale /= 10;
            value += u128::from(d.to_digit(10).unwrap_or(0)) * scale;
        }
        total = total.checked_add(value).ok_or_else(|| bad("too large"))?;
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad("too large"))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// The duration a `CertificateRequest` asks for: `spec.duration` or 90 days.
pub(crate) fn certificate_request_duration(spec_duration: Option<&str>) -> Result<Duration, String> {
    match spec_duration {
        None | Some("") => Ok(DEFAULT_DURATION),
        Some(d) => parse_go_duration(d).map_err(|e| format!("spec.duration {e}")),
    }
}

/// The duration a Kubernetes CSR asks for: the cert-manager annotation, else
/// `spec.expirationSeconds`, else 90 days (cert-manager's `DurationFromCertificateSigningRequest`).
pub(crate) fn csr_duration(
    annotations: &BTreeMap<String, String>,
    expiration_seconds: Option<i32>,
) -> Result<Duration, String> {
    if let Some(d) = annotations.get(CSR_DURATION_ANNOTATION) {
        return parse_go_duration(d).map_err(|e| format!("annotation {CSR_DURATION_ANNOTATION}: {e}"));
    }
    match expiration_seconds {
        Some(s) if s > 0 => Ok(Duration::from_secs(s as u64)),
        Some(s) => Err(format!("spec.expirationSeconds {s} must be positive")),
        None => Ok(DEFAULT_DURATION),
    }
}

/// Whether a Kubernetes CSR asks for a CA certificate.
pub(crate) fn csr_is_ca(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(CSR_IS_CA_ANNOTATION).map(String::as_str) == Some("true")
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(parse_go_duration("2160h0m0s").unwrap(), Duration::from_secs(2160 * H));
        assert_eq!(parse_go_duration("896h").unwrap(), Duration::from_secs(896 * H));
        assert_eq!(parse_go_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_go_duration("+90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_go_duration("1µs2ns").unwrap(), Duration::from_nanos(1002));
        assert_eq!(parse_go_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "10", "h", "1x", "-1h", "1h-1m", "1.h.", "99999999999999999999999h"] {
            let e = parse_go_duration(bad).unwrap_err();
            assert!(e.contains("not a valid duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn certificate_request_defaults_to_90_days() {
        assert_eq!(certificate_request_duration(None).unwrap(), Duration::from_secs(90 * 24 * H));
        assert_eq!(certificate_request_duration(Some("24h")).unwrap(), Duration::from_secs(24 * H));
        assert!(certificate_request_duration(Some("a day")).unwrap_err().starts_with("spec.duration"));
    }

    #[test]
    fn csr_duration_precedence_annotation_then_expiration_then_default() {
        let mut ann = BTreeMap::new();
        assert_eq!(csr_duration(&ann, None).unwrap(), Duration::from_secs(90 * 24 * H));
        assert_eq!(csr_duration(&ann, Some(3333)).unwrap(), Duration::from_secs(3333));
        ann.insert(CSR_DURATION_ANNOTATION.to_owned(), "896h".to_owned());
        assert_eq!(csr_duration(&ann, Some(3333)).unwrap(), Duration::from_secs(896 * H));
        ann.insert(CSR_DURATION_ANNOTATION.to_owned(), "soon".to_owned());
        let e = csr_duration(&ann, Some(3333)).unwrap_err();
        assert!(e.contains(CSR_DURATION_ANNOTATION) && e.contains("\"soon\""), "{e}");
        assert!(!csr_is_ca(&ann));
        ann.insert(CSR_IS_CA_ANNOTATION.to_owned(), "true".to_owned());
        assert!(csr_is_ca(&ann));
    }
}
