//! The controller's token policy: which issuers may use which token and key.
//!
//! A namespaced `Pkcs11Issuer` is written by a namespace tenant, so naming a token and a PIN in
//! its own Secret must not be enough to reach a CA key: the controller's operator grants tokens
//! (by serial or label) and optionally keys to the cluster scope or to namespaces, in a file the
//! controller reads at start (`--token-policy`, mounted from a ConfigMap in the controller's
//! namespace, which tenants cannot write). Without a file, cluster issuers may use any token of
//! an allowed module and namespaced issuers none.
//!
//! The check runs on the issuer spec alone, before the PIN Secret is read and before any
//! PKCS#11 call, so a tenant cannot probe tokens or PINs it was not granted. A grant can also cap
//! what the issuer's own `spec.policy` may allow: `maxDuration` (the issuer's must be set no
//! longer, or is taken from the grant when unset) and `allowCA: false`.
//!
//! ```yaml
//! grants:
//! - cluster: true                 # ClusterIssuers
//!   token: {label: root-ca}
//! - namespaces: [team-a, team-b]  # namespaced Issuers in these namespaces
//!   module: /usr/lib/softhsm/libsofthsm2.so
//!   token: {serial: 8a3f2c1d9e7b4a60}
//!   keys: [{label: team-issuing}]
//!   maxDuration: 2160h
//!   allowCA: false
//! ```

use std::path::Path;
use std::time::Duration;

use certbridge::{Issuer, IssuerScope};
use serde::Deserialize;

use crate::spec::Pkcs11IssuerSpec;

/// Environment variable behind `--token-policy`.
pub const TOKEN_POLICY_ENV: &str = "CERTBRIDGE_PKCS11_TOKEN_POLICY";

/// A token (and key) granted to a scope.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    /// Whether ClusterIssuers may use it.
    #[serde(default)]
    pub cluster: bool,
    /// Namespaces whose Issuers may use it.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The module path; unset: any allowed module.
    #[serde(default)]
    pub module: Option<String>,
    /// The token, by label and/or serial (both must match when both are given).
    pub token: TokenMatch,
    /// Keys on the token that may be used (label and/or id); empty: any key.
    #[serde(default)]
    pub keys: Vec<KeyMatch>,
    /// Longest validity the issuer's `spec.policy.maxDuration` may allow (Go-style duration).
    #[serde(default)]
    pub max_duration: Option<String>,
    /// Whether the issuer may set `spec.policy.allowCA`; unset: not capped.
    #[serde(default, rename = "allowCA")]
    pub allow_ca: Option<bool>,
}

/// A token in a grant.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenMatch {
    /// Token label.
    #[serde(default)]
    pub label: Option<String>,
    /// Token serial number.
    #[serde(default)]
    pub serial: Option<String>,
}

/// A key in a grant.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMatch {
    /// CKA_LABEL.
    #[serde(default)]
    pub label: Option<String>,
    /// CKA_ID in hex.
    #[serde(default)]
    pub id: Option<String>,
}

/// The policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    grants: Vec<Grant>,
}

/// The token policy in force.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// `None`: the default (cluster issuers any token, namespaced issuers none).
    grants: Option<Vec<Grant>>,
    /// Where it came from, for messages.
    source: String,
    /// [`TokenPolicy::unrestricted`].
    unrestricted: bool,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy { grants: None, source: "the default token policy (no --token-policy)".into(), unrestricted: false }
    }
}

/// What a grant lets an issuer's own policy allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    /// The grant's maximum duration.
    pub max_duration: Option<Duration>,
    /// Whether the issuer may allow CA certificates.
    pub allow_ca: Option<bool>,
}

fn parse_duration(field: &str, text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{field} is zero: give a positive duration like 2160h")),
        Err(e) => Err(format!("{field} {text:?} is not a duration like 2160h: {e}")),
    }
}

