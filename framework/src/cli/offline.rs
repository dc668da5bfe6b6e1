//! `check -f` and `sign -f`: run the adapter against an issuer manifest, without a cluster.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::DynamicObject;

use crate::context::SignContext;
use crate::controllers::decision::verify_issued;
use crate::controllers::shared::typed_issuer;
use crate::issuer::{Issuer, IssuerScope, IssuerSpec};
use crate::request::SignRequest;
use crate::resources::Resources;
use crate::signer::Signer;

/// The `sign` subcommand's request flags.
pub(super) struct SignArgs {
    pub csr: PathBuf,
    pub duration: Duration,
    pub is_ca: bool,
    pub usages: Vec<String>,
    pub ca_out: Option<PathBuf>,
}

/// Prints one line naming the cause and returns a failure code.
fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// The issuer and its resources from a manifest file.
pub(super) fn load<S: IssuerSpec>(
    file: &Path,
    cluster_resource_namespace: &str,
) -> Result<(Issuer<S>, Resources), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut issuers = Vec::new();
    let mut secrets = Vec::new();
    let mut config_maps = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = <serde_json::Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| format!("{}: document {} is not valid YAML: {e}", file.display(), i + 1))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
        let what = |e: serde_json::Error| format!("{}: document {} ({kind}): {e}", file.display(), i + 1);
        match kind.as_str() {
            "Secret" => secrets.push(serde_json::from_value::<Secret>(value).map_err(what)?),
            "ConfigMap" => config_maps.push(serde_json::from_value::<ConfigMap>(value).map_err(what)?),
            k => match super::scope_of::<S>(k) {
                Some(scope) => issuers.push((scope, serde_json::from_value::<DynamicObject>(value).map_err(what)?)),
                None => {
                    return Err(format!(
                        "{}: document {} has kind {k:?}; expected {}Issuer, {}ClusterIssuer, Secret or ConfigMap",
                        file.display(),
                        i + 1,
                        S::NAME,
                        S::NAME
                    ));
                }
            },
        }
    }
    let (scope, obj) = match issuers.len() {
        1 => issuers.remove(0),
        0 => return Err(format!("{}: no {}Issuer or {}ClusterIssuer in the file", file.display(), S::NAME, S::NAME)),
        n => return Err(format!("{}: {n} issuers in the file; keep exactly one", file.display())),
    };
    let issuer = typed_issuer::<S>(&obj, scope)?;
    issuer.spec.validate().map_err(|e| format!("invalid issuer spec: {e}"))?;
    let namespace = match scope {
        IssuerScope::Namespaced => issuer.namespace.clone().unwrap_or_else(|| "default".into()),
        IssuerScope::Cluster => cluster_resource_namespace.to_owned(),
    };
    let issuer = Issuer { namespace: (scope == IssuerScope::Namespaced).then(|| namespace.clone()), ..issuer };
    Ok((issuer, Resources::from_objects(namespace, secrets, config_maps)))
}

pub(super) async fn check<S: Signer>(signer: &S, file: &Path, cluster_resource_namespace: &str) -> ExitCode {
    let (issuer, resources) = match load::<S::Spec>(file, cluster_resource_namespace) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    match signer.check(&issuer, &resources).await {
        Ok(()) => {
            println!("ready: {} {} passed its check", issuer.kind(), issuer.display_name());
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{} {} is not ready: {e}", issuer.kind(), issuer.display_name())),
    }
}

pub(super) async fn sign<S: Signer>(
    signer: &S,
    file: &Path,
    cluster_resource_namespace: &str,
    args: SignArgs,
) -> ExitCode {
    let (issuer, resources) = match load::<S::Spec>(file, cluster_resource_namespace) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let csr_pem = match std::fs::read_to_string(&args.csr) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read the CSR {}: {e}", args.csr.display())),
    };
    let request = match SignRequest::from_csr_pem(&csr_pem, args.duration, args.is_ca, &args.usages) {
        Ok(r) => r,
        Err(e) => return fail(format!("{}: {e}", args.csr.display())),
    };
    let mut ctx = SignContext::offline(resources);
    let issued = match signer.sign(&request, &issuer, &mut ctx).await.and_then(|i| verify_issued(&request, i)) {
        Ok(i) => i,
        Err(e @ crate::SignError::Pending { .. }) => {
            return fail(format!("the CA has not issued the certificate yet (pending): {e}"));
        }
        Err(e) => return fail(format!("signing failed: {e}")),
    };
    if let Some(path) = &args.ca_out {
        let Some(ca) = &issued.ca_pem else {
            return fail("the CA certificate is not known for this chain; nothing written to --ca-out");
        };
        if let Err(e) = std::fs::write(path, ca) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
    }
    print!("{}", issued.chain_pem);
    ExitCode::SUCCESS
}
