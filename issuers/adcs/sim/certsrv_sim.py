#!/usr/bin/env python3
"""certsrv simulator: Microsoft AD CS web enrollment as the certbridge AD CS issuer's tests see it.

Test equipment. Serves the pages and content types of ca-protocols.md section 2 as corrected by 7.1
(issued page with the JavaScript redirect, pending, denied-with-request-ID, error pages with HRESULTs,
certnew.cer, certnew.p7b, certcarc.asp with nRenewals, the IIS 401 page with
`WWW-Authenticate: Negotiate` and `NTLM`) over TLS, on loopback.

Authentication is checked by an implementation independent of the Rust client: pyspnego is the
NTLM acceptor (users from an NTLM_USER_FILE, NTLMv1 refused with LM_COMPAT_LEVEL=5). Extended
Protection (EPA) off / when-supported / required is enforced here, because pyspnego accepts an
absent or all-zero binding (ca-protocols.md 7.5): "required" refuses both, "when-supported" checks
the binding only when the client sent a non-zero one. NTLM authenticates the connection (as IIS
does): later requests on it need no header. Basic and TLS client certificates are the other modes.

An admin handle (plain HTTP on a second loopback port) approves or denies pending requests (one,
or every pending one), injects faults, renews the CA (nRenewals > 0), sets latency and reads
counters (enrollments per CSR, connections, handshakes), the request log, the DER of every
certificate the CA issued, a cheap submits/issued pair for pollers (/events) and the client's
protocol violations (a submit that is not Mode=newreq, names no template or carries a CSR that
does not parse or verify; certnew.cer for a request ID the CA never gave out). A request whose
body ends before its Content-Length (the client died mid-send) is dropped unprocessed, as IIS does.

Faults (admin /fault?kind=K&at=PAGE&count=N, /clear-faults) come in three kinds, faithful to who
would answer in front of or inside IIS:
* front (answered before authentication, the request never reaching certsrv): 503 as HTTP.sys
  sends it when the application pool is stopped; 502, 504 and 429 (with Retry-After) as a load
  balancer in front of IIS sends them (HAProxy's default pages);
* certsrv (after authentication, instead of the page): reset, 500, unknown-page, huge;
* spoilt answers (after authentication; certsrv does its work -- a submit is recorded -- and the
  answer is then spoilt on the way out): drop-answer (closed before any byte), reset-mid-body
  (head and half the body, then RST), truncate (full Content-Length, half the body, close),
  garbage (same status and content type, a body no parser accepts), slow-drip (one byte per
  100 ms), other-key (certnew.cer answers a certificate the CA issued for the same subject but
  another key).

Start: certsrv_sim.py --auth ntlm --epa required --users FILE; the first line on stdout is JSON with
the ports, the root CA (trust anchor of the TLS server certificate and of the CA chain) and a
client certificate/key for --auth cert.
"""

import argparse
import base64
import datetime
import hashlib
import html
import json
import os
import re
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TITLE = "Microsoft Active Directory Certificate Services"
NOW = lambda: datetime.datetime.now(datetime.timezone.utc)  # noqa: E731


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certbridge sim")])


