//! `check -f` and `sign -f`: run the adapter against an issuer manifest, without a cluster.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::DynamicObject;

use crate::context::SignContext;
use crate::controllers::decision::request::verify_issued;
use crate::controllers::shared::typed_issuer;
use crate::error::Reaction;
use crate::issuer::{Issuer, IssuerScope, IssuerSpec};
use crate::request::SignRequest;
use crate::resources::Resources;
use crate::signer::Signer;

/// The `sign` subcommand's request flags.
pub(crate) struct SignArgs {
    pub csr: PathBuf,
    pub duration: Duration,
    pub is_ca: bool,
    pub usages: Vec<String>,
    pub ca_out: Option<PathBuf>,
}

/// Prints one line naming the cause and returns a failure code.
fn fail(message: impl std::fmt::Display) -> ExitCode {
    // One line, whatever the adapter's message contains.
    let message = message.to_string().replace(['\r', '\n'], " ");
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// The issuer and its resources from a manifest file.
pub(crate) fn load<S: IssuerSpec>(
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
            k => match scope_of::<S>(k) {
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

pub(crate) async fn check<S: Signer>(signer: &S, file: &Path, cluster_resource_namespace: &str) -> ExitCode {
    let (issuer, resources) = match load::<S::Spec>(file, cluster_resource_namespace) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    match signer.check(&issuer, &resources).await {
        Ok(ready) => {
            match ready.text() {
                Some(message) => {
                    println!("ready: {} {} passed its check: {message}", issuer.kind(), issuer.display_name())
                }
                None => println!("ready: {} {} passed its check", issuer.kind(), issuer.display_name()),
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{} {} is not ready: {e}", issuer.kind(), issuer.display_name())),
    }
}

pub(crate) async fn sign<S: Signer>(
    signer: &S,
    file: &Path,
    cluster_resource_namespace: &str,
    args: SignArgs,
) -> ExitCode {
    match sign_to_files(signer, file, cluster_resource_namespace, &args).await {
        Ok(chain_pem) => {
            print!("{chain_pem}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `sign -f` up to the chain it prints: the error is the one line to print.
async fn sign_to_files<S: Signer>(
    signer: &S,
    file: &Path,
    cluster_resource_namespace: &str,
    args: &SignArgs,
) -> Result<String, String> {
    let (issuer, resources) = load::<S::Spec>(file, cluster_resource_namespace)?;
    let csr_pem =
        std::fs::read_to_string(&args.csr).map_err(|e| format!("cannot read the CSR {}: {e}", args.csr.display()))?;
    let request = SignRequest::from_csr_pem(&csr_pem, args.duration, args.is_ca, &args.usages)
        .map_err(|e| format!("{}: {e}", args.csr.display()))?;
    let mut ctx = SignContext::offline(resources);
    let issued =
        signer.sign(&request, &issuer, &mut ctx).await.and_then(|i| verify_issued(&request, i)).map_err(|e| match e
            .reaction
        {
            Reaction::Pending { .. } => format!("the CA has not issued the certificate yet (pending): {e}"),
            _ => format!("signing failed: {e}"),
        })?;
    if let Some(path) = &args.ca_out {
        let Some(ca) = &issued.ca_pem else {
            return Err("the CA certificate is not known for this chain; nothing written to --ca-out".into());
        };
        std::fs::write(path, ca).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(issued.chain_pem)
}

/// The scope of a manifest's issuer kind, if it is one of `S`'s.
fn scope_of<S: IssuerSpec>(kind: &str) -> Option<IssuerScope> {
    [IssuerScope::Namespaced, IssuerScope::Cluster]
        .into_iter()
        .find(|s| crate::issuer::KindNames::of::<S>(*s).kind == kind)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::{Issued, SignError};

    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        secret_name: String,
    }
    impl IssuerSpec for Spec {
        const GROUP: &'static str = "demo.certbridge.io";
        const NAME: &'static str = "Demo";
        fn validate(&self) -> Result<(), String> {
            if self.secret_name.is_empty() { Err("spec.secretName must not be empty".into()) } else { Ok(()) }
        }
    }

    struct Demo;
    #[async_trait::async_trait]
    impl Signer for Demo {
        type Spec = Spec;
        async fn sign(&self, _: &SignRequest, _: &Issuer<Spec>, _: &mut SignContext) -> Result<Issued, SignError> {
            // What an approval-gated CA answers: pending, with a condition attached.
            Err(SignError::pending("waiting for approval", Duration::from_secs(5)).with_condition(
                "ApprovalPending",
                "True",
                "WaitingForApproval",
            ))
        }
        async fn check(&self, issuer: &Issuer<Spec>, resources: &Resources) -> Result<crate::Ready, SignError> {
            resources.secret_string(&issuer.spec.secret_name, "token").await.map(|_| crate::Ready::default())
        }
    }

    fn manifest(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    const SECRET: &str =
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: team}\nstringData: {token: abc}\n";

    #[tokio::test]
    async fn loads_the_issuer_and_its_secrets_under_the_namespace_rules() {
        let ns = format!(
            "apiVersion: demo.certbridge.io/v1alpha1\nkind: DemoIssuer\nmetadata: {{name: ca, namespace: team}}\nspec: {{secretName: creds}}\n{SECRET}"
        );
        let f = manifest(&ns);
        let (issuer, resources) = load::<Spec>(f.path(), "cert-manager").unwrap();
        assert_eq!((issuer.scope, issuer.namespace.as_deref()), (IssuerScope::Namespaced, Some("team")));
        assert_eq!(resources.namespace(), "team");
        assert_eq!(check(&Demo, f.path(), "cert-manager").await, ExitCode::SUCCESS);

        // A cluster issuer reads only the cluster resource namespace: the Secret in `team` is invisible.
        let cl = format!(
            "apiVersion: demo.certbridge.io/v1alpha1\nkind: DemoClusterIssuer\nmetadata: {{name: ca}}\nspec: {{secretName: creds}}\n{SECRET}"
        );
        let f = manifest(&cl);
        let (issuer, resources) = load::<Spec>(f.path(), "cert-manager").unwrap();
        assert_eq!((issuer.scope, issuer.namespace), (IssuerScope::Cluster, None));
        assert_eq!(resources.namespace(), "cert-manager");
        assert_eq!(check(&Demo, f.path(), "cert-manager").await, ExitCode::FAILURE);
        assert_eq!(check(&Demo, f.path(), "team").await, ExitCode::SUCCESS);
    }

    #[test]
    fn bad_manifests_name_the_problem() {
        let err = |text: &str| load::<Spec>(manifest(text).path(), "cert-manager").unwrap_err();
        assert!(err(SECRET).contains("no DemoIssuer or DemoClusterIssuer"));
        let e = err("kind: Deployment\napiVersion: apps/v1\nmetadata: {name: x}\n");
        assert!(e.contains("has kind \"Deployment\""), "{e}");
        let e = err(
            "apiVersion: demo.certbridge.io/v1alpha1\nkind: DemoIssuer\nmetadata: {name: ca}\nspec: {secretName: 7}\n",
        );
        assert!(e.contains("spec.secretName"), "{e}");
        let e = err(
            "apiVersion: demo.certbridge.io/v1alpha1\nkind: DemoIssuer\nmetadata: {name: ca}\nspec: {secretName: ''}\n",
        );
        assert!(e.contains("must not be empty"), "{e}");
        let two = "apiVersion: demo.certbridge.io/v1alpha1\nkind: DemoIssuer\nmetadata: {name: a}\nspec: {secretName: x}\n---\napiVersion: demo.certbridge.io/v1alpha1\nkind: DemoIssuer\nmetadata: {name: b}\nspec: {secretName: x}\n";
        assert!(err(two).contains("2 issuers"));
        assert!(err(": : :\n  - [").contains("not valid YAML"));
    }

    #[tokio::test]
    async fn a_pending_answer_with_a_condition_is_reported_as_pending() {
        let f = manifest(&format!(
            "apiVersion: demo.certbridge.io/v1alpha1\nkind: DemoIssuer\nmetadata: {{name: ca, namespace: team}}\nspec: {{secretName: creds}}\n{SECRET}"
        ));
        let (csr_pem, _) = crate::testing::generate_csr(&crate::KeyKind::EcP256, &["a.example.com"]).unwrap();
        let csr = manifest(&csr_pem);
        let args = SignArgs {
            csr: csr.path().to_owned(),
            duration: Duration::from_secs(3600),
            is_ca: false,
            usages: vec![],
            ca_out: None,
        };
        let e = sign_to_files(&Demo, f.path(), "cert-manager", &args).await.unwrap_err();
        assert_eq!(e, "the CA has not issued the certificate yet (pending): waiting for approval");
    }
}