impl TokenPolicy {
    /// Every issuer, namespaced or not, may use every token and key of an allowed module (what
    /// certbridge did before token policies). Only for single-tenant clusters and tests: any
    /// namespace tenant who can create a `Pkcs11Issuer` can then reach every CA key whose PIN
    /// they know.
    pub fn unrestricted() -> TokenPolicy {
        TokenPolicy { grants: None, source: "the unrestricted token policy".into(), unrestricted: true }
    }

    /// Parses a policy file's text (YAML or JSON); `source` names it in messages.
    pub fn parse(text: &str, source: &str) -> Result<TokenPolicy, String> {
        let file: PolicyFile = serde_yaml::from_str(text).map_err(|e| format!("token policy {source}: {e}"))?;
        for (i, g) in file.grants.iter().enumerate() {
            let at = format!("token policy {source}: grants[{i}]");
            if g.token.label.is_none() && g.token.serial.is_none() {
                return Err(format!("{at}.token must name a label or a serial"));
            }
            if !g.cluster && g.namespaces.is_empty() {
                return Err(format!("{at} grants nothing: set cluster: true or list namespaces"));
            }
            if let Some(k) = g.keys.iter().position(|k| k.label.is_none() && k.id.is_none()) {
                return Err(format!("{at}.keys[{k}] must name a label or an id"));
            }
            if let Some(d) = &g.max_duration {
                parse_duration(&format!("{at}.maxDuration"), d)?;
            }
        }
        Ok(TokenPolicy { grants: Some(file.grants), source: source.into(), unrestricted: false })
    }

    /// Reads the policy file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<TokenPolicy> {
        let text =
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--token-policy {}: {e}", path.display()))?;
        TokenPolicy::parse(&text, &path.display().to_string()).map_err(anyhow::Error::msg)
    }

    /// Whether `issuer` may use the token and key its spec names, and what its policy may allow.
    /// The refusal names the issuer, the token and this policy, and is meant as IssuerNotReady
    /// (the operator can grant it; the tenant cannot).
    pub fn authorize(&self, issuer: &Issuer<Pkcs11IssuerSpec>) -> Result<Caps, String> {
        let spec = &issuer.spec;
        let who = match (issuer.scope, issuer.namespace.as_deref()) {
            (IssuerScope::Cluster, _) => "cluster issuers".to_string(),
            (IssuerScope::Namespaced, ns) => format!("namespace {:?}", ns.unwrap_or_default()),
        };
        let token = crate::token::TokenSelector { label: spec.token.label.clone(), serial: spec.token.serial.clone() };
        let refused = |why: &str| {
            format!(
                "{} may not use token {token}{why}: {} grants it no such token (the controller's operator grants tokens with --token-policy; a namespaced issuer needs a grant for its namespace)",
                issuer.display_name(),
                self.source
            ) + &format!(" [scope: {who}]")
        };
        if self.unrestricted {
            return Ok(Caps::default());
        }
        let Some(grants) = &self.grants else {
            return match issuer.scope {
                IssuerScope::Cluster => Ok(Caps::default()),
                IssuerScope::Namespaced => Err(refused("")),
            };
        };
        let scoped = grants.iter().filter(|g| match issuer.scope {
            IssuerScope::Cluster => g.cluster,
            IssuerScope::Namespaced => issuer.namespace.as_ref().is_some_and(|ns| g.namespaces.contains(ns)),
        });
        let mut token_granted = false;
        for g in scoped {
            if g.module.as_deref().is_some_and(|m| m != spec.module) {
                continue;
            }
            // A field the grant names must be named identically by the issuer: the token found is
            // then the granted one without asking the module.
            let same = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
            if !(same(&g.token.label, &spec.token.label) && same(&g.token.serial, &spec.token.serial)) {
                continue;
            }
            token_granted = true;
            let key_ok = g.keys.is_empty()
                || g.keys.iter().any(|k| {
                    same(&k.label, &spec.key.label)
                        && (k.id.is_none()
                            || k.id.as_deref().map(str::to_ascii_lowercase)
                                == spec.key.id.as_deref().map(str::to_ascii_lowercase))
                });
            if !key_ok {
                continue;
            }
            let caps = Caps {
                max_duration: g.max_duration.as_deref().map(|d| parse_duration("maxDuration", d)).transpose()?,
                allow_ca: g.allow_ca,
            };
            if caps.allow_ca == Some(false) && spec.policy.allow_ca {
                return Err(format!(
                    "{}: spec.policy.allowCA is true but {} grants {who} token {token} with allowCA: false (set spec.policy.allowCA to false)",
                    issuer.display_name(),
                    self.source
                ));
            }
            if let Some(cap) = caps.max_duration {
                let mine = spec.policy.max_duration()?;
                if mine.is_some_and(|d| d > cap) {
                    return Err(format!(
                        "{}: spec.policy.maxDuration {:?} is longer than the {} that {} grants {who} for token {token} (shorten spec.policy.maxDuration)",
                        issuer.display_name(),
                        spec.policy.max_duration.as_deref().unwrap_or_default(),
                        humantime::format_duration(cap),
                        self.source
                    ));
                }
            }
            return Ok(caps);
        }
        Err(refused(if token_granted { " with this key" } else { "" }))
    }
}

