//! A Certificate author (untrusted) cannot steer the issuer owner's EJBCA credentials to another
//! CA, profile or end entity unless the issuer's spec.allowedOverrides allows it.

use certbridge::overrides::AllowedOverride;
use certbridge::{SignContext, SignError, Signer};
use certbridge_ejbca::EjbcaSigner;

use crate::common::*;

/// The one place that reads a reaction (the SignError shape changes with framework v2).
fn reaction(e: &SignError) -> &'static str {
    match e.reaction {
        certbridge::Reaction::Permanent => "permanent",
        certbridge::Reaction::IssuerNotReady => "not-ready",
        _ => "other",
    }
}

fn enrolls(sim: &certbridge_ejbca::sim::EjbcaSim) -> usize {
    sim.requests().into_iter().filter(|r| r.operation == "enrollPkcs10Certificate").count()
}

#[tokio::test]
async fn override_annotations_need_the_issuers_consent() {
    let sim = sim().await;
    let res = resources(&sim, Mode::Mtls);
    let signer = EjbcaSigner::new();
    // Default spec: no override honoured. A tenant asks for a SubCA profile, another team's CA,
    // another team's end entity.
    let mut s = spec(&sim);
    s.allowed_overrides = vec![];
    let iss = issuer(s);
    for (key, value) in [
        ("certificateProfileName", "SubCA"),
        ("certificateAuthorityName", "OtherCA"),
        ("endEntityName", "team-b-web"),
        ("endEntityProfileName", "K8S"),
    ] {
        let ann = format!("ejbca.certbridge.io/{key}");
        let e = signer
            .sign(&request("t.example.com", &[(&ann, value)]), &iss, &mut SignContext::offline(res.clone()))
            .await
            .unwrap_err();
        assert_eq!(reaction(&e), "permanent", "{e}");
        assert!(e.to_string().contains(&ann) && e.to_string().contains("spec.allowedOverrides"), "{e}");
    }
    assert_eq!(enrolls(&sim), 0, "nothing was enrolled");

    // The issuer owner allows profile overrides, but only to SERVER.
    let mut s = spec(&sim);
    s.allowed_overrides =
        vec![AllowedOverride { name: "certificateProfileName".into(), values: vec!["SERVER".into()] }];
    let iss = issuer(s);
    let e = signer
        .sign(
            &request("t.example.com", &[("ejbca.certbridge.io/certificateProfileName", "SubCA")]),
            &iss,
            &mut SignContext::offline(res.clone()),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("one of [\"SERVER\"]"), "{e}");
    assert_eq!(enrolls(&sim), 0);
    signer
        .sign(
            &request("t.example.com", &[("ejbca.certbridge.io/certificateProfileName", "SERVER")]),
            &iss,
            &mut SignContext::offline(res.clone()),
        )
        .await
        .unwrap();
    assert_eq!(enrolls(&sim), 1);
    // Other overrides stay refused on that issuer.
    let e = signer
        .sign(
            &request("t.example.com", &[("ejbca.certbridge.io/certificateAuthorityName", "OtherCA")]),
            &iss,
            &mut SignContext::offline(res),
        )
        .await
        .unwrap_err();
    assert_eq!(reaction(&e), "permanent", "{e}");

    // A typo in the list is a spec error naming the entry.
    let mut s = spec(&sim);
    s.allowed_overrides = vec![AllowedOverride { name: "certificateProfile".into(), values: vec![] }];
    use certbridge::IssuerSpec as _;
    assert!(s.validate().unwrap_err().contains("spec.allowedOverrides[0].name"));
}
