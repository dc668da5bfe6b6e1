//! The issuer spec shared by `LocalCAIssuer` and `LocalCAClusterIssuer`.

use certbridge::IssuerSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the CA lives.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalCaSpec {
    /// Name of a `kubernetes.io/tls` Secret with the CA certificate (`tls.crt`, then its chain) and key
    /// (`tls.key`: PKCS#8, PKCS#1 or SEC1), in the issuer's namespace (cluster issuer: cluster resource namespace).
    pub secret_name: String,
}

impl IssuerSpec for LocalCaSpec {
    const GROUP: &'static str = "example.certbridge.io";
    const NAME: &'static str = "LocalCA";

    fn validate(&self) -> Result<(), String> {
        if self.secret_name.trim().is_empty() {
            return Err("spec.secretName is empty: set it to the name of the Secret holding the CA".into());
        }
        Ok(())
    }
}
