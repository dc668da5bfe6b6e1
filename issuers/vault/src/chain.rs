//! Vault's answer as an [`Issued`] chain, through the framework's `Issued::from_pem_bundle`, with
//! the CA part remembered per issuer.
//!
//! Every answer of a role carries the same `ca_chain` and `issuing_ca`; re-deciding which of them
//! is the root means verifying its self-signature again, which costs ~77 µs per answer — about a
//! tenth of a whole signature round trip against a local OpenBao (see the bench). So the first
//! answer goes through the full ordering, and later answers with byte-identical CA parts only have
//! the framework order the leaf onto the intermediates it found then (no self-signed certificate
//! left to verify), and reuse the CA it chose. Any mismatch falls back to the full ordering.

use std::sync::Mutex;

use certbridge::Issued;

use crate::client::SignedData;

struct Known {
    ca_part: String,
    /// The chain after the leaf, as the framework encoded it.
    tail_pem: String,
    tail_len: usize,
    ca_pem: Option<String>,
}

/// The last CA part seen by one issuer and what the framework made of it.
#[derive(Default)]
pub(crate) struct ChainCache {
    known: Mutex<Option<Known>>,
}

fn count_certs(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

impl ChainCache {
    /// Orders `data` into leaf-first chain + CA.
    pub(crate) fn issued(&self, data: &SignedData) -> Result<Issued, String> {
        let ca_part = data.ca_part();
        let single_leaf = count_certs(&data.certificate) == 1;
        if single_leaf && let Some(hit) = self.reuse(&ca_part, &data.certificate) {
            return Ok(hit);
        }
        let issued = Issued::from_pem_bundle(&data.pem_bundle())?;
        if single_leaf && let Some(split) = issued.chain_pem.find("-----END CERTIFICATE-----") {
            let tail_start = split + "-----END CERTIFICATE-----".len();
            let tail_pem = issued.chain_pem[tail_start..].trim_start_matches('\n').to_owned();
            let known = Known { ca_part, tail_len: count_certs(&tail_pem), tail_pem, ca_pem: issued.ca_pem.clone() };
            *self.known.lock().unwrap_or_else(|p| p.into_inner()) = Some(known);
        }
        Ok(issued)
    }

    fn reuse(&self, ca_part: &str, leaf: &str) -> Option<Issued> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let known = known.as_ref().filter(|k| k.ca_part == ca_part)?;
        let issued = Issued::from_pem_bundle(&format!("{}\n{}", leaf.trim_end(), known.tail_pem)).ok()?;
        // The leaf must come first and chain onto exactly the intermediates known for this CA part.
        if !issued.chain_pem.ends_with(&known.tail_pem) || count_certs(&issued.chain_pem) != known.tail_len + 1 {
            return None;
        }
        Some(Issued { chain_pem: issued.chain_pem, ca_pem: known.ca_pem.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certbridge::KeyKind;
    use certbridge::testing::TestCa;

    fn leaf(ca: &TestCa) -> String {
        ca.leaf(&KeyKind::EcP256, &["x.example.com"]).unwrap().0
    }

    fn answer(leaf: &str, inter: &TestCa) -> SignedData {
        SignedData {
            certificate: leaf.into(),
            issuing_ca: Some(inter.cert_pem().into()),
            ca_chain: Some(vec![inter.cert_pem().into(), inter.root_pem().into()]),
            serial_number: None,
            warnings: vec![],
        }
    }

    #[test]
    fn repeated_answers_match_the_full_ordering() {
        let root = TestCa::new(&KeyKind::EcP256).unwrap();
        let inter = root.intermediate(&KeyKind::EcP256).unwrap();
        let cache = ChainCache::default();
        for _ in 0..3 {
            let data = answer(&leaf(&inter), &inter);
            let full = Issued::from_pem_bundle(&data.pem_bundle()).unwrap();
            assert_eq!(cache.issued(&data).unwrap(), full);
            assert_eq!(full.ca_pem.as_deref(), Some(root.cert_pem()));
        }
    }

    #[test]
    fn a_leaf_from_elsewhere_is_not_dressed_with_the_cached_chain() {
        let inter = TestCa::new(&KeyKind::EcP256).unwrap().intermediate(&KeyKind::EcP256).unwrap();
        let stranger = TestCa::new(&KeyKind::EcP256).unwrap();
        let cache = ChainCache::default();
        cache.issued(&answer(&leaf(&inter), &inter)).unwrap();
        // Same CA part, but a leaf some other CA signed: the full ordering refuses it.
        assert!(cache.issued(&answer(&leaf(&stranger), &inter)).is_err());
    }
}