def make_cert(subject, pub, issuer_name, issuer_key, ca, sans=None, eku=None, days=365):
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW() - datetime.timedelta(minutes=5))
        .not_valid_after(NOW() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class Ca:
    """Root -> issuing CA (renewable: a new key under the same name) -> leaves."""

    def __init__(self):
        self.issued = []  # DER of every leaf this CA signed, in order (list.append is atomic)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = make_cert(name("Sim Root CA"), self.root_key.public_key(), name("Sim Root CA"), self.root_key, True, days=3650)
        self.issuing = []  # [(key, cert)] by renewal
        self.renew()

    def renew(self):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = make_cert(name("Sim Issuing CA"), key.public_key(), self.root.subject, self.root_key, True, days=1825)
        self.issuing.append((key, cert))

    def issue(self, csr):
        return self.issue_for(csr, csr.public_key())

    def issue_for(self, csr, public_key):
        key, cert = self.issuing[-1]
        try:
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = list(sans)
        except x509.ExtensionNotFound:
            sans = None
        leaf = make_cert(csr.subject, public_key, cert.subject, key, False, sans=sans, days=30)
        self.issued.append(der(leaf))
        return leaf


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.ca = Ca()
        self.next_id = 1
        self.requests = {}  # id -> dict(csr_sha, template, status, cert, disposition)
        self.enrollments = {}  # csr sha256 -> number of submits recorded
        self.counters = {"connections": 0, "handshakes": 0, "auth_failures": 0, "requests": 0, "submits": 0}
        self.faults = []  # [(kind, remaining, at, params)]
        self.log = []  # one entry per request that got past the 401 legs or met a front fault
        self.violations = []  # what a correct client never sends (module documentation)
        self.latency = args.latency_ms / 1000.0
        self.epa = args.epa
        self.auth = args.auth
        self.auto_templates = set(args.templates.split(","))
        self.pending_templates = set(args.pending_templates.split(","))
        self.no_enroll_templates = set(args.no_enroll_templates.split(","))
        self.users = {}
        for line in open(args.users).read().splitlines() if args.users else []:
            if line.count(":") >= 2:
                dom, user, pw = line.split(":", 2)
                self.users[user.lower()] = pw
                self.users[f"{dom}\\{user}".lower()] = pw

    def take_fault(self, where, front):
        """The first fault for page `where` of the front kind (`front`) or the others, consuming one use."""
        with self.lock:
            for i, (kind, left, at, params) in enumerate(self.faults):
                if at in ("any", where) and (kind in FRONT_FAULTS) == front:
                    if left <= 1:
                        self.faults.pop(i)
                    else:
                        self.faults[i] = (kind, left - 1, at, params)
                    return kind, params
        return None, {}

    def violation(self, what):
        with self.lock:
            self.violations.append(what)

    def record(self, method, where, fault, status):
        with self.lock:
            self.log.append({"t": time.monotonic(), "method": method, "page": where, "fault": fault, "status": status})


def page(body, title=TITLE, script=""):
    return (
        '<HTML><Head><Meta HTTP-Equiv="Content-Type" Content="text/html; charset=UTF-8">\r\n'
        f"<Title>{title}</Title>\r\n{script}</Head>\r\n<Body BgColor=#FFFFFF>\r\n{body}\r\n</Body></HTML>\r\n"
    )


def issued_page(req_id):
    script = (
        '<Script Language="JavaScript">\r\n'
        "function getEncoding() { return \"Enc=bin\"; }\r\n"
        f'function handleGetCert() {{ location="certnew.cer?ReqID={req_id}&"+getEncoding(); }}\r\n'
        f'function handleGetChain() {{ location="certnew.p7b?ReqID={req_id}&"+getEncoding(); }}\r\n'
        "</Script>\r\n"
    )
    return page(
        '<Font ID=locPageTitle Face="Arial" Size=-1><B>Certificate Issued</B></Font><P>\r\n'
        "<P ID=locInfo>The certificate you requested was issued to you.</P>",
        script=script,
    )


def pending_page(req_id):
    return page(
        '<Font ID=locPageTitle Face="Arial" Size=-1><B>Certificate Pending</B></Font><P>\r\n'
        "<P ID=locInfoReqIDAndWait>Your certificate request has been received. However, you must wait for an "
        f"administrator to issue the certificate you requested.<Br>\r\nYour Request Id is {req_id}.</P>"
    )


def denied_page(req_id, disposition):
    return page(
        '<Font ID=locPageTitle Face="Arial" Size=-1><B>Certificate Request Denied</B></Font><P>\r\n'
        "<P ID=locDenied>Your certificate request was denied.</P>\r\n"
        f'<P>Your Request Id is {req_id}. The disposition message is "{html.escape(disposition, quote=False)}".</P>',
        title="Certificate Request Denied",
    )


def error_page(disposition):
    return page(
        '<Font ID=locPageTitle Face="Arial" Size=-1><B> Error </B></Font><P>\r\n'
        "<P ID=locPageDesc>An unexpected error has occurred:\r\n"
        f'<Code>The disposition message is "{html.escape(disposition, quote=False)}".</Code></P>'
    )


def status_page(disposition_code, disposition, last_status):
    return page(
        "<DL>\r\n"
        f"<DT><Font Size=-1><B>Disposition:</B></Font></DT><DD>\r\n\t\t{disposition_code}\r\n</DD>\r\n"
        f"<DT><Font Size=-1><B>Disposition message:</B></Font></DT><DD>\r\n\t\t{html.escape(disposition, quote=False)}\r\n</DD>\r\n"
        f"<DT><Font Size=-1><B>LastStatus:</B></Font></DT><DD>\r\n\t\t{html.escape(last_status, quote=False)}\r\n</DD>\r\n"
        "</DL>"
    )


IIS_401 = (
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\r\n'
    '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>401 - Unauthorized: Access is denied due to invalid credentials.</title></head>\r\n'
    "<body><div id=\"header\"><h1>Server Error</h1></div><div id=\"content\"><fieldset><h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2>\r\n"
    "<h3>You do not have permission to view this directory or page using the credentials that you supplied.</h3></fieldset></div></body></html>\r\n"
)

# What answers in front of certsrv. HTTP.sys's own page when the application pool is stopped (the
# request queue is disabled): no IIS, no authentication, Server: Microsoft-HTTPAPI/2.0.
HTTPSYS_503 = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\r\n'
    '<HTML><HEAD><TITLE>Service Unavailable</TITLE>\r\n'
    '<META HTTP-EQUIV="Content-Type" Content="text/html; charset=us-ascii"></HEAD>\r\n'
    "<BODY><h2>Service Unavailable</h2>\r\n<hr><p>HTTP Error 503. The service is unavailable.</p>\r\n</BODY></HTML>\r\n"
)
# A load balancer's error pages (HAProxy's defaults): no Server header, the connection closed.
LB_PAGES = {
    "502": ("502 Bad Gateway", "The server returned an invalid or incomplete response."),
    "504": ("504 Gateway Time-out", "The server didn't respond in time."),
    "429": ("429 Too Many Requests", "You have sent too many requests in a given amount of time."),
}
FRONT_FAULTS = ("503", "502", "504", "429")
# A body no HTML, PEM or DER reader accepts (a proxy's corruption, not a certsrv page).
GARBAGE = b"\x00\x01\xff<Ht\x00ml>-----BEGIN CERT\x1b\x7f MII\xfe\xfd" * 8

