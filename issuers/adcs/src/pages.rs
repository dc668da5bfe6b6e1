//! What certsrv's pages say, read from their *text* (certsrv has no API: every answer is an HTML
//! page written for a browser). Pure functions, no I/O.
//!
//! Shapes (ca-protocols.md §2.1 as corrected by §7.1):
//! * submit (`certfnsh.asp`): *issued* carries `location="certnew.cer?ReqID=N&…` and "The certificate
//!   you requested was issued to you"; *pending* is titled "Certificate Pending" and says "Your Request
//!   Id is N"; *denied* is titled "Certificate Request Denied" and **also** says "Your Request Id is N"
//!   followed by `The disposition message is "…"`; anything else with a disposition message or an
//!   HRESULT is an error page.
//! * status (`certnew.cer?ReqID=N`): `application/pkix-cert` is the certificate; an HTML page carries
//!   `Disposition message:` and `LastStatus:` — "Taken Under Submission" is pending, "Denied by …" an
//!   administrator's denial, anything else an error.
//! * chain: `certcarc.asp` holds `var nRenewals=N;`; `certnew.p7b` is PKCS#7 (PEM of any label, or DER).
//!
//! Tell pending from denied by the page text, never by the presence of a request ID. A page that
//! matches no known shape is [`Page::Unknown`] with its title, so the signer never takes a
//! certificate from a page it did not understand.

use std::sync::LazyLock;

use regex::Regex;

/// The answer to a submit (`POST certfnsh.asp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitPage {
    /// Issued; fetch it with `certnew.cer?ReqID=N`.
    Issued {
        /// Request ID.
        req_id: u64,
    },
    /// Waiting for a certificate manager's approval.
    Pending {
        /// Request ID.
        req_id: u64,
    },
    /// Denied by the CA (policy module or administrator); the request ID still exists.
    Denied {
        /// Request ID.
        req_id: u64,
        /// The disposition message, verbatim.
        message: String,
    },
    /// An error page: no request was recorded (or certsrv does not say which).
    Error(CaError),
    /// A page matching no known shape.
    Unknown {
        /// The page's `<title>` (else its first `<h1>`, or "no title").
        title: String,
    },
}

/// An error certsrv reported: its message and the HRESULT when the page names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaError {
    /// Disposition message or error text, verbatim (whitespace collapsed).
    pub message: String,
    /// The HRESULT, e.g. `0x80094800`.
    pub hresult: Option<u32>,
}

/// HRESULTs with a meaning for the signer (MS-WCCE, certcli.h).
pub mod hresult {
    /// CERTSRV_E_UNSUPPORTED_CERT_TYPE: the template is unknown or not published on this CA.
    pub const UNSUPPORTED_CERT_TYPE: u32 = 0x8009_4800;
    /// CERTSRV_E_TEMPLATE_CONFLICT: the request conflicts with the template.
    pub const TEMPLATE_CONFLICT: u32 = 0x8009_4802;
    /// CERTSRV_E_TEMPLATE_DENIED: the caller has no Enroll permission on the template.
    pub const TEMPLATE_DENIED: u32 = 0x8009_4012;
    /// CERTSRV_E_ADMIN_DENIED_REQUEST: a certificate manager denied the request.
    pub const ADMIN_DENIED: u32 = 0x8009_4014;
    /// CERTSRV_E_PROPERTY_EMPTY: no such request ID.
    pub const PROPERTY_EMPTY: u32 = 0x8009_4004;
}

/// The answer to a status query (`GET certnew.cer?ReqID=N`) when it is not a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusPage {
    /// "Taken Under Submission".
    Pending,
    /// "Denied by …": the disposition message and LastStatus, verbatim.
    Denied(CaError),
    /// Any other disposition.
    Error(CaError),
    /// No disposition on the page.
    Unknown {
        /// The page's `<title>`.
        title: String,
    },
}

macro_rules! re {
    ($name:ident, $pat:expr) => {
        static $name: LazyLock<Regex> = LazyLock::new(|| Regex::new($pat).expect("valid regex"));
    };
}

