//! The `Pkcs11Issuer` / `Pkcs11ClusterIssuer` spec: which module, token and key sign, where the PIN
//! and the CA chain live, and the policy every request must satisfy.
//!
//! Everything that can be checked without the HSM is checked in [`Pkcs11IssuerSpec::validate`], so a
//! typo fails the issuer at once with a message naming the field and the fix.

use std::net::IpAddr;
use std::time::Duration;

use certbridge::schemars::{self, JsonSchema};
use certbridge::{CaBundle, ConfigMapKeySelector, IssuerSpec, SecretKeySelector};
use serde::{Deserialize, Serialize};

/// A CA key in a PKCS#11 token signs the requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pkcs11IssuerSpec {
    /// Absolute path of the PKCS#11 module (shared library). The controller loads only modules
    /// on its allow-list (its `--allowed-module` flags, default `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: String,
    /// The token holding the CA key.
    pub token: TokenRef,
    /// The CA private key inside the token.
    pub key: KeyRef,
    /// The user PIN.
    pub pin_secret_ref: SecretKeyRef,
    /// The CA certificate chain, PEM, the certificate of `key` first: inline (`pem`), or one key
    /// of a Secret (`secretRef`) or of a ConfigMap (`configMapRef`). Required (or the deprecated
    /// `caChainRef`, never both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_chain: Option<CaBundle>,
    /// Deprecated: use `caChain` (`{kind: Secret, name: n, key: k}` is
    /// `{secretRef: {name: n, key: k}}`, `kind: ConfigMap` is `configMapRef`). Still read, as
    /// that `caChain`; not together with `caChain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_chain_ref: Option<ChainRef>,
    /// What requests may ask for.
    #[serde(default)]
    pub policy: Policy,
    /// How an RSA CA key signs (ECDSA keys use their curve's hash, Ed25519 is pure EdDSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureSpec>,
    /// CRL distribution point URLs to embed in issued certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crl_distribution_points: Vec<String>,
    /// OCSP responder URLs to embed (Authority Information Access).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ocsp_servers: Vec<String>,
    /// URLs of the issuing CA certificate to embed (Authority Information Access, caIssuers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuing_certificate_urls: Vec<String>,
}

/// Selects a token by label and/or serial number (both must match when both are set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRef {
    /// Token label (CKA_LABEL of the token, without padding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Token serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// Selects the private key by label and/or id (both must match when both are set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// CKA_LABEL of the private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// CKA_ID of the private key, hex (e.g. `"0a01"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// One key of a Secret: the framework's shared selector (one schema for every issuer).
pub use certbridge::SecretKeySelector as SecretKeyRef;

/// Deprecated form of `caChain`: one key of a Secret or a ConfigMap. Kept so that issuers written
/// before `caChain` existed keep working; [`Pkcs11IssuerSpec::chain_source`] converts it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainRef {
    /// `Secret` or `ConfigMap`.
    pub kind: ChainKind,
    /// Object name.
    pub name: String,
    /// Key inside the object.
    pub key: String,
}

/// Where the CA chain is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ChainKind {
    /// A Secret.
    #[default]
    Secret,
    /// A ConfigMap.
    ConfigMap,
}

/// What requests may ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Longest validity a request may ask for, as a Go-style duration (`"2160h"`, `"720h30m"`).
    /// Certificates never outlive the CA certificate whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
    /// Whether CA certificates (isCA) may be issued. Default false.
    #[serde(default, rename = "allowCA")]
    pub allow_ca: bool,
    /// pathLenConstraint of issued CA certificates (only with `allowCA`). Unset: one less than the
    /// issuing CA's own constraint, or unconstrained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_path_len: Option<u8>,
    /// DNS SANs (and a DNS-looking common name) must be one of these domains or below it.
    /// `example.com` allows `example.com` and `a.b.example.com`; `*.example.com` only names below it.
    /// Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_dns_domains: Vec<String>,
    /// IP SANs must lie in one of these CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`). Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_ip_ranges: Vec<String>,
    /// URI SANs must start with one of these prefixes (`spiffe://cluster.local/`). Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uri_prefixes: Vec<String>,
    /// Key types a request may carry. Empty: all supported (RSA 2048–4096, P-256, P-384, Ed25519).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_key_types: Vec<LeafKeyType>,
    /// otherName SANs a request may carry, by type: `UPN` (a Microsoft User Principal Name, OID
    /// 1.3.6.1.4.1.311.20.2.3) or a dotted OID. Only UTF8String values can be issued. Empty (the
    /// default): a CSR with an otherName is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_other_names: Vec<String>,
    /// The domain of a UPN (the part after its last `@`) must be one of these domains or below it,
    /// matched like allowedDnsDomains. Empty: any domain, once allowedOtherNames has `UPN`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_upn_domains: Vec<String>,
}

