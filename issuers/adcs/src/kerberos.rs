//! Kerberos for certsrv (`Authorization: Negotiate` with a raw krb5 AP-REQ): one service ticket
//! per issuer, reused for every connection, with the channel binding of each connection.
//!
//! ## Who does what
//! * `sspi` (pure Rust) runs the **AS and TGS exchanges** — with a password, or with the key read
//!   from a keytab (`crate::keytab`; sspi takes a raw key, not a keytab file) — and hands back
//!   the service ticket inside its AP-REQ plus the ticket's session key
//!   (`query_context_session_key`, read before any AP-REP sets a sub-session key).
//! * This module caches that ticket per issuer (one AS exchange per issuer, not per request or
//!   connection) and builds **each connection's AP-REQ** from it with `picky-krb` (the ASN.1 types
//!   and RFC 3961/3962 ciphers sspi itself uses): a fresh authenticator with the RFC 4121 §4.1.1
//!   checksum (type 0x8003) whose `Bnd` field is the MD5 of the connection's
//!   `gss_channel_bindings_struct` (RFC 2744 §3.11, application data = RFC 5929
//!   `tls-server-end-point:<hash>`), and — when binding — the MS-KILE `KERB_AP_OPTIONS_CBT`
//!   option in an `AD-IF-RELEVANT` element, as Windows and MIT clients send it.
//!
//! ## Why not sspi's own AP-REQ with channel bindings
//! sspi 0.23.1 (and sspi-rs master as of 2026-08) puts `AD-AUTH-DATA-AP-OPTIONS` (ad-type 143)
//! into the authenticator with `ad-data` = the **2 bytes** `40 00` (picky-krb's
//! `KERB_AP_OPTIONS_CBT: [u8; 2]`). MS-KILE 2.2.11 defines the value as a 32-bit little-endian
//! integer, 0x00004000 = `00 40 00 00`; MIT krb5 ≥ 1.19 (`check_cbt()` in
//! `src/lib/gssapi/krb5/accept_sec_context.c`) refuses any AP-options element whose length is not
//! 4 with `KRB5KRB_AP_ERR_MSG_TYPE` ("Invalid message type") — the failure seen before this module
//! existed. The `Bnd` hash sspi computes is correct. sspi has no ticket reuse either, so building
//! the AP-REQ here from the cached ticket fixes both with one mechanism.
//!
//! ## Renewal
//! The client cannot read a service ticket's end time (it is inside the part encrypted for the
//! service), so a ticket is replaced after [`TICKET_MAX_AGE`] (well inside AD's and MIT's default
//! 10-hour lifetime) and whenever certsrv refuses an AP-REQ made from it (expired, service key
//! changed): the caller drops it with [`KerberosClient::forget`] and asks again.
//!
//! ## Clocks
//! sspi corrects this host's clock against the KDC's (it retries the AS exchange once after
//! `KRB_AP_ERR_SKEW` with the KDC's time). The offset it applied is read back from the
//! authenticator it built and applied to every authenticator made here, so a skewed node still
//! works where certsrv's clock agrees with the KDC's. A remaining skew (certsrv's clock off, or
//! the KDC's correction refused) comes back as `KRB_AP_ERR_SKEW` and is reported as such.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use picky_asn1::date::GeneralizedTime;
use picky_asn1::wrapper::{
    ExplicitContextTag0, ExplicitContextTag1, ExplicitContextTag2, ExplicitContextTag3, ExplicitContextTag4,
    ExplicitContextTag5, ExplicitContextTag6, ExplicitContextTag7, ExplicitContextTag8, IntegerAsn1, OctetStringAsn1,
    Optional,
};
use picky_krb::constants::key_usages::AP_REQ_AUTHENTICATOR;
use picky_krb::crypto::CipherSuite;
use picky_krb::data_types::{
    ApOptions, Authenticator, AuthenticatorInner, AuthorizationData, AuthorizationDataInner, Checksum, EncryptionKey,
    KerberosTime, PrincipalName, Realm, Ticket,
};
use picky_krb::gss_api::{ApplicationTag0, KrbMessage};
use picky_krb::messages::{ApReq, ApReqInner, KrbError};
use rand::RngCore;
use sspi::network_client::NetworkClient;
use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, Credentials, DataRepresentation, Kerberos,
    KerberosConfig, KeytabIdentity, NetworkProtocol, NetworkRequest, SecurityBuffer, Sspi, SspiImpl, Username,
};
use time::OffsetDateTime;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use certbridge::SignError;

use crate::client::AdcsError;
use crate::spec::KerberosAuth;

