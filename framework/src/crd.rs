//! CustomResourceDefinitions for an adapter's two kinds, generated from its [`IssuerSpec`] type
//! the way kube-derive does (schemars with Kubernetes' structural-schema rewrites), with printer
//! columns Ready / Reason / Age and a status subresource.
//!
//! kube-derive's `CustomResource` makes one kind per struct; certbridge needs two kinds from one
//! spec, so the CRD is assembled here from the same schema generator.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::issuer::{API_VERSION, IssuerScope, IssuerSpec, IssuerStatus, KindNames};

/// The object shape whose schema becomes the CRD's openAPIV3Schema.
#[derive(Serialize, Deserialize, JsonSchema)]
struct IssuerObject<S> {
    spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<IssuerStatus>,
}

/// The openAPIV3Schema for an issuer object with spec `S`.
pub fn schema<S: IssuerSpec>() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    let mut schema =
        serde_json::to_value(generator.into_root_schema_for::<IssuerObject<S>>()).expect("schemas serialize");
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("title");
        obj.insert(
            "description".into(),
            format!("{} issuer: signs certificate requests. See https://certbridge.io", S::NAME).into(),
        );
    }
    schema
}

/// The CRD for one of `S`'s kinds.
pub fn crd<S: IssuerSpec>(scope: IssuerScope) -> CustomResourceDefinition {
    let names = KindNames::of::<S>(scope);
    let singular = names.kind.to_ascii_lowercase();
    let json = serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{}.{}", names.plural, names.group) },
        "spec": {
            "group": names.group,
            "names": {
                "kind": names.kind,
                "listKind": format!("{}List", names.kind),
                "plural": names.plural,
                "singular": singular,
                "categories": ["certbridge", "cert-manager"],
            },
            "scope": match scope { IssuerScope::Namespaced => "Namespaced", IssuerScope::Cluster => "Cluster" },
            "versions": [{
                "name": API_VERSION,
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "additionalPrinterColumns": [
                    { "name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status" },
                    { "name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason" },
                    { "name": "Message", "type": "string", "priority": 1, "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message" },
                    { "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" },
                ],
                "schema": { "openAPIV3Schema": schema::<S>() },
            }],
        },
    });
    serde_json::from_value(json).expect("the CRD literal matches CustomResourceDefinition")
}

/// Both CRDs of `S` as one multi-document YAML (what `crds` prints).
pub fn crds_yaml<S: IssuerSpec>() -> String {
    [IssuerScope::Namespaced, IssuerScope::Cluster]
        .into_iter()
        .map(|scope| serde_yaml::to_string(&crd::<S>(scope)).expect("CRDs serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec exercising optional fields, enums and nested structs.
    #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        /// Server URL.
        server: String,
        #[serde(default)]
        ca_bundle: Option<String>,
        mode: Option<Mode>,
        auth: Auth,
    }
    #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
    enum Mode {
        Fast,
        Safe,
    }
    #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    struct Auth {
        secret_name: String,
    }
    impl IssuerSpec for Spec {
        const GROUP: &'static str = "demo.certbridge.io";
        const NAME: &'static str = "Demo";
    }

    #[test]
    fn crd_has_both_scopes_status_and_columns() {
        let c = crd::<Spec>(IssuerScope::Cluster);
        assert_eq!(c.metadata.name.as_deref(), Some("democlusterissuers.demo.certbridge.io"));
        assert_eq!(c.spec.scope, "Cluster");
        let v = &c.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<_> = v.additional_printer_columns.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(cols, ["Ready", "Reason", "Message", "Age"]);
        let schema = serde_json::to_value(v.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap();
        assert_eq!(schema["required"], serde_json::json!(["spec"]));
        let spec = &schema["properties"]["spec"];
        assert_eq!(spec["properties"]["server"]["type"], "string");
        assert_eq!(spec["properties"]["auth"]["properties"]["secretName"]["type"], "string");
        // kube's OptionalEnum adds `null` to optional enums, which Kubernetes accepts with nullable.
        assert_eq!(spec["properties"]["mode"]["enum"], serde_json::json!(["Fast", "Safe", null]));
        assert!(!schema.to_string().contains("$ref"), "schema must be inlined for Kubernetes");
        let conditions = &schema["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        let yaml = crds_yaml::<Spec>();
        assert!(yaml.contains("kind: DemoIssuer") && yaml.contains("kind: DemoClusterIssuer"));
    }
}
