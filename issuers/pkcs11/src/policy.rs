//! The issuer policy applied to each request before anything is signed: key types, isCA, duration
//! cap and name allow-lists (otherNames such as UPNs are refused unless allowed by type). Pure
//! functions of the request and the spec, tested with plain values.

use std::time::Duration;

use certbridge::{KeyKind, OtherName, SignError, SignRequest};

use crate::spec::{Cidr, LeafKeyType, Policy};

/// A policy with its text fields parsed once per issuer generation.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    max_duration: Option<Duration>,
    allow_ca: bool,
    max_path_len: Option<u8>,
    dns_domains: Vec<String>,
    ip_ranges: Vec<Cidr>,
    uri_prefixes: Vec<String>,
    key_types: Vec<LeafKeyType>,
    /// Dotted OIDs (`UPN` resolved).
    other_names: Vec<String>,
    upn_domains: Vec<String>,
}

impl CompiledPolicy {
    /// Parses `policy` (already validated by the spec; errors still name the field).
    pub fn new(policy: &Policy) -> Result<CompiledPolicy, String> {
        Ok(CompiledPolicy {
            max_duration: policy.max_duration()?,
            allow_ca: policy.allow_ca,
            max_path_len: policy.max_path_len,
            dns_domains: policy.allowed_dns_domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            ip_ranges: policy
                .allowed_ip_ranges
                .iter()
                .map(|r| Cidr::parse(r).map_err(|e| format!("spec.policy.allowedIpRanges {r:?}: {e}")))
                .collect::<Result<_, _>>()?,
            uri_prefixes: policy.allowed_uri_prefixes.clone(),
            key_types: policy.allowed_key_types.clone(),
            other_names: policy
                .allowed_other_names
                .iter()
                .enumerate()
                .map(|(i, t)| other_name_type(i, t))
                .collect::<Result<_, _>>()?,
            upn_domains: policy.allowed_upn_domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        })
    }

    /// The configured maxPathLen for issued CA certificates.
    pub fn max_path_len(&self) -> Option<u8> {
        self.max_path_len
    }

    /// Checks `req` against the policy. Every refusal is permanent and says what to change.
    pub fn check(&self, req: &SignRequest) -> Result<(), SignError> {
        let refuse = |m: String| Err(SignError::permanent(m));
        let kind = leaf_key_type(&req.csr.key).map_err(SignError::permanent)?;
        if !self.key_types.is_empty() && !self.key_types.contains(&kind) {
            return refuse(format!(
                "the CSR's key is {} but spec.policy.allowedKeyTypes allows only {}: generate the key with an allowed type",
                req.csr.key,
                self.key_types.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ")
            ));
        }
        if req.is_ca && !self.allow_ca {
            return refuse(
                "the request asks for a CA certificate (isCA) but this issuer does not allow it: drop isCA or set spec.policy.allowCA: true"
                    .into(),
            );
        }
        if let Some(max) = self.max_duration
            && req.duration > max
        {
            return refuse(format!(
                "the requested duration {} exceeds spec.policy.maxDuration {}: request at most {}",
                humantime::format_duration(req.duration),
                humantime::format_duration(max),
                humantime::format_duration(max)
            ));
        }
        if !self.dns_domains.is_empty() {
            for d in &req.csr.dns_names {
                if !domain_allowed(&self.dns_domains, d) {
                    return refuse(format!(
                        "DNS name {d:?} is outside spec.policy.allowedDnsDomains {:?}: request names in those domains",
                        self.dns_domains
                    ));
                }
            }
            if let Some(cn) = &req.csr.common_name {
                let is_san = req.csr.dns_names.contains(cn)
                    || req.csr.emails.contains(cn)
                    || req.csr.uris.contains(cn)
                    || req.csr.ip_addresses.iter().any(|ip| ip.to_string() == *cn);
                let looks_dns = cn.contains('.') && !cn.contains(' ') && !cn.contains('@');
                if looks_dns && !is_san && !domain_allowed(&self.dns_domains, cn) {
                    return refuse(format!(
                        "common name {cn:?} is outside spec.policy.allowedDnsDomains {:?}: use an allowed name",
                        self.dns_domains
                    ));
                }
            }
        }
        if !self.ip_ranges.is_empty() {
            for ip in &req.csr.ip_addresses {
                if !self.ip_ranges.iter().any(|r| r.contains(ip)) {
                    return refuse(format!(
                        "IP address {ip} is outside spec.policy.allowedIpRanges: request an allowed address"
                    ));
                }
            }
        }
        if !self.uri_prefixes.is_empty() {
            for u in &req.csr.uris {
                if !self.uri_prefixes.iter().any(|p| u.starts_with(p.as_str())) {
                    return refuse(format!(
                        "URI {u:?} does not start with any of spec.policy.allowedUriPrefixes {:?}",
                        self.uri_prefixes
                    ));
                }
            }
        }
        for o in &req.csr.other_names {
            self.check_other_name(o)?;
        }
        Ok(())
    }