/// A cached service ticket is replaced after this long (tickets usually live 10 hours).
pub const TICKET_MAX_AGE: Duration = Duration::from_secs(3600);
/// GSS checksum type of the krb5 mechanism's authenticator checksum (RFC 4121 §4.1.1).
const GSS_CHECKSUM_TYPE: u32 = 0x8003;
/// RFC 4120 §7.5.4 `AD-IF-RELEVANT`.
const AD_IF_RELEVANT: u8 = 1;
/// MS-KILE 2.2.11 `AD-AUTH-DATA-AP-OPTIONS`.
const AD_AUTH_DATA_AP_OPTIONS: u8 = 143;
/// MS-KILE 2.2.11 `KERB_AP_OPTIONS_CBT`: "the client supports channel binding" (32-bit LE).
const KERB_AP_OPTIONS_CBT: u32 = 0x4000;

/// The client's long-term secret.
pub enum Credential {
    /// The principal's password (sspi derives the key with the KDC's salt).
    Password(Zeroizing<String>),
    /// A key from a keytab (`crate::keytab::key_for`).
    Key {
        /// RFC 3961 enctype (17 or 18).
        enctype: i32,
        /// The raw key.
        key: Zeroizing<Vec<u8>>,
    },
}

/// Kerberos exchange counters (tests and benchmark).
#[derive(Debug, Default)]
pub struct KerberosStats {
    /// AS exchanges started (each one is followed by a TGS exchange).
    pub as_exchanges: AtomicU64,
    /// AP-REQs built from a cached ticket.
    pub ap_reqs: AtomicU64,
}

/// A service ticket and what is needed to make authenticators for it.
pub struct ServiceTicket {
    krb5_oid: picky_asn1::wrapper::ObjectIdentifierAsn1,
    token_id: [u8; 2],
    ap_options: ApOptions,
    ticket: Ticket,
    cipher: CipherSuite,
    etype: u8,
    session_key: Zeroizing<Vec<u8>>,
    crealm: Realm,
    cname: PrincipalName,
    /// The GSS flags (RFC 4121 §4.1.1.1) sspi chose for the context requirements.
    gss_flags: [u8; 4],
    /// sspi's KDC-corrected clock minus this host's.
    clock_offset: time::Duration,
    obtained: Instant,
}

impl std::fmt::Debug for ServiceTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceTicket(etype {}, obtained {:?} ago)", self.etype, self.obtained.elapsed())
    }
}

/// One AP-REQ and where it came from.
pub struct Token {
    /// The GSS-wrapped AP-REQ, base64 (the `Negotiate` header's value).
    pub base64: String,
    /// The ticket it was made from (to [`KerberosClient::forget`] when certsrv refuses it).
    pub ticket: Arc<ServiceTicket>,
    /// Whether the ticket was obtained for this token (an AS and a TGS exchange just ran).
    pub fresh: bool,
}

/// One issuer's Kerberos identity and its cached service ticket.
pub struct KerberosClient {
    /// `user@REALM`.
    principal: String,
    credential: Credential,
    kdcs: Vec<String>,
    spn: String,
    timeout: Duration,
    ticket: Mutex<Option<Arc<ServiceTicket>>>,
    /// Added to this host's clock for authenticators on top of the KDC correction (tests only).
    extra_skew: std::sync::Mutex<time::Duration>,
    stats: KerberosStats,
}

impl std::fmt::Debug for KerberosClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.credential {
            Credential::Password(_) => "password",
            Credential::Key { .. } => "keytab",
        };
        write!(f, "Kerberos({:?} with a {how} for {:?} via {:?})", self.principal, self.spn, self.kdcs)
    }
}

impl KerberosClient {
    /// `principal` is `user@REALM`; `kdcs` are `host:port` (TCP), tried in order; `spn` is e.g.
    /// `HTTP/ca.example.com`; `timeout` bounds each KDC round trip.
    pub fn new(principal: String, credential: Credential, kdcs: Vec<String>, spn: String, timeout: Duration) -> Self {
        KerberosClient {
            principal,
            credential,
            kdcs,
            spn,
            timeout,
            ticket: Mutex::new(None),
            extra_skew: std::sync::Mutex::new(time::Duration::ZERO),
            stats: KerberosStats::default(),
        }
    }

    /// The exchange counters.
    pub fn stats(&self) -> &KerberosStats {
        &self.stats
    }

    /// Shifts the clock of the authenticators made here by `seconds` (tests of skew reporting).
    #[doc(hidden)]
    pub fn skew_clock_for_tests(&self, seconds: i64) {
        *self.extra_skew.lock().expect("lock poisoned") = time::Duration::seconds(seconds);
    }

    /// The service principal (`HTTP/host`).
    pub fn spn(&self) -> &str {
        &self.spn
    }