/// A key type a requested certificate may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum LeafKeyType {
    /// RSA, 2048-bit modulus.
    #[serde(rename = "RSA-2048")]
    Rsa2048,
    /// RSA, 3072-bit modulus.
    #[serde(rename = "RSA-3072")]
    Rsa3072,
    /// RSA, 4096-bit modulus.
    #[serde(rename = "RSA-4096")]
    Rsa4096,
    /// ECDSA on P-256.
    #[serde(rename = "ECDSA-P256")]
    EcdsaP256,
    /// ECDSA on P-384.
    #[serde(rename = "ECDSA-P384")]
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

/// RSA signature scheme.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignatureSpec {
    /// `PKCS1v15` (default) or `PSS` (salt length = hash length, MGF1 with the same hash).
    #[serde(default)]
    pub rsa_padding: RsaPadding,
    /// `SHA256` (default), `SHA384` or `SHA512`.
    #[serde(default)]
    pub hash: HashAlg,
}

/// RSA signature padding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RsaPadding {
    /// RSASSA-PKCS1-v1_5.
    #[default]
    #[serde(rename = "PKCS1v15")]
    Pkcs1v15,
    /// RSASSA-PSS.
    #[serde(rename = "PSS")]
    Pss,
}

/// Hash for RSA signatures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HashAlg {
    /// SHA-256.
    #[default]
    #[serde(rename = "SHA256")]
    Sha256,
    /// SHA-384.
    #[serde(rename = "SHA384")]
    Sha384,
    /// SHA-512.
    #[serde(rename = "SHA512")]
    Sha512,
}

impl IssuerSpec for Pkcs11IssuerSpec {
    const GROUP: &'static str = "pkcs11.certbridge.io";
    const NAME: &'static str = "Pkcs11";