/// `spec` with its policy narrowed to `caps` (an unset maxDuration takes the grant's).
pub fn capped(spec: &Pkcs11IssuerSpec, caps: &Caps) -> Pkcs11IssuerSpec {
    let mut spec = spec.clone();
    if let (Some(cap), None) = (caps.max_duration, &spec.policy.max_duration) {
        spec.policy.max_duration = Some(humantime::format_duration(cap).to_string());
    }
    if caps.allow_ca == Some(false) {
        spec.policy.allow_ca = false;
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{KeyRef, TokenRef};

    fn issuer(scope: IssuerScope, ns: Option<&str>, f: impl FnOnce(&mut Pkcs11IssuerSpec)) -> Issuer<Pkcs11IssuerSpec> {
        let mut spec: Pkcs11IssuerSpec = serde_json::from_value(serde_json::json!({
            "module": "/usr/lib/softhsm/libsofthsm2.so",
            "token": {"label": "root-ca"},
            "key": {"label": "ca-key"},
            "pinSecretRef": {"name": "pin", "key": "pin"},
            "caChainRef": {"kind": "Secret", "name": "chain", "key": "ca.crt"},
        }))
        .unwrap();
        f(&mut spec);
        Issuer {
            name: "hsm".into(),
            namespace: ns.map(Into::into),
            scope,
            uid: "u".into(),
            generation: 1,
            annotations: Default::default(),
            spec,
        }
    }

    const POLICY: &str = r#"
grants:
- cluster: true
  token: {label: root-ca}
- namespaces: [team-a]
  token: {serial: "8a3f"}
  keys: [{label: team-a-key}, {id: "0A0B"}]
  maxDuration: 720h
  allowCA: false
"#;

    #[test]
    fn default_policy_grants_cluster_issuers_only() {
        let p = TokenPolicy::default();
        assert!(p.authorize(&issuer(IssuerScope::Cluster, None, |_| {})).is_ok());
        let err = p.authorize(&issuer(IssuerScope::Namespaced, Some("team-a"), |_| {})).unwrap_err();
        assert!(err.contains("--token-policy") && err.contains("label \"root-ca\""), "{err}");
    }

    #[test]
    fn namespaces_get_only_their_token_and_keys() {
        let p = TokenPolicy::parse(POLICY, "/etc/certbridge/token-policy.yaml").unwrap();
        // team-b borrows team-a's token: refused, naming the policy file.
        let other = |s: &mut Pkcs11IssuerSpec| {
            s.token = TokenRef { label: None, serial: Some("8a3f".into()) };
            s.key = KeyRef { label: Some("team-a-key".into()), id: None };
        };
        let err = p.authorize(&issuer(IssuerScope::Namespaced, Some("team-b"), other)).unwrap_err();
        assert!(err.contains("/etc/certbridge/token-policy.yaml"), "{err}");
        assert!(p.authorize(&issuer(IssuerScope::Namespaced, Some("team-a"), other)).is_ok());
        // The cluster CA's token is not team-a's, whatever label the spec names.
        assert!(p.authorize(&issuer(IssuerScope::Namespaced, Some("team-a"), |_| {})).is_err());
        // Naming only the label of the granted serial's token is not enough (cannot be checked
        // without asking the module).
        let by_label = |s: &mut Pkcs11IssuerSpec| {
            s.token = TokenRef { label: Some("team-token".into()), serial: None };
            s.key = KeyRef { label: Some("team-a-key".into()), id: None };
        };
        assert!(p.authorize(&issuer(IssuerScope::Namespaced, Some("team-a"), by_label)).is_err());
        // Another key on the granted token.
        let other_key = |s: &mut Pkcs11IssuerSpec| {
            other(s);
            s.key = KeyRef { label: Some("root-key".into()), id: None };
        };
        let err = p.authorize(&issuer(IssuerScope::Namespaced, Some("team-a"), other_key)).unwrap_err();
        assert!(err.contains("with this key"), "{err}");
        let by_id = |s: &mut Pkcs11IssuerSpec| {
            other(s);
            s.key = KeyRef { label: None, id: Some("0a0b".into()) };
        };
        assert!(p.authorize(&issuer(IssuerScope::Namespaced, Some("team-a"), by_id)).is_ok());
    }

    #[test]
    fn grants_cap_the_issuer_policy() {
        let p = TokenPolicy::parse(POLICY, "policy").unwrap();
        let team = |s: &mut Pkcs11IssuerSpec| {
            s.token = TokenRef { label: None, serial: Some("8a3f".into()) };
            s.key = KeyRef { label: Some("team-a-key".into()), id: None };
        };
        let wide_ca = issuer(IssuerScope::Namespaced, Some("team-a"), |s| {
            team(s);
            s.policy.allow_ca = true;
        });
        let err = p.authorize(&wide_ca).unwrap_err();
        assert!(err.contains("spec.policy.allowCA") && err.contains("allowCA: false"), "{err}");
        let long = issuer(IssuerScope::Namespaced, Some("team-a"), |s| {
            team(s);
            s.policy.max_duration = Some("8760h".into());
        });
        let err = p.authorize(&long).unwrap_err();
        assert!(err.contains("spec.policy.maxDuration") && err.contains("30days"), "{err}");
        let unset = issuer(IssuerScope::Namespaced, Some("team-a"), team);
        let caps = p.authorize(&unset).unwrap();
        assert_eq!(caps.max_duration, Some(Duration::from_secs(720 * 3600)));
        let narrowed = capped(&unset.spec, &caps);
        assert_eq!(narrowed.policy.max_duration().unwrap(), Some(Duration::from_secs(720 * 3600)));
    }

    #[test]
    fn bad_policy_files_name_the_field() {
        let e = TokenPolicy::parse("grants:\n- token: {}\n  cluster: true\n", "f").unwrap_err();
        assert!(e.contains("grants[0].token"), "{e}");
        let e = TokenPolicy::parse("grants:\n- token: {label: x}\n", "f").unwrap_err();
        assert!(e.contains("grants nothing"), "{e}");
        let e = TokenPolicy::parse("grants:\n- token: {label: x}\n  cluster: true\n  maxDuration: soon\n", "f")
            .unwrap_err();
        assert!(e.contains("grants[0].maxDuration"), "{e}");
        assert!(TokenPolicy::parse("grant: []\n", "f").is_err(), "unknown fields are refused");
    }
}