    /// The AP-REQ for a new connection whose channel binding (RFC 5929 application data) is
    /// `binding`.
    pub async fn token(&self, binding: Option<&[u8]>) -> Result<Token, AdcsError> {
        let (ticket, fresh) = self.ticket().await?;
        let skew = *self.extra_skew.lock().expect("lock poisoned");
        let now = OffsetDateTime::now_utc() + ticket.clock_offset + skew;
        let token = ap_req(&ticket, binding, now)?;
        self.stats.ap_reqs.fetch_add(1, Ordering::Relaxed);
        Ok(Token { base64: STANDARD.encode(token), ticket, fresh })
    }

    /// Drops `used` from the cache (if it is still the cached ticket): the next token runs the
    /// AS and TGS exchanges again.
    pub async fn forget(&self, used: &Arc<ServiceTicket>) {
        let mut cached = self.ticket.lock().await;
        if cached.as_ref().is_some_and(|c| Arc::ptr_eq(c, used)) {
            *cached = None;
        }
    }

    /// The cached ticket, or a new one (one acquisition at a time: concurrent connections wait
    /// for it instead of each running an AS exchange).
    async fn ticket(&self) -> Result<(Arc<ServiceTicket>, bool), AdcsError> {
        let mut cached = self.ticket.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| t.obtained.elapsed() < TICKET_MAX_AGE) {
            return Ok((t.clone(), false));
        }
        self.stats.as_exchanges.fetch_add(1, Ordering::Relaxed);
        let principal = self.principal.clone();
        let credential = match &self.credential {
            Credential::Password(p) => Credential::Password(p.clone()),
            Credential::Key { enctype, key } => Credential::Key { enctype: *enctype, key: key.clone() },
        };
        let (kdcs, spn, timeout) = (self.kdcs.clone(), self.spn.clone(), self.timeout);
        // sspi's Kerberos client talks to the KDC through a blocking callback.
        let t = tokio::task::spawn_blocking(move || acquire(&principal, &credential, &kdcs, &spn, timeout))
            .await
            .map_err(|e| AdcsError::Config(format!("Kerberos: {e}")))??;
        let t = Arc::new(t);
        *cached = Some(t.clone());
        Ok((t, true))
    }
}

/// The client for `spec.auth.kerberos` from its Secret (`username` and `password`, or `keytab` —
/// the binary keytab file — with an optional `username`), and the bytes that identify the
/// credentials (for the signer's client fingerprint).
pub fn from_secret(
    k: &KerberosAuth,
    url: &str,
    namespace: &str,
    mut data: BTreeMap<String, Zeroizing<Vec<u8>>>,
    timeout: Duration,
) -> Result<(KerberosClient, Zeroizing<Vec<u8>>), SignError> {
    let secret = format!("Secret \"{namespace}/{}\"", k.secret_name);
    let text = |v: Zeroizing<Vec<u8>>, key: &str| -> Result<Zeroizing<String>, SignError> {
        String::from_utf8(v.to_vec()).map(|s| Zeroizing::new(s.trim().to_owned())).map_err(|_| {
            SignError::issuer_not_ready(format!("{secret} key \"{key}\" is not UTF-8 text: fix the Secret"))
        })
    };
    let realm = k.realm.trim().to_ascii_uppercase();
    let username = data.remove("username").map(|v| text(v, "username")).transpose()?;
    let qualify = |user: &str| if user.contains('@') { user.to_owned() } else { format!("{user}@{realm}") };
    let (principal, credential, mut material) = match (data.remove("password"), data.remove("keytab")) {
        (Some(_), Some(_)) => {
            return Err(SignError::issuer_not_ready(format!(
                "{secret} has both \"password\" and \"keytab\" (spec.auth.kerberos): keep one of them"
            )));
        }
        (None, None) => {
            return Err(SignError::issuer_not_ready(format!(
                "{secret} has neither \"password\" nor \"keytab\" (spec.auth.kerberos needs username and password, or keytab): add one"
            )));
        }
        (Some(password), None) => {
            let Some(user) = username else {
                return Err(SignError::issuer_not_ready(format!(
                    "{secret} has no key \"username\" (spec.auth.kerberos with a password needs it)"
                )));
            };
            let password = text(password, "password")?;
            let principal = qualify(&user);
            let material = Zeroizing::new([b"password:".as_slice(), password.as_bytes()].concat());
            (principal, Credential::Password(password), material)
        }
        (None, Some(keytab)) => {
            let not_ready = |m: String| SignError::issuer_not_ready(format!("{secret} key \"keytab\": {m}"));
            let principal = match &username {
                Some(user) => qualify(user),
                None => crate::keytab::only_principal(&keytab).map_err(not_ready)?,
            };
            let key = crate::keytab::key_for(&keytab, &principal).map_err(not_ready)?;
            let material = Zeroizing::new([b"keytab:".as_slice(), &keytab[..]].concat());
            (principal, Credential::Key { enctype: key.enctype, key: key.key }, material)
        }
    };
    material.extend(principal.as_bytes());
    let host = crate::client::parse_url(url).map_err(SignError::permanent)?.0;
    let spn = k.spn.clone().unwrap_or_else(|| format!("HTTP/{host}"));
    let kdcs: Vec<String> =
        k.kdc.iter().map(|h| if h.contains(':') { h.trim().to_owned() } else { format!("{}:88", h.trim()) }).collect();
    Ok((KerberosClient::new(principal, credential, kdcs, spn, timeout), material))
}