    /// Default deny: an otherName is issued only when its type is listed, and a UPN only in an
    /// allowed domain when domains are listed (a UPN is what Windows logon maps to an account).
    fn check_other_name(&self, o: &OtherName) -> Result<(), SignError> {
        if !self.other_names.iter().any(|t| t == o.type_id()) {
            let add = match o {
                OtherName::Upn(_) => "\"UPN\"".to_owned(),
                other => format!("\"{}\"", other.type_id()),
            };
            return Err(SignError::permanent(format!(
                "the CSR asks for the subjectAltName {o}, but spec.policy.allowedOtherNames {:?} does not allow that otherName type: remove it from the CSR or add {add} to spec.policy.allowedOtherNames",
                self.other_names
            )));
        }
        if let OtherName::Upn(upn) = o
            && !self.upn_domains.is_empty()
        {
            let domain = upn.rsplit_once('@').map(|(_, d)| d).filter(|d| !d.is_empty());
            if !domain.is_some_and(|d| domain_allowed(&self.upn_domains, d)) {
                return Err(SignError::permanent(format!(
                    "the CSR's UPN {upn:?} is outside spec.policy.allowedUpnDomains {:?}: request a UPN user@domain in one of those domains",
                    self.upn_domains
                )));
            }
        }
        Ok(())
    }
}

/// Whether `name` is one of `domains` or below it (`*.example.com`: strictly below).
fn domain_allowed(domains: &[String], name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    domains.iter().any(|d| match d.strip_prefix("*.") {
        Some(base) => {
            name.len() > base.len() + 1 && name.ends_with(base) && name[..name.len() - base.len()].ends_with('.')
        }
        None => {
            name == *d
                || (name.len() > d.len() + 1
                    && name.ends_with(d.as_str())
                    && name[..name.len() - d.len()].ends_with('.'))
        }
    })
}

/// The dotted OID of `spec.policy.allowedOtherNames[i]`: `UPN` or a dotted OID of two or more arcs.
fn other_name_type(i: usize, t: &str) -> Result<String, String> {
    if t.eq_ignore_ascii_case("UPN") {
        return Ok(OtherName::UPN_OID.to_owned());
    }
    let arcs: Vec<&str> = t.split('.').collect();
    let arcs_ok = arcs.iter().all(|a| !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()));
    if arcs.len() < 2 || !arcs_ok || !matches!(arcs[0], "0" | "1" | "2") {
        return Err(format!(
            "spec.policy.allowedOtherNames[{i}] {t:?} is neither UPN nor a dotted OID: write \"UPN\" or an OID such as \"1.3.6.1.4.1.311.20.2.3\""
        ));
    }
    Ok(t.to_owned())
}

/// Spec validation of `allowedOtherNames` and `allowedUpnDomains`; the error names the field.
pub fn validate_other_names(policy: &Policy) -> Result<(), String> {
    for (i, t) in policy.allowed_other_names.iter().enumerate() {
        other_name_type(i, t)?;
    }
    for (i, d) in policy.allowed_upn_domains.iter().enumerate() {
        let bare = d.strip_prefix("*.").unwrap_or(d);
        if bare.is_empty()
            || bare.contains(['*', '@'])
            || bare.starts_with('.')
            || bare.ends_with('.')
            || bare.contains("..")
        {
            return Err(format!(
                "spec.policy.allowedUpnDomains[{i}] {d:?} is not a domain: use \"corp.example.com\" or \"*.corp.example.com\""
            ));
        }
    }
    if !policy.allowed_upn_domains.is_empty()
        && !policy.allowed_other_names.iter().any(|t| t.eq_ignore_ascii_case("UPN") || t == OtherName::UPN_OID)
    {
        return Err(
            "spec.policy.allowedUpnDomains is set but spec.policy.allowedOtherNames does not allow UPN: add \"UPN\" to allowedOtherNames or remove allowedUpnDomains"
                .into(),
        );
    }
    Ok(())
}