UNSUPPORTED = (
    "Denied by Policy Module  0x80094800, The request was for a certificate template that is not supported by the "
    "Active Directory Certificate Services policy: {t}. "
)
NO_ENROLL = (
    "Denied by Policy Module  0x80094012, The permissions on the certificate template do not allow the current user to "
    "enroll for this type of certificate. "
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""

    def setup(self):
        super().setup()
        self.authenticated = None
        self.ntlm_ctx = None
        st = self.server.state
        with st.lock:
            st.counters["connections"] += 1

    def log_message(self, fmt, *args):  # quiet
        pass

    # --- plumbing ------------------------------------------------------------------------------
    def reply(self, status, body, ctype="text/html", headers=()):
        data = body if isinstance(body, bytes) else body.encode()
        spoil, self.spoil = getattr(self, "spoil", None), None
        if spoil == "drop-answer":
            # The work is done (a submit recorded) but no byte of the answer leaves.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if spoil == "garbage":
            data = GARBAGE
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        if spoil == "slow-drip":
            self._headers_buffer.append(b"\r\n")
            raw = b"".join(self._headers_buffer) + data
            self._headers_buffer = []
            for i in range(len(raw)):
                self.wfile.write(raw[i:i + 1])
                time.sleep(0.1)
            return
        self.end_headers()
        if spoil in ("reset-mid-body", "truncate"):
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            if spoil == "reset-mid-body":
                # RST, not FIN: linger 0 and close.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)

    def front(self, kind, params):
        """A front fault's answer, written raw: it does not come from IIS (no Server: Microsoft-IIS)."""
        if kind == "503":
            status, reason, body, server = 503, "Service Unavailable", HTTPSYS_503, "Server: Microsoft-HTTPAPI/2.0\r\n"
        else:
            title, text = LB_PAGES[kind]
            status, reason = int(kind), title.split(" ", 1)[1]
            body, server = f"<html><body><h1>{title}</h1>\n{text}\n</body></html>\n", ""
        extra = f"Retry-After: {params['retry_after']}\r\n" if params.get("retry_after") else ""
        data = body.encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html\r\nContent-Length: {len(data)}\r\n"
            f"Cache-Control: no-cache\r\n{server}{extra}Connection: close\r\n\r\n"
        )
        self.wfile.write(head.encode() + data)
        self.close_connection = True
        return status

    def challenge(self, extra=None):
        st = self.server.state
        hdrs = []
        if st.auth in ("ntlm", "kerberos"):
            hdrs = [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")] if extra is None else [("WWW-Authenticate", extra)]
        elif st.auth == "basic":
            hdrs = [("WWW-Authenticate", 'Basic realm="ca.example.com"')]
        self.reply(401, IIS_401, headers=hdrs)

    def authenticate(self):
        """True when the request may proceed; otherwise an answer was sent."""
        st = self.server.state
        if st.auth == "none" or self.authenticated:
            return True
        if st.auth == "cert":
            # The TLS layer required and verified the client certificate (CERT_REQUIRED).
            peer = self.connection.getpeercert()
            if peer:
                self.authenticated = dict(x[0] for x in peer["subject"]).get("commonName", "cert")
                return True
            self.reply(403, page("403 - Forbidden: client certificate required."))
            return False
        header = self.headers.get("Authorization", "")
        if st.auth == "basic":
            if header.startswith("Basic "):
                try:
                    user, pw = base64.b64decode(header[6:]).decode().split(":", 1)
                except Exception:
                    user, pw = "", None
                if st.users.get(user.lower()) == pw:
                    # Basic is per request (no connection state).
                    return True
                with st.lock:
                    st.counters["auth_failures"] += 1
            self.challenge()
            return False
        # NTLM (also accepted under the Negotiate scheme name).
        scheme, _, token = header.partition(" ")
        if scheme not in ("NTLM", "Negotiate") or not token:
            self.challenge()
            return False
        raw = base64.b64decode(token)
        if st.auth == "kerberos":
            error_token = None
            if scheme == "Negotiate" and not raw.startswith(b"NTLMSSP\0"):
                ok, error_token = self.accept_kerberos(raw)
                if ok:
                    self.authenticated = ok
                    return True
            with st.lock:
                st.counters["auth_failures"] += 1
            # As IIS does: the acceptor's KRB-ERROR token (clock skew, wrong key, ...) goes back
            # in the 401.
            self.challenge(f"Negotiate {base64.b64encode(error_token).decode()}" if error_token else None)
            return False
        if raw[8:12] == b"\x01\x00\x00\x00":
            import spnego

            self.ntlm_ctx = spnego.server(protocol="ntlm")
            out = self.ntlm_ctx.step(raw)
            with st.lock:
                st.counters["handshakes"] += 1
            self.challenge(f"{scheme} {base64.b64encode(out).decode()}")
            return False
        if raw[8:12] == b"\x03\x00\x00\x00" and self.ntlm_ctx is not None:
            ok = self.accept_authenticate(raw)
            self.ntlm_ctx = None
            if ok:
                self.authenticated = ok
                return True
        with st.lock:
            st.counters["auth_failures"] += 1
        self.challenge()
        return False

    def accept_kerberos(self, raw):
        """Kerberos through python-gssapi (MIT krb5) with the HTTP/<host> keytab (KRB5_KTNAME).
        Returns (initiator name or None, MIT's error token or None).

        MIT krb5 rejects wrong bindings but accepts none without setting the channel-bound flag
        (ca-protocols.md 7.5): "required" checks that flag itself."""
        import gssapi
        import gssapi.raw

        st = self.server.state
        cb = None
        if st.epa != "off":
            cb = gssapi.raw.ChannelBindings(application_data=b"tls-server-end-point:" + self.server.binding)
        try:
            ctx = gssapi.SecurityContext(creds=gssapi.Credentials(usage="accept"), channel_bindings=cb)
            ctx.step(raw)
            if not ctx.complete:
                sys.stderr.write("Kerberos refused: context not complete after one token\n")
                return None, None
            with st.lock:
                st.counters["handshakes"] += 1
            if st.epa == "required" and not int(ctx.actual_flags) & 0x800:
                sys.stderr.write("Kerberos refused: no channel binding (EPA required)\n")
                return None, None
            return str(ctx.initiator_name), None
        except gssapi.exceptions.GSSError as e:
            sys.stderr.write(f"Kerberos refused: {e!r} (token {raw[:24].hex()}..., {len(raw)} bytes)\n")
            return None, getattr(e, "token", None)
        except Exception as e:
            sys.stderr.write(f"Kerberos refused: {e!r} (token {raw[:24].hex()}..., {len(raw)} bytes)\n")
            return None, None

    def accept_authenticate(self, raw):
        from spnego._ntlm_raw.messages import Authenticate, AvId, NTClientChallengeV2
        from spnego.channel_bindings import GssChannelBindings

        st = self.server.state
        auth = Authenticate.unpack(raw)
        sent = None
        if auth.nt_challenge_response and len(auth.nt_challenge_response) > 24:
            pairs = NTClientChallengeV2.unpack(auth.nt_challenge_response[16:]).av_pairs
            sent = pairs.get(AvId.channel_bindings)
        nonzero = sent is not None and sent != b"\x00" * 16
        if st.epa == "required" and not nonzero:
            return None
        cb = None
        if st.epa == "required" or (st.epa == "when-supported" and nonzero):
            cb = GssChannelBindings(application_data=b"tls-server-end-point:" + self.server.binding)
        try:
            self.ntlm_ctx.step(raw, channel_bindings=cb)
        except Exception as e:  # wrong password, wrong binding, NTLMv1
            sys.stderr.write(f"NTLM refused: {e}\n")
            return None
        return self.ntlm_ctx.client_principal or "ntlm-user"

    # --- routes --------------------------------------------------------------------------------
    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def route(self, method):
        st = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            # The client went away mid-body (killed): IIS never hands an incomplete request to
            # the page, so nothing is recorded.
            self.close_connection = True
            return
        body = raw.decode()
        if st.latency:
            time.sleep(st.latency)
        with st.lock:
            st.counters["requests"] += 1
        url = urllib.parse.urlsplit(self.path)
        q = {k.lower(): v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        path = url.path
        where = path.rsplit("/", 1)[-1].lower() or "root"
        front, params = st.take_fault(where, front=True)
        if front:
            # Answered in front of IIS: before any authentication, certsrv never sees it.
            st.record(method, where, front, self.front(front, params))
            return
        if not path.lower().startswith("/certsrv"):
            self.reply(404, page("404 - File or directory not found.", title="404 - File or directory not found."))
            return
        if not self.authenticate():
            return
        fault, params = st.take_fault(where, front=False)
        st.record(method, where, fault, 0)
        if fault == "reset":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "500":
            self.reply(500, page("500 - Internal server error.", title="500 - Internal server error."))
            return
        if fault == "unknown-page":
            self.reply(200, page("<P>Please sign in to continue.</P>", title="Corp Login Portal"))
            return
        if fault == "huge":
            self.reply(200, b"<html>" + b" " * (8 * 1024 * 1024))
            return
        if fault in ("drop-answer", "reset-mid-body", "truncate", "garbage", "slow-drip"):
            # certsrv does its work; the answer is spoilt on its way out (see reply).
            self.spoil = fault
        leaf = path.rstrip("/").rsplit("/", 1)[-1].lower()
        if leaf == "certsrv":
            self.reply(200, page("<P>Welcome</P><P>Use this Web site to request a certificate.</P>"))
        elif leaf == "certfnsh.asp" and method == "POST":
            self.submit(urllib.parse.parse_qs(body))
        elif leaf == "certnew.cer":
            self.certnew(q, other_key=fault == "other-key")
        elif leaf == "certcarc.asp":
            n = len(st.ca.issuing) - 1
            self.reply(200, page("<P>Download a CA certificate, certificate chain, or CRL</P>",
                                 script=f'<Script Language="JavaScript">\r\nvar nRenewals={n};\r\n</Script>\r\n'))
        elif leaf == "certnew.p7b":
            self.p7b(q)
        else:
            self.reply(404, page("404 - File or directory not found.", title="404 - File or directory not found."))

    def submit(self, form):
        st = self.server.state
        if form.get("Mode", [""])[0] != "newreq":
            st.violation(f"submit with Mode={form.get('Mode', [''])[0]!r}, not newreq")
            self.reply(200, error_page("Mode is not newreq 0x80070057 (WIN32: 87 ERROR_INVALID_PARAMETER)"))
            return
        attrib = form.get("CertAttrib", [""])[0]
        m = re.search(r"CertificateTemplate:([^\r\n]*)", attrib)
        template = m.group(1).strip() if m else ""
        if not template:
            st.violation("submit without a CertificateTemplate attribute")
        csr_pem = form.get("CertRequest", [""])[0]
        csr_sha = hashlib.sha256(csr_pem.strip().encode()).hexdigest()
        with st.lock:
            st.counters["submits"] += 1
            req_id = st.next_id
            st.next_id += 1
            st.enrollments[csr_sha] = st.enrollments.get(csr_sha, 0) + 1
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
            if not csr.is_signature_valid:
                raise ValueError("bad signature")
        except Exception:
            st.violation(f"submit {req_id}: the CSR does not parse or its signature does not verify")
            with st.lock:
                st.requests[req_id] = dict(csr_sha=csr_sha, template=template, status="error",
                                           disposition="Error Parsing Request  ASN1 bad tag value met. 0x8009310b (ASN: 267 CRYPT_E_ASN1_BADTAG)")
            self.reply(200, error_page(st.requests[req_id]["disposition"]))
            return
        rec = dict(csr_sha=csr_sha, template=template, csr=csr, status=None, cert=None, disposition="")
        if template in st.no_enroll_templates:
            rec.update(status="denied", disposition=NO_ENROLL)
        elif template in st.pending_templates:
            rec.update(status="pending", disposition="Taken Under Submission")
        elif template in st.auto_templates:
            rec.update(status="issued", cert=st.ca.issue(csr), disposition="Issued")
        else:
            rec.update(status="denied", disposition=UNSUPPORTED.format(t=template))
        with st.lock:
            st.requests[req_id] = rec
        # drop-answer (the double-submit window: recorded, the answer lost) acts in reply().
        if rec["status"] == "issued":
            self.reply(200, issued_page(req_id))
        elif rec["status"] == "pending":
            self.reply(200, pending_page(req_id))
        else:
            self.reply(200, denied_page(req_id, rec["disposition"]))

    def certnew(self, q, other_key=False):
        st = self.server.state
        rid = q.get("reqid", "")
        enc = q.get("enc", "b64").lower()
        if rid.lower() == "cacert":
            n = int(q.get("renewal", len(st.ca.issuing) - 1))
            self.send_cert(st.ca.issuing[n][1], enc)
            return
        with st.lock:
            rec = st.requests.get(int(rid)) if rid.isdigit() else None
        if rec is None:
            st.violation(f"certnew.cer for request ID {rid!r}, which this CA never gave out")
            self.reply(200, status_page("1 - (Error)", "Error retrieving request",
                                        "The requested property value is empty. 0x80094004 (-2146877436 CERTSRV_E_PROPERTY_EMPTY)"))
        elif rec["status"] == "issued" and other_key:
            # The CA's own certificate for the same subject and names, but another key: what a
            # mixed-up request ID or a corrupting middlebox would hand over.
            other = ec.generate_private_key(ec.SECP256R1()).public_key()
            self.send_cert(st.ca.issue_for(rec["csr"], other), enc)
        elif rec["status"] == "issued":
            self.send_cert(rec["cert"], enc)
        elif rec["status"] == "pending":
            self.reply(200, status_page("5 - (Under Submission)", "Taken Under Submission",
                                        "The operation completed successfully. 0x0 (WIN32: 0 ERROR_SUCCESS)"))
        elif rec["status"] == "admin-denied":
            self.reply(200, status_page("2 - (Denied)", rec["disposition"],
                                        "The request was denied by a certificate manager or CA administrator. 0x80094014 (-2146877420 CERTSRV_E_ADMIN_DENIED_REQUEST)"))
        else:
            self.reply(200, status_page("2 - (Denied)", rec["disposition"], rec["disposition"]))

    def send_cert(self, cert, enc):
        if enc == "bin":
            self.reply(200, der(cert), ctype="application/pkix-cert")
        else:
            self.reply(200, pem(cert).replace("\n", "\r\n"), ctype="application/pkix-cert")

    def p7b(self, q):
        st = self.server.state
        n = int(q.get("renewal", len(st.ca.issuing) - 1))
        if n >= len(st.ca.issuing):
            self.reply(200, error_page("Renewal out of range 0x80070057 (WIN32: 87 ERROR_INVALID_PARAMETER)"))
            return
        certs = [st.ca.issuing[n][1], st.ca.root]
        if q.get("enc", "b64").lower() == "bin":
            body = pkcs7.serialize_certificates(certs, serialization.Encoding.DER)
        else:
            # Real certsrv's label is unverified: this sim uses the CERTIFICATE label with CRLF.
            b64 = base64.encodebytes(pkcs7.serialize_certificates(certs, serialization.Encoding.DER)).decode()
            body = ("-----BEGIN CERTIFICATE-----\r\n" + b64.replace("\n", "\r\n") + "-----END CERTIFICATE-----\r\n").encode()
        self.reply(200, body, ctype="application/x-pkcs7-certificates")


class TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that hangs up mid-answer (size caps, timeouts) is expected: one line, no traceback.
        sys.stderr.write(f"certsrv sim: connection from {client_address} ended: {sys.exc_info()[1]!r}\n")

    def finish_request(self, request, client_address):
        # A thread per connection (ThreadingHTTPServer). Responses go out as two writes (head, then
        # body): without TCP_NODELAY the body waits for the ACK of the head, which the client
        # delays (~40 ms on Linux loopback) -- that, not CPU, capped the benchmark at ~45 certs/s.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            request = self.sslctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            sys.stderr.write(f"TLS handshake failed: {e}\n")
            return
        self.RequestHandlerClass(request, client_address, self)


class Admin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self.do_POST()

    def do_POST(self):
        st = self.server.state
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        out = {"ok": True}
        with st.lock:
            if url.path == "/approve":
                rec = st.requests[int(q["id"])]
                rec.update(status="issued", cert=st.ca.issue(rec["csr"]), disposition="Issued")
            elif url.path == "/approve-pending":
                # A certificate manager approving everything waiting (the chaos harness's pending flow).
                ids = [i for i, r in st.requests.items() if r["status"] == "pending"]
                for i in ids:
                    rec = st.requests[i]
                    rec.update(status="issued", cert=st.ca.issue(rec["csr"]), disposition="Issued")
                out["approved"] = ids
            elif url.path == "/deny":
                rec = st.requests[int(q["id"])]
                rec.update(status="admin-denied", disposition=q.get("by", "Denied by CORP\\caadmin"))
            elif url.path == "/renew":
                st.ca.renew()
                out["renewals"] = len(st.ca.issuing) - 1
            elif url.path == "/fault":
                params = {"retry_after": q["retry_after"]} if "retry_after" in q else {}
                st.faults.append((q["kind"], int(q.get("count", "1")), q.get("at", "any"), params))
            elif url.path == "/clear-faults":
                st.faults.clear()
            elif url.path == "/issued":
                out = {"ok": True, "der": [base64.b64encode(d).decode() for d in st.ca.issued]}
            elif url.path == "/events":
                # Cheap enough to poll every few milliseconds: submits recorded, certificates issued.
                # last_id: the newest request ID given out (IDs are handed out in submit order).
                out = {"ok": True, "submits": st.counters["submits"], "last_id": st.next_id - 1,
                       "issued": len(st.ca.issued)}
            elif url.path == "/violations":
                out = {"ok": True, "violations": list(st.violations)}
            elif url.path == "/log":
                out = {"ok": True, "log": st.log[int(q.get("since", "0")):]}
            elif url.path == "/latency":
                st.latency = int(q["ms"]) / 1000.0
            elif url.path == "/epa":
                st.epa = q["mode"]
            elif url.path == "/counters":
                out = dict(st.counters)
                # The simulator's own CPU time (all threads): shows when it, not the client, limits a benchmark.
                out["cpu_seconds"] = time.process_time()
                out["enrollments"] = st.enrollments
                out["requests_by_id"] = {i: {"template": r["template"], "status": r["status"], "csr_sha": r["csr_sha"]}
                                         for i, r in st.requests.items()}
            elif url.path == "/reset-counters":
                for k in st.counters:
                    st.counters[k] = 0
            else:
                out = {"ok": False, "error": "unknown admin path"}
        data = json.dumps(out).encode()
        self.send_response(200 if out.get("ok", True) else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--auth", choices=["ntlm", "kerberos", "basic", "cert", "none"], default="ntlm")
    p.add_argument("--epa", choices=["off", "when-supported", "required"], default="when-supported")
    p.add_argument("--users", help="NTLM_USER_FILE (DOMAIN:USER:PASSWORD lines)")
    p.add_argument("--templates", default="WebServer,Other", help="templates issued at once")
    p.add_argument("--pending-templates", default="Manual", help="templates needing a certificate manager")
    p.add_argument("--no-enroll-templates", default="NoEnroll", help="templates the user may not enroll for")
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    if args.users:
        os.environ["NTLM_USER_FILE"] = os.path.abspath(args.users)
    os.environ["LM_COMPAT_LEVEL"] = "5"  # refuse NTLMv1/LM: they cannot carry channel bindings

    state = State(args)
    ca = state.ca
    tls_key = ec.generate_private_key(ec.SECP256R1())
    tls_cert = make_cert(name("localhost"), tls_key.public_key(), ca.root.subject, ca.root_key, False,
                         sans=[x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))],
                         eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = make_cert(name("adcs-client"), client_key.public_key(), ca.root.subject, ca.root_key, False,
                            eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    tmp = tempfile.mkdtemp(prefix="certsrv-sim-")
    cert_file, key_file, root_file = (os.path.join(tmp, f) for f in ("tls.crt", "tls.key", "root.crt"))
    open(cert_file, "w").write(pem(tls_cert))
    open(key_file, "wb").write(tls_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    open(root_file, "w").write(pem(ca.root))
    sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sslctx.load_cert_chain(cert_file, key_file)
    if args.auth == "cert":
        sslctx.verify_mode = ssl.CERT_REQUIRED
        sslctx.load_verify_locations(root_file)

    server = TlsServer(("127.0.0.1", args.port), Handler)
    server.sslctx = sslctx
    server.state = state
    # tls-server-end-point: SHA-256 of the server certificate (signed ecdsa-with-SHA256).
    server.binding = hashlib.sha256(der(tls_cert)).digest()
    admin = ThreadingHTTPServer(("127.0.0.1", 0), Admin)
    admin.daemon_threads = True
    admin.state = state
    threading.Thread(target=admin.serve_forever, daemon=True).start()
    print(json.dumps({
        "port": server.server_address[1],
        "admin_port": admin.server_address[1],
        "root_pem": pem(ca.root),
        "client_cert_pem": pem(client_cert),
        "client_key_pem": client_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()).decode(),
    }), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