/// Sends one KDC request over TCP (the request already carries its length prefix).
struct Kdc {
    timeout: Duration,
}

impl NetworkClient for Kdc {
    fn send(&self, request: &NetworkRequest) -> sspi::Result<Vec<u8>> {
        let fail = |m: String| sspi::Error::new(sspi::ErrorKind::NoAuthenticatingAuthority, m);
        if request.protocol != NetworkProtocol::Tcp {
            return Err(fail(format!("KDC protocol {:?} is not supported: use host:port (TCP)", request.protocol)));
        }
        let addr = format!("{}:{}", request.url.host_str().unwrap_or_default(), request.url.port().unwrap_or(88));
        let sock = addr
            .to_socket_addrs()
            .map_err(|e| fail(format!("KDC {addr}: {e}")))?
            .next()
            .ok_or_else(|| fail(format!("KDC {addr}: no address")))?;
        let mut s = TcpStream::connect_timeout(&sock, self.timeout).map_err(|e| fail(format!("KDC {addr}: {e}")))?;
        s.set_read_timeout(Some(self.timeout)).ok();
        s.write_all(&request.data).map_err(|e| fail(format!("KDC {addr}: {e}")))?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).map_err(|e| fail(format!("KDC {addr}: {e}")))?;
        let n = u32::from_be_bytes(len) as usize;
        if n > 1024 * 1024 {
            return Err(fail(format!("KDC {addr}: answer of {n} bytes is too large")));
        }
        let mut buf = vec![0u8; 4 + n];
        buf[..4].copy_from_slice(&len);
        s.read_exact(&mut buf[4..]).map_err(|e| fail(format!("KDC {addr}: {e}")))?;
        Ok(buf)
    }
}

/// A plain-language reading of a failed AS/TGS exchange (djkormo#159: preauth errors were
/// opaque). Every variant becomes "issuer not ready" naming the fix.
fn explain(e: &sspi::Error, principal: &str, spn: &str) -> AdcsError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("pre-authentication") || lower.contains("preauth") {
        AdcsError::Unauthorized(format!(
            "Kerberos: the KDC refused the key of {principal} (KDC_ERR_PREAUTH_FAILED, preauthentication failed): fix the password or keytab in the Secret (a keytab must hold the principal's current kvno): {text}"
        ))
    } else if e.error_type == sspi::ErrorKind::TimeSkew || lower.contains("skew") {
        AdcsError::Config(format!(
            "Kerberos: clock skew between this node and the KDC is too large (KRB_AP_ERR_SKEW): synchronise the clocks (NTP): {text}"
        ))
    } else if lower.contains("client not found") {
        AdcsError::Unauthorized(format!(
            "Kerberos: the KDC does not know {principal} (KDC_ERR_C_PRINCIPAL_UNKNOWN): fix the Secret's username or spec.auth.kerberos.realm: {text}"
        ))
    } else if lower.contains("server not found") {
        AdcsError::Config(format!(
            "Kerberos: the KDC does not know the service principal {spn} (KDC_ERR_S_PRINCIPAL_UNKNOWN): set spec.auth.kerberos.spn to certsrv's SPN (setspn -L <account>): {text}"
        ))
    } else {
        AdcsError::Config(format!("Kerberos: {text}"))
    }
}