re!(ISSUED_REDIRECT, r#"certnew\.cer\?ReqID=([0-9]+)&"#);
re!(REQ_ID, r"Your Request Id is ([0-9]+)");
re!(DISPOSITION_QUOTED, r#"(?s)The disposition message is "(.*?)"\s*(?:\.|<|$)"#);
re!(HRESULT, r"0x([0-9a-fA-F]{8})");
re!(TITLE, r"(?is)<title>\s*(.*?)\s*</title>");
re!(H1, r"(?is)<h1>\s*(.*?)\s*</h1>");
re!(DISPOSITION_DD, r"(?is)Disposition message:.*?<DD>\s*(.*?)\s*(?:</DD>|<DT|$)");
re!(LAST_STATUS_DD, r"(?is)LastStatus:.*?<DD>\s*(.*?)\s*(?:</DD>|<DT|$)");
re!(NRENEWALS, r"var\s+nRenewals\s*=\s*([0-9]+)\s*;");
re!(TAGS, r"(?s)<[^>]*>");
re!(SPACE, r"\s+");

/// The text of an HTML fragment: tags removed, entities for `"&<>` decoded, whitespace collapsed.
pub fn text(html: &str) -> String {
    let t = TAGS.replace_all(html, " ");
    let t = t.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
    SPACE.replace_all(&t, " ").trim().to_owned()
}

/// The page's title, else its first heading (a load balancer's error page has only an `<h1>`), or
/// "no title".
pub fn title(html: &str) -> String {
    [&*TITLE, &*H1]
        .iter()
        .find_map(|re| re.captures(html).map(|c| text(&c[1])).filter(|t| !t.is_empty()))
        .unwrap_or_else(|| "no title".into())
}

fn first_hresult(s: &str) -> Option<u32> {
    HRESULT.captures(s).and_then(|c| u32::from_str_radix(&c[1], 16).ok())
}

fn req_id(html: &str) -> Option<u64> {
    REQ_ID.captures(html).and_then(|c| c[1].parse().ok())
}

/// Reads a submit answer page.
pub fn parse_submit(html: &str) -> SubmitPage {
    let body = text(html);
    let page_title = title(html);
    // Denied first: the denied page also carries "Your Request Id is N".
    if page_title.contains("Denied") || body.contains("Your certificate request was denied") {
        let message = disposition_message(html).unwrap_or_else(|| body.clone());
        return match req_id(html) {
            Some(req_id) => SubmitPage::Denied { req_id, message },
            None => SubmitPage::Error(CaError { hresult: first_hresult(&message), message }),
        };
    }
    if let Some(c) = ISSUED_REDIRECT.captures(html)
        && let Ok(req_id) = c[1].parse()
    {
        return SubmitPage::Issued { req_id };
    }
    if page_title.contains("Certificate Pending") || body.contains("you must wait for an administrator") {
        return match req_id(html) {
            Some(req_id) => SubmitPage::Pending { req_id },
            None => SubmitPage::Unknown { title: page_title },
        };
    }
    if let Some(message) = disposition_message(html) {
        return SubmitPage::Error(CaError { hresult: first_hresult(&message), message });
    }
    if page_title.contains("Error") || body.contains("An unexpected error has occurred") {
        // certsrv's error page: the text after the heading, which names the HRESULT.
        let hresult = first_hresult(&body);
        return SubmitPage::Error(CaError { message: body, hresult });
    }
    SubmitPage::Unknown { title: page_title }
}

fn disposition_message(html: &str) -> Option<String> {
    DISPOSITION_QUOTED.captures(html).map(|c| text(&c[1])).filter(|m| !m.is_empty())
}

/// Reads the HTML answer of `certnew.cer?ReqID=N` (the request is not issued).
pub fn parse_status(html: &str) -> StatusPage {
    let disposition = DISPOSITION_DD.captures(html).map(|c| text(&c[1]));
    let last_status = LAST_STATUS_DD.captures(html).map(|c| text(&c[1]));
    let Some(disposition) = disposition.filter(|d| !d.is_empty()) else {
        // Some error pages carry the HRESULT without the disposition list.
        let body = text(html);
        if let Some(h) = first_hresult(&body) {
            return StatusPage::Error(CaError { message: body, hresult: Some(h) });
        }
        return StatusPage::Unknown { title: title(html) };
    };
    if disposition.contains("Taken Under Submission") {
        return StatusPage::Pending;
    }
    let message = match &last_status {
        Some(ls) if !ls.is_empty() && ls != &disposition => format!("{disposition} ({ls})"),
        _ => disposition.clone(),
    };
    let hresult = last_status.as_deref().and_then(first_hresult).or_else(|| first_hresult(&disposition));
    let err = CaError { message, hresult };
    if disposition.starts_with("Denied by") || hresult == Some(hresult::ADMIN_DENIED) {
        StatusPage::Denied(err)
    } else {
        StatusPage::Error(err)
    }
}

/// `var nRenewals=N;` from `certcarc.asp` (`None` when the page has none).
pub fn parse_renewals(html: &str) -> Option<u32> {
    NRENEWALS.captures(html).and_then(|c| c[1].parse().ok())
}

/// The certificates of a PKCS#7 `certnew.p7b` answer, parsed leniently: PEM of any label (or none:
/// bare base64, CRLF or LF) or DER. Returns the DER certificates in the order of the bag.
pub fn parse_pkcs7(body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let der = if body.first() == Some(&0x30) {
        body.to_vec()
    } else {
        let s = std::str::from_utf8(body).map_err(|_| "neither DER nor text".to_owned())?;
        match pem::parse(s) {
            Ok(p) => p.into_contents(),
            Err(_) => {
                use base64::Engine;
                let b64: String = s.chars().filter(|c| !c.is_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| "neither PEM, base64 nor DER".to_owned())?
            }
        }
    };
    pkcs7_certificates(&der)
}

/// One DER TLV: (tag, content, rest).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let bad = || "truncated DER".to_owned();
    let (&tag, rest) = input.split_first().ok_or_else(bad)?;
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err("unsupported DER length".into());
        }
        (rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize), &rest[n..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The `certificates` of a ContentInfo{signedData} (RFC 5652 §5.1). Hand-written on purpose: the
/// walk is five TLVs deep and the `cms` crate would add a second DER stack (der 0.8) for it.
fn pkcs7_certificates(der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    let (tag, content_info, _) = tlv(der)?;
    if tag != 0x30 {
        return Err("not a PKCS#7 ContentInfo".into());
    }
    let (tag, oid, rest) = tlv(content_info)?;
    if tag != 0x06 || oid != SIGNED_DATA {
        return Err("PKCS#7 content is not signedData".into());
    }
    let (tag, explicit, _) = tlv(rest)?;
    if tag != 0xa0 {
        return Err("PKCS#7 signedData has no content".into());
    }
    let (tag, signed_data, _) = tlv(explicit)?;
    if tag != 0x30 {
        return Err("PKCS#7 signedData is not a SEQUENCE".into());
    }
    // version, digestAlgorithms, encapContentInfo, then [0] IMPLICIT certificates.
    let mut rest = signed_data;
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (tag, certs, next) = tlv(rest)?;
        rest = next;
        if tag != 0xa0 {
            continue;
        }
        let mut c = certs;
        while !c.is_empty() {
            let (tag, _, next) = tlv(c)?;
            let whole = &c[..c.len() - next.len()];
            if tag == 0x30 {
                out.push(whole.to_vec());
            }
            c = next;
        }
    }
    if out.is_empty() {
        return Err("PKCS#7 bag holds no certificate".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUED: &str = r#"<HTML><Head><Meta HTTP-Equiv="Content-Type" Content="text/html; charset=UTF-8">
<Title>Microsoft Active Directory Certificate Services</Title>
<Script Language="JavaScript">
  function handleGetCert() { location="certnew.cer?ReqID=17&"+getEncoding(); }
</Script></Head><Body>
<P ID=locInfo>The certificate you requested was issued to you.</P></Body></HTML>"#;

    const PENDING: &str = r#"<HTML><Head><Title>Microsoft Active Directory Certificate Services</Title></Head><Body>
<Font ID=locPageTitle Face="Arial" Size=-1><B>Certificate Pending</B></Font>
<P ID=locInfoReqIDAndWait>Your certificate request has been received. However, you must wait for an administrator to issue the certificate you requested.
Your Request Id is 23.</P></Body></HTML>"#;

    const DENIED: &str = r#"<HTML><Head><Title>Certificate Request Denied</Title></Head><Body>
<P ID=locDenied>Your certificate request was denied.</P>
<P>Your Request Id is 31. The disposition message is "Denied by Policy Module  0x80094800, The request was for a certificate template that is not supported by the Active Directory Certificate Services policy: NoSuch. ".</P>
</Body></HTML>"#;

    const ERROR: &str = r#"<HTML><Head><Title>Microsoft Active Directory Certificate Services</Title></Head><Body>
<Font ID=locPageTitle><B> Error </B></Font><P ID=locPageDesc>An unexpected error has occurred:
<Code>The disposition message is "Error Parsing Request  ASN1 bad tag value met. 0x8009310b (ASN: 267 CRYPT_E_ASN1_BADTAG)".</Code></P></Body></HTML>"#;

    fn status_page(disposition: &str, last: &str) -> String {
        format!(
            "<HTML><Head><Title>Microsoft Active Directory Certificate Services</Title></Head><Body><DL>\n\
             <DT><Font Size=-1><B>Disposition:</B></Font></DT><DD>\n\t\t5 - (ignored)</DD>\n\
             <DT><Font Size=-1><B>Disposition message:</B></Font></DT><DD>\n\t\t{disposition}\r\n</DD>\n\
             <DT><Font Size=-1><B>LastStatus:</B></Font></DT><DD>\n\t\t{last}\r\n</DD></DL></Body></HTML>"
        )
    }

    #[test]
    fn submit_pages() {
        assert_eq!(parse_submit(ISSUED), SubmitPage::Issued { req_id: 17 });
        assert_eq!(parse_submit(PENDING), SubmitPage::Pending { req_id: 23 });
        match parse_submit(DENIED) {
            SubmitPage::Denied { req_id: 31, message } => {
                assert!(
                    message
                        .starts_with("Denied by Policy Module 0x80094800, The request was for a certificate template"),
                    "{message}"
                );
                assert!(message.contains("policy: NoSuch"));
            }
            other => panic!("{other:?}"),
        }
        match parse_submit(ERROR) {
            SubmitPage::Error(e) => {
                assert!(e.message.starts_with("Error Parsing Request"), "{}", e.message);
                assert_eq!(e.hresult, Some(0x8009310b));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_submit(
                "<html><head><title>Login - Corp Proxy</title></head><body>Your Request Id is 5.</body></html>"
            ),
            SubmitPage::Unknown { title: "Login - Corp Proxy".into() }
        );
        assert_eq!(parse_submit("garbage"), SubmitPage::Unknown { title: "no title".into() });
        // A load balancer's error page: no <title>, its <h1> names it.
        let lb = "<html><body><h1>429 Too Many Requests</h1>\nYou have sent too many requests.\n</body></html>\n";
        assert_eq!(title(lb), "429 Too Many Requests");
    }

    #[test]
    fn status_pages() {
        assert_eq!(
            parse_status(&status_page(
                "Taken Under Submission",
                "The operation completed successfully. 0x0 (WIN32: 0)"
            )),
            StatusPage::Pending
        );
        match parse_status(&status_page(
            "Denied by CORP\\admin",
            "The request was denied by a certificate manager or CA administrator. 0x80094014 (-2146877420 CERTSRV_E_ADMIN_DENIED_REQUEST)",
        )) {
            StatusPage::Denied(e) => {
                assert!(e.message.starts_with("Denied by CORP\\admin (The request was denied"), "{}", e.message);
                assert_eq!(e.hresult, Some(hresult::ADMIN_DENIED));
            }
            other => panic!("{other:?}"),
        }
        match parse_status(&status_page(
            "Error retrieving request",
            "The requested property value is empty. 0x80094004 (-2146877436 CERTSRV_E_PROPERTY_EMPTY)",
        )) {
            StatusPage::Error(e) => assert_eq!(e.hresult, Some(hresult::PROPERTY_EMPTY)),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_status("<title>Oops</title>"), StatusPage::Unknown { title: "Oops".into() });
    }

    #[test]
    fn renewals() {
        assert_eq!(parse_renewals("<script>\nvar nRenewals=3;\n</script>"), Some(3));
        assert_eq!(parse_renewals("var nRenewals = 0 ;"), Some(0));
        assert_eq!(parse_renewals("nothing"), None);
    }

    #[test]
    fn pkcs7_leniency() {
        assert!(parse_pkcs7(b"not base64 !!").is_err());
        assert!(parse_pkcs7(&[0x30, 0x03, 0x06, 0x01, 0x00]).is_err());
        // Deep DER built by hand: ContentInfo{signedData, [0]{SEQ{INT, SET, SEQ, [0]{cert, cert}}}}
        let cert = |b: u8| vec![0x30, 0x01, b];
        let mut certs = cert(1);
        certs.extend(cert(2));
        let mut sd = vec![0x02, 0x01, 0x01, 0x31, 0x00, 0x30, 0x00, 0xa0, certs.len() as u8];
        sd.extend(&certs);
        let mut sd_seq = vec![0x30, sd.len() as u8];
        sd_seq.extend(sd);
        let mut inner =
            vec![0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02, 0xa0, sd_seq.len() as u8];
        inner.extend(sd_seq);
        let mut ci = vec![0x30, inner.len() as u8];
        ci.extend(inner);
        assert_eq!(parse_pkcs7(&ci).unwrap(), vec![cert(1), cert(2)]);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&ci);
        for text in [
            format!("-----BEGIN PKCS7-----\r\n{b64}\r\n-----END PKCS7-----\r\n"),
            format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n"),
            format!("{b64}\r\n"),
        ] {
            assert_eq!(parse_pkcs7(text.as_bytes()).unwrap().len(), 2, "{text}");
        }
    }
}
