//! Resource exhaustion: an EJBCA endpoint (or anything answering at `spec.hostname`) that streams a
//! 1 GiB body must make the request fail cleanly, naming the limit, while the controller's memory
//! stays flat: the client reads at most `certbridge::http::CHAIN_BODY_LIMIT` (4 MiB) and stops.

use certbridge::{Reaction, Resources, SignContext, Signer};
use certbridge_ejbca::EjbcaSigner;
use certbridge_testkit::endless::{EndlessServer, rss_kib};

use crate::common::*;

#[tokio::test]
async fn an_endless_answer_fails_cleanly_with_flat_memory() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // HTTPS with a certificate the issuer's CA bundle trusts: everything EJBCA would be, but the body.
    let endless = EndlessServer::https().await.unwrap();
    let ejbca = sim().await;
    let (cert, key) = ejbca.client_identity();
    let res = Resources::from_objects(
        NS,
        vec![secret("creds", &[("tls.crt", &cert), ("tls.key", &key)])],
        vec![config_map("ejbca-ca", "ca.crt", endless.cert_pem().unwrap())],
    );
    let mut s = spec(&ejbca);
    s.hostname = endless.addr().to_string();
    let iss = issuer(s);
    let signer = EjbcaSigner::new();

    let before = rss_kib();
    let checked = signer.check(&iss, &res).await.unwrap_err();
    let signed =
        signer.sign(&request("t.example.com", &[]), &iss, &mut SignContext::offline(res.clone())).await.unwrap_err();
    let grown_mib = rss_kib().saturating_sub(before) / 1024;

    eprintln!(
        "1 GiB answers: RSS grew {grown_mib} MiB, the server got {} MiB out before the client left",
        endless.sent_mib()
    );
    for e in [&checked, &signed] {
        assert!(e.to_string().contains("larger than 4194304 bytes"), "the error names the limit: {e}");
        assert!(!matches!(e.reaction, Reaction::Permanent), "a misbehaving server is retried, not final: {e:?}");
    }
    assert!(grown_mib < 64, "RSS grew by {grown_mib} MiB reading two 1 GiB answers");
    assert!(
        endless.sent_mib() < 2 * 64,
        "the client stopped reading long before 1 GiB ({} MiB sent)",
        endless.sent_mib()
    );
    assert_eq!(ejbca.enroll_calls(), 0, "the simulator only lent its client identity");
}