/// AS + TGS through sspi with the first KDC that answers; the ticket and its session key.
fn acquire(
    principal: &str,
    credential: &Credential,
    kdcs: &[String],
    spn: &str,
    timeout: Duration,
) -> Result<ServiceTicket, AdcsError> {
    // `REALM\user`: sspi then asks for an NT-PRINCIPAL in that realm; a UPN would go out as an
    // enterprise name, which MIT KDCs do not resolve.
    let username = match principal.rsplit_once('@') {
        Some((user, realm)) => Username::new_down_level_logon_name(user, realm),
        None => Username::parse(principal),
    }
    .map_err(|e| AdcsError::Config(format!("Kerberos principal {principal:?}: {e}")))?;
    let credentials: Credentials = match credential {
        Credential::Password(p) => AuthIdentity { username, password: p.to_string().into() }.into(),
        Credential::Key { enctype, key } => KeytabIdentity {
            principal: username,
            key: key.to_vec().into(),
            key_enctype: CipherSuite::try_from(*enctype as usize)
                .map_err(|_| AdcsError::Config(format!("Kerberos: keytab enctype {enctype} is not supported")))?,
        }
        .into(),
    };
    let mut last = AdcsError::Config("Kerberos: no KDC configured".into());
    for kdc in kdcs {
        let config = KerberosConfig::new_with_kdc_url(&format!("tcp://{kdc}"), "certbridge".into());
        let mut k = Kerberos::new_client_from_config(config).map_err(|e| explain(&e, principal, spn))?;
        let mut creds = k
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Outbound)
            .with_auth_data(&credentials)
            .execute(&mut k)
            .map_err(|e| explain(&e, principal, spn))?;
        // No channel bindings here: this AP-REQ only carries the ticket out; the ones sent are
        // made by `ap_req`.
        let mut input = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut builder = k
            .initialize_security_context()
            .with_credentials_handle(&mut creds.credentials_handle)
            .with_context_requirements(ClientRequestFlags::MUTUAL_AUTH)
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name(spn)
            .with_input(&mut input)
            .with_output(&mut output);
        let result = k
            .initialize_security_context_impl(&mut builder)
            .map_err(|e| explain(&e, principal, spn))?
            .resolve_with_client(&Kdc { timeout });
        match result {
            Ok(_) => {
                // Before an AP-REP is processed this is the ticket's session key (sspi prefers a
                // sub-session key, which only the AP-REP sets).
                let key = k
                    .query_context_session_key()
                    .map_err(|e| AdcsError::Config(format!("Kerberos: reading the session key: {e}")))?;
                return from_sspi_token(&output[0].buffer, Zeroizing::new(key.session_key.as_ref().clone()));
            }
            Err(e) if e.error_type == sspi::ErrorKind::NoAuthenticatingAuthority => last = explain(&e, principal, spn),
            Err(e) => return Err(explain(&e, principal, spn)),
        }
    }
    Err(last)
}

fn asn1_err(what: &str, e: impl std::fmt::Display) -> AdcsError {
    AdcsError::Config(format!("Kerberos: {what}: {e}"))
}

/// The ticket, options and client name out of sspi's GSS-wrapped AP-REQ, checked by decrypting
/// its authenticator with `session_key`.
fn from_sspi_token(token: &[u8], session_key: Zeroizing<Vec<u8>>) -> Result<ServiceTicket, AdcsError> {
    let msg = KrbMessage::<ApReq>::decode_application_krb_message(token)
        .map_err(|e| asn1_err("sspi's AP-REQ does not decode", format!("{e:?}")))?
        .0;
    let ap = msg.krb_msg.0;
    let etype_bytes = ap.authenticator.0.etype.0.as_unsigned_bytes_be().to_vec();
    let etype = *etype_bytes.last().unwrap_or(&0);
    let cipher = CipherSuite::try_from(usize::from(etype)).map_err(|_| {
        AdcsError::Config(format!("Kerberos: the ticket's session key has enctype {etype}, which is not supported"))
    })?;
    let plain = cipher
        .cipher()
        .decrypt(&session_key, AP_REQ_AUTHENTICATOR, &ap.authenticator.0.cipher.0.0)
        .map_err(|e| asn1_err("the session key does not open sspi's authenticator", format!("{e:?}")))?;
    let auth: Authenticator =
        picky_asn1_der::from_bytes(&plain).map_err(|e| asn1_err("sspi's authenticator does not decode", e))?;
    let auth = auth.0;
    let ctime = OffsetDateTime::try_from(auth.ctime.0.0.clone())
        .map_err(|e| asn1_err("sspi's authenticator time", format!("{e:?}")))?;
    let gss_flags = auth
        .cksum
        .0
        .as_ref()
        .and_then(|c| c.0.checksum.0.0.get(20..24))
        .map(|f| <[u8; 4]>::try_from(f).expect("4 bytes"))
        .unwrap_or([0; 4]);
    Ok(ServiceTicket {
        krb5_oid: msg.krb5_oid,
        token_id: msg.krb5_token_id,
        ap_options: ap.ap_options.0,
        ticket: ap.ticket.0,
        cipher,
        etype,
        session_key,
        crealm: auth.crealm.0,
        cname: auth.cname.0,
        gss_flags,
        // Whole seconds: sub-second differences are the time sspi took, not skew.
        clock_offset: time::Duration::seconds((ctime - OffsetDateTime::now_utc()).whole_seconds()),
        obtained: Instant::now(),
    })
}

