//! A diagnosis, not a CI test: why MIT refuses sspi's own Kerberos AP-REQ with channel bindings
//! (for an upstream report; the issuer does not send sspi's AP-REQ, see src/kerberos.rs).
//!
//! `cargo test -p certbridge-adcs --test adcs_e2e sspi_cbt -- --ignored --nocapture`
//!
//! 1. sspi 0.23 makes an AP-REQ with the simulator's `tls-server-end-point` binding (real MIT KDC);
//!    its authenticator is opened with the session key and its checksum and authorization data
//!    printed; it is sent to the simulator (MIT acceptor, EPA required): refused.
//! 2. The same authenticator with only the AP-options `ad-data` changed from sspi's 2 bytes to the
//!    4-byte little-endian value, re-encrypted with the same key: accepted.
//! 3. MIT's own initiator (python-gssapi, `client_aware_channel_bindings = true`) for the same
//!    binding, opened with the service's keytab key: the same element is 4 bytes, in AD-IF-RELEVANT.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use picky_krb::constants::key_usages::{AP_REQ_AUTHENTICATOR, TICKET_REP};
use picky_krb::crypto::CipherSuite;
use picky_krb::data_types::{Authenticator, AuthorizationData, EncTicketPart};
use picky_krb::gss_api::{ApplicationTag0, KrbMessage};
use picky_krb::messages::ApReq;
use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, DataRepresentation, Kerberos, KerberosConfig,
    SecurityBuffer, Sspi, SspiImpl, Username,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// One TLS connection to the simulator: the server certificate's binding, then one GET with the
