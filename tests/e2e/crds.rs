//! Every adapter's CRDs, as its `crds` subcommand prints them, applied with kubectl next to
//! cert-manager's own CRDs in one API server: they install, are served side by side, enforce their
//! schemas and show the printer columns.

use certbridge::IssuerSpec;
use certbridge::crd::crds_yaml;
use certbridge_testkit::KubeSim;

use crate::kubectl::Kubectl;

/// (spec CRDs, group, namespaced plural, cluster plural) for every adapter in the workspace.
fn adapters() -> Vec<(String, &'static str, String, String)> {
    fn one<S: IssuerSpec>() -> (String, &'static str, String, String) {
        let base = S::NAME.to_ascii_lowercase();
        (crds_yaml::<S>(), S::GROUP, format!("{base}issuers"), format!("{base}clusterissuers"))
    }
    vec![
        one::<certbridge_example_ca::LocalCaSpec>(),
        one::<certbridge_pkcs11::Pkcs11IssuerSpec>(),
        one::<certbridge_vault::VaultSpec>(),
        one::<certbridge_ejbca::EjbcaIssuerSpec>(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adapters_crds_install_with_kubectl_and_are_served_side_by_side() {
    let sim = KubeSim::start().await.unwrap();
    let kubectl = Kubectl::new(&sim);
    let cert_manager =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../framework/testkit/crds/cert-manager.io_certificaterequests.yaml");
    kubectl.run(&["apply", "-f", cert_manager], None);

    let adapters = adapters();
    let mut groups: Vec<&str> = adapters.iter().map(|a| a.1).collect();
    groups.sort();
    groups.dedup();
    assert_eq!(groups.len(), adapters.len(), "every adapter has its own API group");

    for (yaml, group, namespaced, cluster) in &adapters {
        let out = kubectl.run(&["apply", "-f", "-"], Some(yaml));
        assert!(out.contains(&format!("{namespaced}.{group} created")), "{out}");
        assert!(out.contains(&format!("{cluster}.{group} created")), "{out}");
    }
    let crds = kubectl.run(&["get", "crds", "-o", "name"], None);
    for (_, group, namespaced, cluster) in &adapters {
        let args = ["wait", "--for", "condition=established", "--timeout=30s"];
        let (n, c) = (format!("crd/{namespaced}.{group}"), format!("crd/{cluster}.{group}"));
        kubectl.run(&[&args[..], &[n.as_str(), c.as_str()]].concat(), None);
        assert!(crds.contains(&format!("{namespaced}.{group}")), "{crds}");
        let resources = kubectl.run(&["api-resources", "--api-group", group, "-o", "wide"], None);
        assert!(resources.contains(namespaced) && resources.contains(cluster), "{resources}");
        // The namespaced kind is namespaced, the cluster kind is not.
        let namespaced_only =
            kubectl.run(&["api-resources", "--api-group", group, "--namespaced=true", "-o", "name"], None);
        assert_eq!(namespaced_only.trim(), format!("{namespaced}.{group}"), "{namespaced_only}");
    }
    assert!(crds.contains("certificaterequests.cert-manager.io"), "{crds}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_schemas_are_enforced_and_printer_columns_show_readiness() {
    let sim = KubeSim::start().await.unwrap();
    let kubectl = Kubectl::new(&sim);
    for (yaml, ..) in adapters() {
        kubectl.run(&["apply", "-f", "-"], Some(&yaml));
    }
    kubectl.run(&["create", "namespace", "team-a"], None);

    // A required field missing, and a field of the wrong type: refused by the API server, naming the field.
    let missing = "apiVersion: example.certbridge.io/v1alpha1\nkind: LocalCAIssuer\nmetadata: {name: ca, namespace: team-a}\nspec: {}\n";
    let err = kubectl.fail(&["apply", "-f", "-"], Some(missing));
    assert!(err.contains("secretName") && err.contains("Required"), "{err}");
    let wrong = "apiVersion: example.certbridge.io/v1alpha1\nkind: LocalCAIssuer\nmetadata: {name: ca, namespace: team-a}\nspec: {secretName: 7}\n";
    let err = kubectl.fail(&["apply", "-f", "-"], Some(wrong));
    assert!(err.contains("spec.secretName") && err.contains("string"), "{err}");

    let good = "apiVersion: example.certbridge.io/v1alpha1\nkind: LocalCAIssuer\nmetadata: {name: ca, namespace: team-a}\nspec: {secretName: ca-key-pair}\n";
    kubectl.run(&["apply", "-f", "-"], Some(good));
    let status = r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Checked","message":"Signing CA verified","lastTransitionTime":"2026-01-01T00:00:00Z","observedGeneration":1}]}}"#;
    kubectl.run(
        &["-n", "team-a", "patch", "localcaissuer", "ca", "--subresource=status", "--type=merge", "-p", status],
        None,
    );
    let table = kubectl.run(&["-n", "team-a", "get", "localcaissuers"], None);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "REASON", "AGE"], "{table}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["ca", "True", "Checked"], "{table}");
    let wide = kubectl.run(&["-n", "team-a", "get", "localcaissuers", "-o", "wide"], None);
    assert!(wide.contains("MESSAGE") && wide.contains("Signing CA verified"), "{wide}");

    // The category every certbridge kind shares lists issuers of all adapters at once.
    let vault = "apiVersion: vault.certbridge.io/v1alpha1\nkind: VaultClusterIssuer\nmetadata: {name: bao}\nspec: {server: \"https://bao.example:8200\", path: pki/sign/web, auth: {tokenSecretRef: {name: bao-token}}}\n";
    kubectl.run(&["apply", "-f", "-"], Some(vault));
    let listed = kubectl.run(&["get", "certbridge", "-A", "-o", "name"], None);
    assert!(listed.contains("localcaissuer.example.certbridge.io/ca"), "{listed}");
    assert!(listed.contains("vaultclusterissuer.vault.certbridge.io/bao"), "{listed}");
    sim.shutdown().await;
}
