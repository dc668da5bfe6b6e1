//! Ordering what a CA returns into cert-manager's shape: the chain leaf first up to the highest
//! non-self-signed certificate, and the CA as a separate best guess (cert-manager's
//! `ParseSingleCertificateChainPEM`). CAs return chains in every order, with and without the root,
//! sometimes with duplicates; adapters pass whatever they got and never order by hand.

use x509_parser::prelude::{FromDer, X509Certificate};

/// A signed result: what the controller writes to `status.certificate` (and `status.ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// PEM chain: leaf first, then intermediates; no self-signed root unless the leaf is one.
    pub chain_pem: String,
    /// PEM of the CA that issued the chain: the self-signed root if known, else the highest
    /// certificate of the chain (when the chain has more than the leaf).
    pub ca_pem: Option<String>,
}

struct Cert {
    der: Vec<u8>,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    self_signed: bool,
}

impl Issued {
    /// Orders a PEM bundle in any order (duplicates allowed) into leaf-first chain + CA.
    pub fn from_pem_bundle(bundle: &str) -> Result<Issued, String> {
        let blocks = pem::parse_many(bundle).map_err(|e| format!("the CA returned invalid PEM: {e}"))?;
        let ders: Vec<Vec<u8>> =
            blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE").map(pem::Pem::into_contents).collect();
        Issued::from_der_certs(ders)
    }

    /// Like [`Issued::from_pem_bundle`] for DER certificates, plus an optional extra CA/root (e.g. a
    /// configured CA bundle) used only to pick the CA.
    pub fn from_der_certs(ders: Vec<Vec<u8>>) -> Result<Issued, String> {
        let (certs, order) = ordered(ders)?;
        let last = *order.last().expect("non-empty");
        let (chain, ca): (Vec<usize>, Option<usize>) = if order.len() > 1 && certs[last].self_signed {
            (order[..order.len() - 1].to_vec(), Some(last))
        } else if order.len() > 1 {
            (order.clone(), Some(last))
        } else {
            (order.clone(), None)
        };
        let to_pem = |i: usize| to_pem(&certs[i].der);
        Ok(Issued { chain_pem: chain.iter().map(|&i| to_pem(i)).collect(), ca_pem: ca.map(to_pem) })
    }

    /// Sets the CA when the chain alone does not name one (e.g. the CA certificate is configured
    /// on the issuer, or returned separately by the CA).
    pub fn with_ca_if_missing(mut self, ca_pem: Option<String>) -> Issued {
        if self.ca_pem.is_none() {
            self.ca_pem = ca_pem;
        }
        self
    }

    /// The DER SubjectPublicKeyInfo of the leaf.
    pub fn leaf_public_key_der(&self) -> Result<Vec<u8>, String> {
        let block = pem::parse(&self.chain_pem).map_err(|e| format!("issued chain is not PEM: {e}"))?;
        let (_, x) =
            X509Certificate::from_der(block.contents()).map_err(|e| format!("issued leaf does not parse: {e}"))?;
        Ok(x.public_key().raw.to_vec())
    }
}

/// Parses `ders` (duplicates dropped) and orders them leaf first up to a self-signed root or the
/// highest certificate: the certificates and that order, which covers every certificate.
fn ordered(ders: Vec<Vec<u8>>) -> Result<(Vec<Cert>, Vec<usize>), String> {
    let mut certs: Vec<Cert> = Vec::new();
    for der in ders {
        if certs.iter().any(|c| c.der == der) {
            continue;
        }
        let (_, x) = X509Certificate::from_der(&der)
            .map_err(|e| format!("the CA returned a certificate that does not parse: {e}"))?;
        let subject = x.subject().as_raw().to_vec();
        let issuer = x.issuer().as_raw().to_vec();
        let self_signed = subject == issuer && x.verify_signature(None).is_ok();
        certs.push(Cert { der, subject, issuer, self_signed });
    }
    if certs.is_empty() {
        return Err("the CA returned no certificate".into());
    }
    // The leaf is the certificate no other certificate names as its issuer.
    let is_issuer_of_another =
        |c: &Cert| certs.iter().any(|o| !std::ptr::eq(o, c) && !o.self_signed && o.issuer == c.subject);
    let leaves: Vec<usize> = (0..certs.len()).filter(|&i| !is_issuer_of_another(&certs[i])).collect();
    let leaf = match leaves.as_slice() {
        [one] => *one,
        [] => {
            return Err("the certificates returned by the CA form a loop; no leaf found".into());
        }
        _ if certs.len() == 1 => 0,
        _ => {
            return Err(format!("the CA returned {} unrelated certificates, not a single chain", leaves.len()));
        }
    };
    let mut order = vec![leaf];
    while let Some(&cur) = order.last() {
        if certs[cur].self_signed {
            break;
        }
        match (0..certs.len()).find(|&i| !order.contains(&i) && certs[i].subject == certs[cur].issuer) {
            Some(next) => order.push(next),
            None => break,
        }
    }
    if order.len() != certs.len() {
        return Err("the CA returned certificates that are not part of the leaf's chain".into());
    }
    Ok((certs, order))
}

/// A CA's own chain, ordered once when the CA is loaded; each leaf it issues is put in front.
///
/// An adapter that holds its CA certificate (a CA in a Secret, an HSM-held key) would otherwise
/// call [`Issued::from_pem_bundle`] on leaf + CA for every request, which checks the root's
/// self-signature again each time: a signature verification per request, 15 % of the example
/// controller's CPU at full speed (BENCHMARKS.md, issue 16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaChain {
    /// PEM of the certificates that follow a leaf: the CA up to, not including, a self-signed root.
    above_leaf: String,
    /// PEM of the CA cert-manager shows: the self-signed root, or the highest certificate.
    ca_pem: String,
}