/// token; the status line and WWW-Authenticate value.
async fn send(sim: &Sim, token: impl FnOnce(&[u8]) -> Vec<u8>) -> (String, Option<String>) {
    let mut roots = rustls::RootCertStore::empty();
    for b in pem::parse_many(&sim.root_pem).unwrap() {
        roots.add(rustls_pki_types::CertificateDer::from(b.into_contents())).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", sim.port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let binding = certbridge_adcs::client::tls_server_end_point(&cert).unwrap();
    let t = STANDARD.encode(token(&binding));
    let req = format!(
        "GET /certsrv/ HTTP/1.1\r\nHost: localhost\r\nAuthorization: Negotiate {t}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    // Read the head and the Content-Length body (the simulator keeps the connection open).
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = tls.read(&mut buf).await.unwrap_or(0);
        out.extend(&buf[..n]);
        let text = String::from_utf8_lossy(&out).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: ").and_then(|v| v.trim().parse::<usize>().ok()))
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
        if n == 0 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let www = text.lines().find_map(|l| l.strip_prefix("WWW-Authenticate: Negotiate ").map(str::to_owned));
    (status, www)
}

fn sec_channel_bindings(app: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 24];
    out.extend((app.len() as u32).to_le_bytes());
    out.extend(32u32.to_le_bytes());
    out.extend(app);
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn print_authenticator(who: &str, a: &Authenticator) {
    let cksum = a.0.cksum.0.as_ref().unwrap();
    println!(
        "{who}: checksum type {}, value {}",
        hex(cksum.0.cksumtype.0.as_unsigned_bytes_be()),
        hex(&cksum.0.checksum.0.0)
    );
    for ad in a.0.authorization_data.0.iter().flat_map(|d| d.0.0.iter()) {
        println!("{who}: ad-type {} ad-data {}", hex(ad.ad_type.0.as_unsigned_bytes_be()), hex(&ad.ad_data.0.0));
        if ad.ad_type.0.as_unsigned_bytes_be() == [1] {
            let inner: AuthorizationData = picky_asn1_der::from_bytes(&ad.ad_data.0.0).unwrap();
            for i in inner.0 {
                println!(
                    "{who}:   inside AD-IF-RELEVANT: ad-type {} ad-data {}",
                    hex(i.ad_type.0.as_unsigned_bytes_be()),
                    hex(&i.ad_data.0.0)
                );
            }
        }
    }
}

#[tokio::test]
#[ignore = "diagnosis for an upstream report: cargo test -p certbridge-adcs --test adcs_e2e sspi_cbt -- --ignored --nocapture"]
async fn sspi_cbt_encoding_is_what_mit_refuses() {
    let sim = Sim::start(SimOpts { mode: Mode::Kerberos, epa: "required", ..Default::default() });
    let env = sim.kdc.as_ref().unwrap().env.clone();
    // 1. sspi's own AP-REQ with bindings.
    let (env2, session) = (env.clone(), Arc::new(std::sync::Mutex::new(None)));
    let session2 = session.clone();
    let make = move |binding: &[u8]| -> Vec<u8> {
        let config = KerberosConfig::new_with_kdc_url(&format!("tcp://{}", env2["KRB5_KDC"]), "diag".into());
        let mut k = Kerberos::new_client_from_config(config).unwrap();
        let identity = AuthIdentity {
            username: Username::new_down_level_logon_name(&env2["KRB5_USER"], &env2["KRB5_REALM"]).unwrap(),
            password: env2["KRB5_PASSWORD"].clone().into(),
        };
        let mut creds = k
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Outbound)
            .with_auth_data(&identity.into())
            .execute(&mut k)
            .unwrap();
        let mut input = vec![
            SecurityBuffer::new(Vec::new(), BufferType::Token),
            SecurityBuffer::new(sec_channel_bindings(binding), BufferType::ChannelBindings),
        ];
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut builder = k
            .initialize_security_context()
            .with_credentials_handle(&mut creds.credentials_handle)
            .with_context_requirements(ClientRequestFlags::MUTUAL_AUTH)
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name("HTTP/localhost")
            .with_input(&mut input)
            .with_output(&mut output);
        struct Tcp;
        impl sspi::network_client::NetworkClient for Tcp {
            fn send(&self, r: &sspi::NetworkRequest) -> sspi::Result<Vec<u8>> {
                use std::io::{Read, Write};
                let mut s = std::net::TcpStream::connect((r.url.host_str().unwrap(), r.url.port().unwrap())).unwrap();
                s.write_all(&r.data).unwrap();
                let mut len = [0u8; 4];
                s.read_exact(&mut len).unwrap();
                let mut buf = vec![0u8; 4 + u32::from_be_bytes(len) as usize];
                buf[..4].copy_from_slice(&len);
                s.read_exact(&mut buf[4..]).unwrap();
                Ok(buf)
            }
        }
        k.initialize_security_context_impl(&mut builder).unwrap().resolve_with_client(&Tcp).unwrap();
        let key = k.query_context_session_key().unwrap().session_key.as_ref().clone();
        *session2.lock().unwrap() = Some(key);
        output[0].buffer.clone()
    };
    let token = Arc::new(std::sync::Mutex::new(Vec::new()));
    let token2 = token.clone();
    let (status, www) = send(&sim, move |b| {
        let t = make(b);
        *token2.lock().unwrap() = t.clone();
        t
    })
    .await;
    let token = token.lock().unwrap().clone();
    let key = session.lock().unwrap().clone().unwrap();
    let msg = KrbMessage::<ApReq>::decode_application_krb_message(&token).unwrap().0;
    let cipher = CipherSuite::Aes256CtsHmacSha196.cipher();
    let plain = cipher.decrypt(&key, AP_REQ_AUTHENTICATOR, &msg.krb_msg.0.authenticator.0.cipher.0.0).unwrap();
    let auth: Authenticator = picky_asn1_der::from_bytes(&plain).unwrap();
    print_authenticator("sspi 0.23.1", &auth);
    let code = www.as_deref().and_then(certbridge_adcs::kerberos::server_error_code);
    println!("sspi 0.23.1: MIT acceptor answered {status:?}, KRB-ERROR code {code:?}");
    assert!(status.contains("401"), "MIT accepted sspi's AP-REQ: {status}");

    // 2. The same authenticator with the AP-options value as 4 bytes.
    let mut fixed = auth.clone();
    for ad in fixed.0.authorization_data.0.as_mut().unwrap().0.0.iter_mut() {
        if ad.ad_type.0.as_unsigned_bytes_be() == [0x00, 0x8f] || ad.ad_type.0.as_unsigned_bytes_be() == [0x8f] {
            ad.ad_data.0.0 = vec![0x00, 0x40, 0x00, 0x00];
        }
    }
    let sealed = cipher.encrypt(&key, AP_REQ_AUTHENTICATOR, &picky_asn1_der::to_vec(&fixed).unwrap()).unwrap();
    let mut ap = msg.krb_msg.clone();
    ap.0.authenticator.0.cipher.0.0 = sealed;
    let patched = picky_asn1_der::to_vec(&ApplicationTag0(KrbMessage {
        krb5_oid: msg.krb5_oid.clone(),
        krb5_token_id: msg.krb5_token_id,
        krb_msg: ap,
    }))
    .unwrap();
    let (status, _) = send(&sim, move |_| patched).await;
    println!("sspi 0.23.1 with ad-data 00400000: MIT acceptor answered {status:?}");
    assert!(status.contains("200"), "{status}");

    // 3. MIT's initiator for the same binding, opened with the service key.
    let script = r#"
import sys, gssapi, gssapi.raw
user, realm, pw, binding = sys.argv[1], sys.argv[2], sys.argv[3].encode(), bytes.fromhex(sys.argv[4])
name = gssapi.Name(f"{user}@{realm}", gssapi.NameType.kerberos_principal)
creds = gssapi.raw.acquire_cred_with_password(name, pw, usage="initiate").creds
ctx = gssapi.SecurityContext(name=gssapi.Name("HTTP@localhost", gssapi.NameType.hostbased_service), creds=creds,
    usage="initiate", mech=gssapi.MechType.kerberos, channel_bindings=gssapi.raw.ChannelBindings(application_data=binding),
    flags=gssapi.RequirementFlag.mutual_authentication)
sys.stdout.write(ctx.step().hex())
"#;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("krb5.conf");
    let base = std::fs::read_to_string(&env["KRB5_CONFIG"]).unwrap();
    std::fs::write(&conf, base.replace("[libdefaults]", "[libdefaults]\n    client_aware_channel_bindings = true"))
        .unwrap();
    let python = std::env::var("CERTBRIDGE_ADCS_PYTHON")
        .unwrap_or_else(|_| format!("{}/../../.work/adcs-venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let (tx, rx) = std::sync::mpsc::channel();
    let (status, _) = send(&sim, move |b| {
        let out = std::process::Command::new(&python)
            .args(["-c", script, &env["KRB5_USER"], &env["KRB5_REALM"], &env["KRB5_PASSWORD"], &hex(b)])
            .env("KRB5_CONFIG", &conf)
            .env("KRB5CCNAME", "MEMORY:diag")
            .output()
            .unwrap();
        let t: Vec<u8> = (0..out.stdout.len() / 2)
            .map(|i| u8::from_str_radix(std::str::from_utf8(&out.stdout[2 * i..2 * i + 2]).unwrap(), 16).unwrap())
            .collect();
        tx.send(t.clone()).unwrap();
        t
    })
    .await;
    let mit = rx.recv().unwrap();
    let keytab = std::fs::read(&sim.kdc.as_ref().unwrap().env["KRB5_KTNAME"]).unwrap();
    let service = certbridge_adcs::keytab::key_for(&keytab, &sim.kdc.as_ref().unwrap().env["KRB5_SPN"]).unwrap();
    let msg = KrbMessage::<ApReq>::decode_application_krb_message(&mit).unwrap().0;
    let ticket = cipher.decrypt(&service.key, TICKET_REP, &msg.krb_msg.0.ticket.0.0.enc_part.0.cipher.0.0).unwrap();
    let ticket: EncTicketPart = picky_asn1_der::from_bytes(&ticket).unwrap();
    let session_key = ticket.0.key.0.key_value.0.0.clone();
    let plain = cipher.decrypt(&session_key, AP_REQ_AUTHENTICATOR, &msg.krb_msg.0.authenticator.0.cipher.0.0).unwrap();
    let auth: Authenticator = picky_asn1_der::from_bytes(&plain).unwrap();
    print_authenticator("MIT 1.20 initiator", &auth);
    println!("MIT 1.20 initiator: MIT acceptor answered {status:?}");
    assert!(status.contains("200"), "{status}");
}