    fn validate(&self) -> Result<(), String> {
        if !self.module.starts_with('/') {
            return Err(format!(
                "spec.module {:?} is not an absolute path: give the full path of the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so",
                self.module
            ));
        }
        let blank = |o: &Option<String>| o.as_deref().is_none_or(|s| s.trim().is_empty());
        if blank(&self.token.label) && blank(&self.token.serial) {
            return Err("spec.token selects no token: set spec.token.label or spec.token.serial".into());
        }
        if blank(&self.key.label) && blank(&self.key.id) {
            return Err("spec.key selects no key: set spec.key.label or spec.key.id".into());
        }
        if let Some(id) = &self.key.id {
            key_id_bytes(id)?;
        }
        if self.pin_secret_ref.name.is_empty() || self.pin_secret_ref.key.is_empty() {
            return Err("spec.pinSecretRef needs both name and key: name the Secret holding the user PIN".into());
        }
        let (chain, field) = self.chain_source()?;
        chain.validate(field)?;
        self.policy.max_duration()?;
        if self.policy.max_path_len.is_some() && !self.policy.allow_ca {
            return Err("spec.policy.maxPathLen is set but spec.policy.allowCA is false: set allowCA: true or remove maxPathLen".into());
        }
        for (i, d) in self.policy.allowed_dns_domains.iter().enumerate() {
            let bare = d.strip_prefix("*.").unwrap_or(d);
            if bare.is_empty()
                || bare.contains('*')
                || bare.starts_with('.')
                || bare.ends_with('.')
                || bare.contains("..")
            {
                return Err(format!(
                    "spec.policy.allowedDnsDomains[{i}] {d:?} is not a domain: use \"example.com\" or \"*.example.com\""
                ));
            }
        }
        crate::policy::validate_other_names(&self.policy)?;
        for (i, r) in self.policy.allowed_ip_ranges.iter().enumerate() {
            Cidr::parse(r).map_err(|e| format!("spec.policy.allowedIpRanges[{i}] {r:?}: {e}"))?;
        }
        for (i, p) in self.policy.allowed_uri_prefixes.iter().enumerate() {
            if !p.contains(':') {
                return Err(format!(
                    "spec.policy.allowedUriPrefixes[{i}] {p:?} has no scheme: use a prefix such as \"spiffe://cluster.local/\""
                ));
            }
        }
        for (field, urls) in [
            ("crlDistributionPoints", &self.crl_distribution_points),
            ("ocspServers", &self.ocsp_servers),
            ("issuingCertificateUrls", &self.issuing_certificate_urls),
        ] {
            for (i, u) in urls.iter().enumerate() {
                let ok = (u.starts_with("http://") || u.starts_with("https://") || u.starts_with("ldap://"))
                    && u.is_ascii()
                    && !u.contains(char::is_whitespace);
                if !ok {
                    return Err(format!(
                        "spec.{field}[{i}] {u:?} is not an http(s) or ldap URL: give a full ASCII URL"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Pkcs11IssuerSpec {
    /// Where the CA chain is, as the framework's [`CaBundle`], and the field it came from
    /// (`spec.caChain`, or the deprecated `spec.caChainRef` converted). Both set, neither set, or
    /// an incomplete `caChainRef` → a message naming the fields and the fix.
    pub fn chain_source(&self) -> Result<(CaBundle, &'static str), String> {
        match (&self.ca_chain, &self.ca_chain_ref) {
            (Some(chain), None) => Ok((chain.clone(), "spec.caChain")),
            (None, Some(r)) => {
                if r.name.trim().is_empty() || r.key.trim().is_empty() {
                    return Err("spec.caChainRef needs kind, name and key: name the Secret or ConfigMap holding the CA chain PEM (better: move it to spec.caChain)".into());
                }
                let bundle = match r.kind {
                    ChainKind::Secret => CaBundle {
                        secret_ref: Some(SecretKeySelector { name: r.name.clone(), key: r.key.clone() }),
                        ..Default::default()
                    },
                    ChainKind::ConfigMap => CaBundle {
                        config_map_ref: Some(ConfigMapKeySelector { name: r.name.clone(), key: r.key.clone() }),
                        ..Default::default()
                    },
                };
                Ok((bundle, "spec.caChainRef"))
            }
            (Some(_), Some(_)) => Err(
                "spec.caChain and spec.caChainRef are both set: keep only spec.caChain (spec.caChainRef is deprecated)"
                    .into(),
            ),
            (None, None) => {
                Err("spec.caChain is required: name the CA chain PEM with pem, secretRef or configMapRef".into())
            }
        }
    }
}

impl Policy {
    /// The parsed `maxDuration`, if set.
    pub fn max_duration(&self) -> Result<Option<Duration>, String> {
        let Some(text) = &self.max_duration else { return Ok(None) };
        let d = humantime::parse_duration(text).map_err(|e| {
            format!(
                "spec.policy.maxDuration {text:?} is not a duration ({e}): use a Go-style duration such as \"2160h\""
            )
        })?;
        if d.is_zero() {
            return Err("spec.policy.maxDuration is zero: give a positive duration or remove it".into());
        }
        Ok(Some(d))
    }
}

/// The CKA_ID bytes of a hex key id. The error names the field.
pub fn key_id_bytes(id: &str) -> Result<Vec<u8>, String> {
    let hex = id.trim().trim_start_matches("0x");
    let bad = || format!("spec.key.id {id:?} is not hex: write the CKA_ID as hex digits, e.g. \"0a01\"");
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad())).collect()
}

/// An IP range in CIDR notation. Hand-written: it is a dozen lines, not worth a dependency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` (a bare address means a single host).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.trim().parse().map_err(|_| "not an IP address: use CIDR notation such as 10.0.0.0/8")?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>().ok().filter(|n| *n <= max).ok_or(format!("prefix length must be 0..={max}"))?
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let (net, ip, bits) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(*i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(*i), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        if shift >= 128 {
            return true;
        }
        (net >> shift) == (ip >> shift)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> Pkcs11IssuerSpec {
        Pkcs11IssuerSpec {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token: TokenRef { label: Some("ca".into()), serial: None },
            key: KeyRef { label: Some("ca-p256".into()), id: None },
            pin_secret_ref: SecretKeyRef { name: "hsm-pin".into(), key: "pin".into() },
            ca_chain: Some(CaBundle {
                secret_ref: Some(SecretKeySelector { name: "ca".into(), key: "ca.crt".into() }),
                ..Default::default()
            }),
            ca_chain_ref: None,
            policy: Policy::default(),
            signature: None,
            crl_distribution_points: vec![],
            ocsp_servers: vec![],
            issuing_certificate_urls: vec![],
        }
    }

    #[test]
    fn validate_names_the_field_and_the_fix() {
        spec().validate().unwrap();
        type Mutation = Box<dyn Fn(&mut Pkcs11IssuerSpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.module = "libsofthsm2.so".into()), "spec.module"),
            (Box::new(|s| s.token = TokenRef::default()), "spec.token"),
            (Box::new(|s| s.key = KeyRef::default()), "spec.key selects no key"),
            (Box::new(|s| s.key.id = Some("zz".into())), "spec.key.id"),
            (Box::new(|s| s.pin_secret_ref.key = String::new()), "spec.pinSecretRef"),
            (Box::new(|s| s.ca_chain = None), "spec.caChain is required"),
            (Box::new(|s| s.ca_chain.as_mut().unwrap().pem = Some("x".into())), "spec.caChain: set exactly one"),
            (
                Box::new(|s| {
                    s.ca_chain_ref = Some(ChainRef { kind: ChainKind::Secret, name: "c".into(), key: "k".into() })
                }),
                "spec.caChain and spec.caChainRef are both set",
            ),
            (
                Box::new(|s| {
                    s.ca_chain = None;
                    s.ca_chain_ref = Some(ChainRef { kind: ChainKind::Secret, name: String::new(), key: "k".into() });
                }),
                "spec.caChainRef needs kind, name and key",
            ),
            (Box::new(|s| s.policy.max_duration = Some("ninety days".into())), "spec.policy.maxDuration"),
            (Box::new(|s| s.policy.max_path_len = Some(1)), "allowCA"),
            (Box::new(|s| s.policy.allowed_dns_domains = vec!["*.*.x".into()]), "allowedDnsDomains[0]"),
            (Box::new(|s| s.policy.allowed_ip_ranges = vec!["10.0.0.0/40".into()]), "allowedIpRanges[0]"),
            (Box::new(|s| s.policy.allowed_uri_prefixes = vec!["cluster.local".into()]), "allowedUriPrefixes[0]"),
            (Box::new(|s| s.ocsp_servers = vec!["ocsp.example.com".into()]), "spec.ocspServers[0]"),
        ];
        for (mutate, want) in cases {
            let mut s = spec();
            mutate(&mut s);
            let e = s.validate().unwrap_err();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn spec_round_trips_through_yaml_names() {
        let yaml = r#"
module: /usr/lib/softhsm/libsofthsm2.so
token: {label: ca}
key: {label: ca-rsa2048, id: "0a01"}
pinSecretRef: {name: pin, key: pin}
caChainRef: {kind: ConfigMap, name: ca, key: ca.crt}
policy:
  maxDuration: 720h
  allowCA: true
  maxPathLen: 0
  allowedKeyTypes: [RSA-2048, ECDSA-P256, Ed25519]
signature: {rsaPadding: PSS, hash: SHA384}
"#;
        let s: Pkcs11IssuerSpec = serde_yaml::from_str(yaml).unwrap();
        s.validate().unwrap();
        // The deprecated caChainRef is read as the caChain it stands for.
        let converted = CaBundle {
            config_map_ref: Some(ConfigMapKeySelector { name: "ca".into(), key: "ca.crt".into() }),
            ..Default::default()
        };
        assert_eq!(s.chain_source().unwrap(), (converted.clone(), "spec.caChainRef"));
        let new: Pkcs11IssuerSpec = serde_yaml::from_str(&yaml.replace(
            "caChainRef: {kind: ConfigMap, name: ca, key: ca.crt}",
            "caChain: {configMapRef: {name: ca, key: ca.crt}}",
        ))
        .unwrap();
        new.validate().unwrap();
        assert_eq!(new.chain_source().unwrap(), (converted, "spec.caChain"));
        assert_eq!(s.policy.max_duration().unwrap(), Some(Duration::from_secs(720 * 3600)));
        assert_eq!(s.signature, Some(SignatureSpec { rsa_padding: RsaPadding::Pss, hash: HashAlg::Sha384 }));
        assert_eq!(key_id_bytes(s.key.id.as_deref().unwrap()).unwrap(), vec![0x0a, 0x01]);
    }

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(&"10.1.200.3".parse().unwrap()));
        assert!(!c.contains(&"10.2.0.1".parse().unwrap()));
        assert!(!c.contains(&"::1".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(&"192.0.2.1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(&"2001:db8:1::7".parse().unwrap()));
        assert!(!v6.contains(&"2001:db9::1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains(&"::1".parse().unwrap()));
    }
}