impl CaChain {
    /// Orders `bundle`: the issuing CA's certificate and any chain above it, in any order.
    pub fn from_pem_bundle(bundle: &str) -> Result<CaChain, String> {
        let (certs, order) = ordered(certificates_from_pem(bundle)?)?;
        let last = *order.last().expect("non-empty");
        let above = if certs[last].self_signed { &order[..order.len() - 1] } else { &order[..] };
        Ok(CaChain {
            above_leaf: above.iter().map(|&i| to_pem(&certs[i].der)).collect(),
            ca_pem: to_pem(&certs[last].der),
        })
    }

    /// The result for a leaf this CA issued (DER): what [`Issued::from_pem_bundle`] returns for
    /// the leaf followed by the CA's bundle, without parsing or verifying anything again.
    pub fn issued(&self, leaf_der: &[u8]) -> Issued {
        Issued { chain_pem: format!("{}{}", to_pem(leaf_der), self.above_leaf), ca_pem: Some(self.ca_pem.clone()) }
    }
}

/// The DER certificates of a PEM text: at least one, every `CERTIFICATE` block parsing as X.509;
/// other blocks (keys, comments) are an error too, so a wrong key in a Secret is caught early.
/// The message says what is wrong without quoting the text.
pub fn certificates_from_pem(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("not valid PEM ({e})"))?;
    if blocks.is_empty() {
        return Err("holds no PEM block; expected one or more CERTIFICATE blocks".into());
    }
    let mut out = Vec::with_capacity(blocks.len());
    for (i, b) in blocks.into_iter().enumerate() {
        if b.tag() != "CERTIFICATE" {
            return Err(format!("PEM block {} is a {:?}, not a CERTIFICATE", i + 1, b.tag()));
        }
        X509Certificate::from_der(b.contents())
            .map_err(|e| format!("PEM block {} is not an X.509 certificate: {e}", i + 1))?;
        out.push(b.into_contents());
    }
    Ok(out)
}

/// PEM-encodes one DER certificate with LF line endings (the `pem` crate defaults to CRLF).
pub fn to_pem(der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyKind;
    use crate::testing::{TestCa, generate_key};

    #[test]
    fn orders_any_order_and_picks_the_root() {
        let root_ca = TestCa::new(&KeyKind::EcP256).unwrap();
        let inter_ca = root_ca.intermediate(&KeyKind::EcP256).unwrap();
        let (root, inter) = (root_ca.cert_pem(), inter_ca.cert_pem());
        let lk = generate_key(&KeyKind::EcP256).unwrap();
        let leaf = inter_ca.sign_key(&lk, &["x.example.com"]).unwrap();
        let shuffled = format!("{root}{inter}{leaf}{inter}");
        let issued = Issued::from_pem_bundle(&shuffled).unwrap();
        assert_eq!(issued.chain_pem, format!("{leaf}{inter}"));
        assert_eq!(issued.ca_pem.as_deref(), Some(root));
        // Without the root, the highest intermediate is the CA and stays in the chain.
        let issued = Issued::from_pem_bundle(&format!("{inter}{leaf}")).unwrap();
        assert_eq!(issued.chain_pem, format!("{leaf}{inter}"));
        assert_eq!(issued.ca_pem.as_deref(), Some(inter));
        // A lone leaf has no CA unless one is supplied.
        let issued = Issued::from_pem_bundle(&leaf).unwrap().with_ca_if_missing(Some(root.to_owned()));
        assert_eq!(issued.chain_pem, leaf);
        assert_eq!(issued.ca_pem.as_deref(), Some(root));
        assert_eq!(issued.leaf_public_key_der().unwrap(), rcgen::PublicKeyData::subject_public_key_info(&lk));
    }

    #[test]
    fn a_ca_chain_issues_what_ordering_leaf_and_bundle_gives() {
        let root_ca = TestCa::new(&KeyKind::EcP256).unwrap();
        let inter_ca = root_ca.intermediate(&KeyKind::EcP256).unwrap();
        let (root, inter) = (root_ca.cert_pem(), inter_ca.cert_pem());
        let lk = generate_key(&KeyKind::EcP256).unwrap();
        // A self-signed CA alone, an intermediate with its root (either order), an intermediate alone.
        for (ca, bundle) in
            [(&root_ca, root.to_owned()), (&inter_ca, format!("{root}{inter}")), (&inter_ca, inter.to_owned())]
        {
            let leaf = ca.sign_key(&lk, &["x.example.com"]).unwrap();
            let der = pem::parse(&leaf).unwrap().into_contents();
            let chain = CaChain::from_pem_bundle(&bundle).unwrap();
            assert_eq!(chain.issued(&der), Issued::from_pem_bundle(&format!("{leaf}{bundle}")).unwrap(), "{bundle}");
        }
        assert!(CaChain::from_pem_bundle("").unwrap_err().contains("no PEM block"));
    }

    #[test]
    fn unrelated_certificates_are_refused() {
        let (a, b) = (TestCa::new(&KeyKind::EcP256).unwrap(), TestCa::new(&KeyKind::EcP256).unwrap());
        let (leaf, _) = TestCa::new(&KeyKind::EcP256).unwrap().leaf(&KeyKind::EcP256, &["x"]).unwrap();
        assert!(Issued::from_pem_bundle(&format!("{leaf}{}{}", a.cert_pem(), b.cert_pem())).is_err());
        assert!(Issued::from_pem_bundle("").unwrap_err().contains("no certificate"));
    }
}
