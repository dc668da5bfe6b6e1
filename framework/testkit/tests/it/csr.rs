//! CertificateSigningRequest approval and status subresources through kube-rs.

use crate::common::*;
use certbridge_testkit::KubeSim;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn csr(name: &str, signer: &str) -> CertificateSigningRequest {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"request": b64(&fake_csr_pem()), "signerName": signer, "usages": ["digital signature"], "expirationSeconds": 3600}
    }))
    .unwrap()
}

#[tokio::test]
async fn csr_approval_and_status_are_separate_subresources() {
    let sim = KubeSim::start().await.unwrap();
    let api: Api<CertificateSigningRequest> = Api::all(sim.client());
    let created = api
        .create(&PostParams::default(), &csr("c1", "simpleclusterissuers.testing.certbridge.io/my-issuer"))
        .await
        .unwrap();
    assert!(created.spec.username.is_some());
    api.create(&PostParams::default(), &csr("c2", "example.com/other")).await.unwrap();

    // Invalid specs.
    let mut bad = csr("bad", "x/y");
    bad.spec.usages = Some(vec!["flying".into()]);
    let e = api_err(api.create(&PostParams::default(), &bad).await);
    assert!(e.message.contains("spec.usages[0]: Unsupported value: \"flying\""), "{}", e.message);
    let mut bad = csr("bad", "x/y");
    bad.spec.expiration_seconds = Some(60);
    assert_eq!(api_err(api.create(&PostParams::default(), &bad).await).code, 422);

    // A certificate cannot be issued before approval.
    let cert = json!({"status": {"certificate": b64(&fake_cert_pem())}});
    let e = api_err(api.patch_status("c1", &PatchParams::default(), &Patch::Merge(&cert)).await);
    assert_eq!(e.code, 422);
    assert!(e.message.contains("status.certificate"), "{}", e.message);

    // Approval via the approval subresource; the status subresource cannot approve.
    let approved =
        json!({"status": {"conditions": [{"type": "Approved", "status": "True", "reason": "Test", "message": "ok"}]}});
    let o = api.patch_status("c1", &PatchParams::default(), &Patch::Merge(&approved)).await.unwrap();
    assert!(o.status.and_then(|s| s.conditions).unwrap_or_default().is_empty());
    let o = api.patch_approval("c1", &PatchParams::default(), &Patch::Merge(&approved)).await.unwrap();
    let conds = o.status.unwrap().conditions.unwrap();
    assert_eq!(conds[0].type_, "Approved");
    assert!(conds[0].last_update_time.is_some());
    // Approved and Denied together are invalid.
    let both = json!({"status": {"conditions": [
        {"type": "Approved", "status": "True", "reason": "Test", "message": "ok"},
        {"type": "Denied", "status": "True", "reason": "Test", "message": "no"}]}});
    assert_eq!(api_err(api.patch_approval("c1", &PatchParams::default(), &Patch::Merge(&both)).await).code, 422);
    // The approval endpoint ignores spec changes.
    let o = api
        .patch_approval("c1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"signerName": "evil/x"}})))
        .await
        .unwrap();
    assert_eq!(o.spec.signer_name, "simpleclusterissuers.testing.certbridge.io/my-issuer");

    // Now the signer may write the certificate (SSA on status, like issuer-lib), once.
    let ssa = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "status": {"certificate": b64(&fake_cert_pem())}});
    let o = api.patch_status("c1", &PatchParams::apply("signer").force(), &Patch::Apply(&ssa)).await.unwrap();
    assert!(o.status.as_ref().unwrap().certificate.is_some());
    assert_eq!(o.status.unwrap().conditions.unwrap()[0].type_, "Approved");
    let changed = json!({"status": {"certificate": b64(&format!("{}{}", fake_cert_pem(), fake_cert_pem()))}});
    let e = api_err(api.patch_status("c1", &PatchParams::default(), &Patch::Merge(&changed)).await);
    assert!(e.message.contains("may not modify existing certificate"), "{}", e.message);
    // Not a certificate at all.
    let junk = json!({"status": {"certificate": b64("hello")}});
    assert_eq!(api_err(api.patch_status("c2", &PatchParams::default(), &Patch::Merge(&junk)).await).code, 422);

    // signerName field selector.
    let l = api.list(&ListParams::default().fields("spec.signerName=example.com/other")).await.unwrap();
    assert_eq!(l.items.len(), 1);
    assert_eq!(l.items[0].metadata.name.as_deref(), Some("c2"));
}