/// MD5 of the `gss_channel_bindings_struct` with no addresses and `application_data` (RFC 4121
/// §4.1.1.2: each length and address type as a 32-bit little-endian integer).
pub fn bindings_md5(application_data: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(0u32.to_le_bytes()); // initiator_addrtype (GSS_C_AF_UNSPEC)
    h.update(0u32.to_le_bytes()); // initiator_address.length
    h.update(0u32.to_le_bytes()); // acceptor_addrtype
    h.update(0u32.to_le_bytes()); // acceptor_address.length
    h.update((application_data.len() as u32).to_le_bytes());
    h.update(application_data);
    h.finalize().into()
}

/// The GSS-wrapped AP-REQ for `ticket` at `now`, bound to `binding` when given.
fn ap_req(ticket: &ServiceTicket, binding: Option<&[u8]>, now: OffsetDateTime) -> Result<Vec<u8>, AdcsError> {
    // RFC 4121 §4.1.1: Lgth (16), Bnd, Flags; no delegation.
    let mut cksum = 16u32.to_le_bytes().to_vec();
    cksum.extend(binding.map(bindings_md5).unwrap_or([0; 16]));
    cksum.extend(ticket.gss_flags);
    let authorization_data = match binding {
        None => None,
        Some(_) => {
            let ap_options = AuthorizationData::from(vec![AuthorizationDataInner {
                ad_type: ExplicitContextTag0::from(IntegerAsn1::from(vec![AD_AUTH_DATA_AP_OPTIONS])),
                ad_data: ExplicitContextTag1::from(OctetStringAsn1::from(KERB_AP_OPTIONS_CBT.to_le_bytes().to_vec())),
            }]);
            let inner = picky_asn1_der::to_vec(&ap_options).map_err(|e| asn1_err("encoding AD-IF-RELEVANT", e))?;
            Some(ExplicitContextTag8::from(AuthorizationData::from(vec![AuthorizationDataInner {
                ad_type: ExplicitContextTag0::from(IntegerAsn1::from(vec![AD_IF_RELEVANT])),
                ad_data: ExplicitContextTag1::from(OctetStringAsn1::from(inner)),
            }])))
        }
    };
    let cipher = ticket.cipher.cipher();
    let mut rng = rand::rng();
    let mut subkey = Zeroizing::new(vec![0u8; cipher.key_size()]);
    rng.fill_bytes(&mut subkey);
    let seq = rng.next_u32() & 0x7fff_ffff;
    let authenticator = Authenticator::from(AuthenticatorInner {
        authenticator_vno: ExplicitContextTag0::from(IntegerAsn1::from(vec![5])),
        crealm: ExplicitContextTag1::from(ticket.crealm.clone()),
        cname: ExplicitContextTag2::from(ticket.cname.clone()),
        cksum: Optional::from(Some(ExplicitContextTag3::from(Checksum {
            cksumtype: ExplicitContextTag0::from(IntegerAsn1::from_bytes_be_unsigned(
                GSS_CHECKSUM_TYPE.to_be_bytes().to_vec(),
            )),
            checksum: ExplicitContextTag1::from(OctetStringAsn1::from(cksum)),
        }))),
        cusec: ExplicitContextTag4::from(IntegerAsn1::from_bytes_be_unsigned(now.microsecond().to_be_bytes().to_vec())),
        // KerberosTime has no fractional seconds (RFC 4120 §5.2.3): they go in cusec.
        ctime: ExplicitContextTag5::from(KerberosTime::from(GeneralizedTime::from(
            now.replace_nanosecond(0).expect("0 is a valid nanosecond"),
        ))),
        subkey: Optional::from(Some(ExplicitContextTag6::from(EncryptionKey {
            key_type: ExplicitContextTag0::from(IntegerAsn1::from(vec![ticket.etype])),
            key_value: ExplicitContextTag1::from(OctetStringAsn1::from(subkey.to_vec())),
        }))),
        seq_number: Optional::from(Some(ExplicitContextTag7::from(IntegerAsn1::from_bytes_be_unsigned(
            seq.to_be_bytes().to_vec(),
        )))),
        authorization_data: Optional::from(authorization_data),
    });
    let plain =
        Zeroizing::new(picky_asn1_der::to_vec(&authenticator).map_err(|e| asn1_err("encoding the authenticator", e))?);
    let sealed = cipher
        .encrypt(&ticket.session_key, AP_REQ_AUTHENTICATOR, &plain)
        .map_err(|e| asn1_err("encrypting the authenticator", format!("{e:?}")))?;
    let ap = ApReq::from(ApReqInner {
        pvno: ExplicitContextTag0::from(IntegerAsn1::from(vec![5])),
        msg_type: ExplicitContextTag1::from(IntegerAsn1::from(vec![14])),
        ap_options: ExplicitContextTag2::from(ticket.ap_options.clone()),
        ticket: ExplicitContextTag3::from(ticket.ticket.clone()),
        authenticator: ExplicitContextTag4::from(picky_krb::data_types::EncryptedData {
            etype: ExplicitContextTag0::from(IntegerAsn1::from(vec![ticket.etype])),
            kvno: Optional::from(None),
            cipher: ExplicitContextTag2::from(OctetStringAsn1::from(sealed)),
        }),
    });
    picky_asn1_der::to_vec(&ApplicationTag0(KrbMessage {
        krb5_oid: ticket.krb5_oid.clone(),
        krb5_token_id: ticket.token_id,
        krb_msg: ap,
    }))
    .map_err(|e| asn1_err("encoding the AP-REQ", e))
}