/// The supported leaf key type of a CSR key, or why it is refused.
pub fn leaf_key_type(kind: &KeyKind) -> Result<LeafKeyType, String> {
    Ok(match kind {
        KeyKind::Rsa { bits: 2048 } => LeafKeyType::Rsa2048,
        KeyKind::Rsa { bits: 3072 } => LeafKeyType::Rsa3072,
        KeyKind::Rsa { bits: 4096 } => LeafKeyType::Rsa4096,
        KeyKind::Rsa { bits } => {
            return Err(format!(
                "the CSR's key is RSA-{bits}; this issuer signs RSA keys of 2048, 3072 or 4096 bits: generate one of those"
            ));
        }
        KeyKind::EcP256 => LeafKeyType::EcdsaP256,
        KeyKind::EcP384 => LeafKeyType::EcdsaP384,
        KeyKind::Ed25519 => LeafKeyType::Ed25519,
        other => {
            return Err(format!(
                "the CSR's key type ({other}) is not supported: use RSA 2048–4096, ECDSA P-256/P-384 or Ed25519"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use certbridge::Reaction;

    use super::*;

    fn csr(alg: &'static rcgen::SignatureAlgorithm, f: impl FnOnce(&mut rcgen::CertificateParams)) -> String {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["app.example.com".into()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "app.example.com");
        f(&mut p);
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    /// How the controller reacts to `e`; the one place these tests read a SignError's reaction.
    fn reaction(e: &SignError) -> &'static str {
        match e.reaction {
            Reaction::Pending { .. } => "pending",
            Reaction::Permanent => "permanent",
            Reaction::IssuerNotReady => "issuer-not-ready",
            Reaction::Transient => "transient",
        }
    }

    fn req(pem: &str, hours: u64, is_ca: bool) -> SignRequest {
        SignRequest::from_csr_pem::<&str>(pem, Duration::from_secs(hours * 3600), is_ca, &[]).unwrap()
    }

    fn policy(f: impl FnOnce(&mut Policy)) -> CompiledPolicy {
        let mut p = Policy::default();
        f(&mut p);
        CompiledPolicy::new(&p).unwrap()
    }

    #[test]
    fn default_policy_allows_leaves_but_not_cas() {
        let pem = csr(&rcgen::PKCS_ECDSA_P256_SHA256, |_| {});
        let p = policy(|_| {});
        p.check(&req(&pem, 24, false)).unwrap();
        let e = p.check(&req(&pem, 24, true)).unwrap_err();
        assert!(reaction(&e) == "permanent" && e.to_string().contains("allowCA"), "{e}");
        policy(|p| p.allow_ca = true).check(&req(&pem, 24, true)).unwrap();
    }

    #[test]
    fn duration_cap_and_key_types() {
        let pem = csr(&rcgen::PKCS_ED25519, |_| {});
        let p = policy(|p| {
            p.max_duration = Some("48h".into());
            p.allowed_key_types = vec![LeafKeyType::EcdsaP256];
        });
        let e = p.check(&req(&pem, 24, false)).unwrap_err().to_string();
        assert!(e.contains("Ed25519") && e.contains("allowedKeyTypes"), "{e}");
        let p = policy(|p| p.max_duration = Some("48h".into()));
        p.check(&req(&pem, 48, false)).unwrap();
        let e = p.check(&req(&pem, 49, false)).unwrap_err().to_string();
        assert!(e.contains("maxDuration 2days"), "{e}");
    }

    #[test]
    fn name_allow_lists() {
        let pem = csr(&rcgen::PKCS_ECDSA_P256_SHA256, |p| {
            p.subject_alt_names.push(rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()));
            p.subject_alt_names.push(rcgen::SanType::URI("spiffe://cluster.local/ns/a".try_into().unwrap()));
        });
        let r = req(&pem, 1, false);
        policy(|p| {
            p.allowed_dns_domains = vec!["example.com".into()];
            p.allowed_ip_ranges = vec!["10.0.0.0/8".into()];
            p.allowed_uri_prefixes = vec!["spiffe://cluster.local/".into()];
        })
        .check(&r)
        .unwrap();
        policy(|p| p.allowed_dns_domains = vec!["*.example.com".into()]).check(&r).unwrap();
        let e = policy(|p| p.allowed_dns_domains = vec!["*.app.example.com".into()]).check(&r).unwrap_err();
        assert!(e.to_string().contains("\"app.example.com\" is outside"), "{e}");
        let e = policy(|p| p.allowed_dns_domains = vec!["ample.com".into()]).check(&r).unwrap_err();
        assert!(e.to_string().contains("allowedDnsDomains"), "{e}");
        let e = policy(|p| p.allowed_ip_ranges = vec!["192.168.0.0/16".into()]).check(&r).unwrap_err();
        assert!(e.to_string().contains("10.1.2.3"), "{e}");
        let e = policy(|p| p.allowed_uri_prefixes = vec!["spiffe://other/".into()]).check(&r).unwrap_err();
        assert!(e.to_string().contains("allowedUriPrefixes"), "{e}");
    }

    fn upn_csr(upns: &[&str]) -> String {
        csr(&rcgen::PKCS_ECDSA_P256_SHA256, |p| {
            for u in upns {
                p.subject_alt_names
                    .push(rcgen::SanType::OtherName((vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3], (*u).into())));
            }
            p.subject_alt_names.push(rcgen::SanType::OtherName((vec![1, 2, 3, 4], "tag".into())));
        })
    }

    #[test]
    fn other_names_are_refused_unless_allowed_by_type() {
        let r = req(&upn_csr(&["alice@corp.example.com"]), 1, false);
        // Default deny, naming the field and what to add.
        let e = policy(|_| {}).check(&r).unwrap_err();
        assert_eq!(reaction(&e), "permanent");
        let e = e.to_string();
        assert!(e.contains("UPN \"alice@corp.example.com\""), "{e}");
        assert!(e.contains("spec.policy.allowedOtherNames [] does not allow") && e.contains("add \"UPN\""), "{e}");
        // UPN allowed, the other type not yet: refused naming its OID.
        let e = policy(|p| p.allowed_other_names = vec!["UPN".into()]).check(&r).unwrap_err().to_string();
        assert!(e.contains("otherName 1.2.3.4 \"tag\"") && e.contains("add \"1.2.3.4\""), "{e}");
        policy(|p| p.allowed_other_names = vec!["upn".into(), "1.2.3.4".into()]).check(&r).unwrap();
        // The UPN's OID works like "UPN".
        policy(|p| p.allowed_other_names = vec![OtherName::UPN_OID.into(), "1.2.3.4".into()]).check(&r).unwrap();
        // The other names rules still apply to the rest of the CSR.
        let e = policy(|p| {
            p.allowed_other_names = vec!["UPN".into(), "1.2.3.4".into()];
            p.allowed_dns_domains = vec!["other.example".into()];
        })
        .check(&r)
        .unwrap_err();
        assert!(e.to_string().contains("allowedDnsDomains"), "{e}");
    }

    #[test]
    fn upn_domains() {
        let allow = |domains: &[&str]| {
            policy(|p| {
                p.allowed_other_names = vec!["UPN".into(), "1.2.3.4".into()];
                p.allowed_upn_domains = domains.iter().map(|d| (*d).to_owned()).collect();
            })
        };
        let r = req(&upn_csr(&["alice@corp.example.com", "bob@EU.Corp.Example.com"]), 1, false);
        allow(&["corp.example.com"]).check(&r).unwrap();
        let e = allow(&["*.corp.example.com"]).check(&r).unwrap_err();
        assert_eq!(reaction(&e), "permanent");
        assert!(
            e.to_string().contains("UPN \"alice@corp.example.com\" is outside spec.policy.allowedUpnDomains"),
            "{e}"
        );
        let e = allow(&["example.org"]).check(&req(&upn_csr(&["no-domain"]), 1, false)).unwrap_err();
        assert!(e.to_string().contains("\"no-domain\" is outside"), "{e}");
        let e = allow(&["example.com"]).check(&req(&upn_csr(&["alice@evilexample.com"]), 1, false)).unwrap_err();
        assert!(e.to_string().contains("allowedUpnDomains"), "{e}");
    }

    #[test]
    fn other_name_fields_are_validated_naming_the_field() {
        let check = |f: fn(&mut Policy)| {
            let mut p = Policy::default();
            f(&mut p);
            validate_other_names(&p).and_then(|()| CompiledPolicy::new(&p).map(drop))
        };
        check(|p| p.allowed_other_names = vec!["UPN".into(), "1.3.6.1.4.1.99999.1".into()]).unwrap();
        for (f, field) in [
            (
                (|p| p.allowed_other_names = vec!["UPN".into(), "userPrincipalName".into()]) as fn(&mut Policy),
                "allowedOtherNames[1]",
            ),
            (|p| p.allowed_other_names = vec!["1..2".into()], "allowedOtherNames[0]"),
            (|p| p.allowed_other_names = vec!["7.1".into()], "allowedOtherNames[0]"),
            (
                |p| {
                    p.allowed_other_names = vec!["UPN".into()];
                    p.allowed_upn_domains = vec!["@corp.example".into()];
                },
                "allowedUpnDomains[0]",
            ),
            (|p| p.allowed_upn_domains = vec!["corp.example".into()], "allowedOtherNames does not allow UPN"),
        ] {
            let e = check(f).unwrap_err();
            assert!(e.contains(field), "{field}: {e}");
        }
        // The spec's own validation runs it.
        let mut spec = crate::spec::tests::spec();
        spec.policy.allowed_other_names = vec!["nope".into()];
        assert!(certbridge::IssuerSpec::validate(&spec).unwrap_err().contains("allowedOtherNames[0]"));
    }
}