/// The Kerberos error code in a `WWW-Authenticate: Negotiate <token>` answer to a refused AP-REQ
/// (MIT and Windows acceptors return a KRB-ERROR, GSS-wrapped with token ID 03 00).
pub fn server_error_code(token_b64: &str) -> Option<u32> {
    let raw = STANDARD.decode(token_b64.trim()).ok()?;
    if let Ok(m) = KrbMessage::<KrbError>::decode_application_krb_message(&raw) {
        return Some(m.0.krb_msg.0.error_code.0);
    }
    // Wrapped in something else (SPNEGO): the KRB-ERROR is [APPLICATION 30] somewhere inside.
    (0..raw.len())
        .filter(|i| raw[*i] == 0x7e)
        .find_map(|i| picky_asn1_der::from_bytes::<KrbError>(&raw[i..]).ok())
        .map(|e| e.0.error_code.0)
}

/// What certsrv's refusal of an AP-REQ with Kerberos error `code` means, naming the fix.
pub fn explain_server_error(code: u32, spn: &str) -> AdcsError {
    use picky_krb::constants::error_codes as c;
    match code {
        c::KRB_AP_ERR_SKEW => AdcsError::Config(format!(
            "Kerberos: certsrv refused the ticket because of clock skew (KRB_AP_ERR_SKEW, error {code}): synchronise the clocks of this node, the KDC and certsrv (NTP)"
        )),
        c::KRB_AP_ERR_MODIFIED | c::KRB_AP_ERR_BAD_INTEGRITY | c::KRB_AP_ERR_NOKEY | c::KRB_AP_ERR_BADKEYVER => {
            AdcsError::Config(format!(
                "Kerberos: certsrv cannot decrypt the ticket for {spn} (error {code}): the SPN belongs to another account than the one certsrv runs as, or its keytab/password changed; check spec.auth.kerberos.spn and setspn"
            ))
        }
        c::KRB_AP_ERR_TKT_EXPIRED => AdcsError::Unauthorized(format!(
            "Kerberos: certsrv says the service ticket expired (KRB_AP_ERR_TKT_EXPIRED, error {code}) even after renewing it: check the clocks (NTP)"
        )),
        c::KRB_AP_ERR_BADMATCH | c::KRB_AP_ERR_MSG_TYPE => AdcsError::Unauthorized(format!(
            "Kerberos: certsrv refused the AP-REQ (error {code}; with Extended Protection this is usually a channel binding mismatch, e.g. a TLS-terminating proxy between the issuer and certsrv): set channelBinding: off only if certsrv does not require EPA"
        )),
        _ => AdcsError::Unauthorized(format!("Kerberos: certsrv refused the AP-REQ with Kerberos error {code}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(key: &[u8]) -> ServiceTicket {
        use picky_asn1::restricted_string::IA5String;
        use picky_asn1::wrapper::{Asn1SequenceOf, BitStringAsn1};
        use picky_krb::data_types::{EncryptedData, KerberosStringAsn1, TicketInner};
        let name = |s: &str| KerberosStringAsn1::from(IA5String::from_string(s.to_owned()).unwrap());
        let principal = PrincipalName {
            name_type: ExplicitContextTag0::from(IntegerAsn1::from(vec![1])),
            name_string: ExplicitContextTag1::from(Asn1SequenceOf::from(vec![name("alice")])),
        };
        ServiceTicket {
            // 1.2.840.113554.1.2.2, the krb5 mechanism.
            krb5_oid: picky_asn1_der::from_bytes(&[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02])
                .unwrap(),
            token_id: [1, 0],
            ap_options: BitStringAsn1::from(picky_asn1::bit_string::BitString::with_bytes(vec![0x20, 0, 0, 0])),
            ticket: Ticket::from(TicketInner {
                tkt_vno: ExplicitContextTag0::from(IntegerAsn1::from(vec![5])),
                realm: ExplicitContextTag1::from(name("CORP.TEST")),
                sname: ExplicitContextTag2::from(principal.clone()),
                enc_part: ExplicitContextTag3::from(EncryptedData {
                    etype: ExplicitContextTag0::from(IntegerAsn1::from(vec![18])),
                    kvno: Optional::from(None),
                    cipher: ExplicitContextTag2::from(OctetStringAsn1::from(vec![1, 2, 3])),
                }),
            }),
            cipher: CipherSuite::Aes256CtsHmacSha196,
            etype: 18,
            session_key: Zeroizing::new(key.to_vec()),
            crealm: name("CORP.TEST"),
            cname: principal,
            gss_flags: [0x32, 0, 0, 0],
            clock_offset: time::Duration::ZERO,
            obtained: Instant::now(),
        }
    }

    /// The AP-REQ decodes, its authenticator opens with the session key, the checksum carries
    /// the binding's MD5 and the CBT option is the 4-byte little-endian 0x4000 inside
    /// AD-IF-RELEVANT (the encoding MIT's check_cbt accepts; sspi's 2-byte one it refuses).
    #[test]
    fn ap_req_carries_the_binding_the_way_mit_and_windows_read_it() {
        let t = ticket(&[7; 32]);
        let binding = b"tls-server-end-point:0123456789abcdef0123456789abcdef";
        let token = ap_req(&t, Some(binding), OffsetDateTime::now_utc()).unwrap();
        assert_eq!(&token[..2], &[0x60, 0x82], "GSS InitialContextToken");
        let msg = KrbMessage::<ApReq>::decode_application_krb_message(&token).unwrap().0;
        assert_eq!(msg.krb5_token_id, [1, 0]);
        let plain = CipherSuite::Aes256CtsHmacSha196
            .cipher()
            .decrypt(&[7; 32], AP_REQ_AUTHENTICATOR, &msg.krb_msg.0.authenticator.0.cipher.0.0)
            .unwrap();
        let auth: Authenticator = picky_asn1_der::from_bytes(&plain).unwrap();
        let cksum = auth.0.cksum.0.unwrap().0;
        assert_eq!(cksum.cksumtype.0.as_unsigned_bytes_be(), &[0x80, 0x03]);
        let v = cksum.checksum.0.0;
        assert_eq!(&v[..4], &[16, 0, 0, 0]);
        assert_eq!(&v[4..20], &bindings_md5(binding));
        assert_eq!(&v[20..24], &[0x32, 0, 0, 0]);
        let ad = auth.0.authorization_data.0.unwrap().0.0;
        assert_eq!(ad.len(), 1);
        assert_eq!(ad[0].ad_type.0.as_unsigned_bytes_be(), &[AD_IF_RELEVANT]);
        let inner: AuthorizationData = picky_asn1_der::from_bytes(&ad[0].ad_data.0.0).unwrap();
        assert_eq!(inner.0[0].ad_type.0.as_unsigned_bytes_be(), &[AD_AUTH_DATA_AP_OPTIONS]);
        assert_eq!(inner.0[0].ad_data.0.0, vec![0x00, 0x40, 0x00, 0x00]);
        // Without a binding: zero Bnd and no AP options.
        let token = ap_req(&t, None, OffsetDateTime::now_utc()).unwrap();
        let msg = KrbMessage::<ApReq>::decode_application_krb_message(&token).unwrap().0;
        let plain = CipherSuite::Aes256CtsHmacSha196
            .cipher()
            .decrypt(&[7; 32], AP_REQ_AUTHENTICATOR, &msg.krb_msg.0.authenticator.0.cipher.0.0)
            .unwrap();
        let auth: Authenticator = picky_asn1_der::from_bytes(&plain).unwrap();
        assert!(auth.0.authorization_data.0.is_none());
        assert_eq!(&auth.0.cksum.0.unwrap().0.checksum.0.0[4..20], &[0; 16]);
    }

    #[test]
    fn server_errors_are_named() {
        assert!(explain_server_error(37, "HTTP/ca").to_string().contains("KRB_AP_ERR_SKEW"));
        assert!(explain_server_error(37, "HTTP/ca").to_string().contains("NTP"));
        assert!(explain_server_error(41, "HTTP/ca").to_string().contains("setspn"));
        assert_eq!(server_error_code("not base64!"), None);
    }
}
