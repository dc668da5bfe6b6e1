//! Signing with a CA whose certificate and key come from a Secret.

use certbridge::pki::{certificate_params, key_pair_from_pem, subject_public_key};
use certbridge::{
    CaChain, Issued, Issuer, IssuerCache, Ready, Resources, SignContext, SignError, SignRequest, Signer, async_trait,
};
use rcgen::{KeyPair, PublicKeyData};
use x509_parser::{pem::parse_x509_pem, time::ASN1Time};

use crate::spec::LocalCaSpec;

/// The LocalCA signer. `check` loads the CA from its Secret; `sign` uses what the last passing
/// check loaded (the framework re-checks an issuer as soon as a Secret it read changes).
#[derive(Default)]
pub struct LocalCaSigner(IssuerCache<Ca>);

/// A CA loaded from its Secret.
struct Ca {
    chain: CaChain, // `tls.crt`: the CA certificate first, then any chain above it; ordered once.
    issuer: rcgen::Issuer<'static, KeyPair>,
    not_after: ASN1Time,
    subject: String,
}

impl Ca {
    /// Reads and cross-checks the Secret; any problem is "issuer not ready": fixing it re-checks.
    async fn load(spec: &LocalCaSpec, resources: &Resources) -> Result<Ca, SignError> {
        let name = &spec.secret_name;
        let bad =
            |what: &str| SignError::issuer_not_ready(format!("Secret \"{}/{name}\" {what}", resources.namespace()));
        let pem = resources.secret_string(name, "tls.crt").await?;
        let key = resources.secret_string(name, "tls.key").await?;
        // PKCS#8, PKCS#1 or SEC1; the error names the problem, never the key's bytes.
        let key = key_pair_from_pem(&key).map_err(|e| bad(&format!("key \"tls.key\" {e}")))?;
        let (_, block) =
            parse_x509_pem(pem.as_bytes()).map_err(|_| bad("key \"tls.crt\" does not start with a PEM certificate"))?;
        let cert = block.parse_x509().map_err(|_| bad("key \"tls.crt\" holds a certificate that does not parse"))?;
        if !cert.is_ca() {
            return Err(bad("key \"tls.crt\" is not a CA certificate (basicConstraints CA:TRUE is missing)"));
        }
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(bad("key \"tls.key\" does not match the certificate in \"tls.crt\""));
        }
        let chain = CaChain::from_pem_bundle(&pem).map_err(|e| bad(&format!("key \"tls.crt\" {e}")))?;
        let (not_after, subject) = (cert.validity().not_after, cert.subject().to_string());
        let issuer = rcgen::Issuer::from_ca_cert_der(&block.contents.clone().into(), key)
            .map_err(|e| bad(&format!("key \"tls.crt\" cannot be used as an issuer: {e}")))?;
        Ok(Ca { chain, issuer, not_after, subject })
    }
}

#[async_trait]
impl Signer for LocalCaSigner {
    type Spec = LocalCaSpec;

    async fn sign(
        &self,
        request: &SignRequest,
        issuer: &Issuer<LocalCaSpec>,
        ctx: &mut SignContext,
    ) -> Result<Issued, SignError> {
        let ca = match self.0.latest(issuer) {
            Some(ca) => ca,
            None => self.0.insert(issuer, ctx.resources(), Ca::load(&issuer.spec, ctx.resources()).await?),
        };
        let mut params = certificate_params(request, None)?;
        // Like cert-manager's CA issuer: a leaf never outlives its CA.
        params.not_after = params.not_after.min(ca.not_after.to_datetime());
        let leaf = params
            .signed_by(&subject_public_key(request)?, &ca.issuer)
            .map_err(|e| SignError::permanent(format!("signing failed: {e}")))?;
        Ok(ca.chain.issued(leaf.der()))
    }

    async fn check(&self, issuer: &Issuer<LocalCaSpec>, resources: &Resources) -> Result<Ready, SignError> {
        let ca = Ca::load(&issuer.spec, resources).await.inspect_err(|_| self.0.remove(issuer))?;
        Ok(Ready::message(format!("signing with CA {}", self.0.insert(issuer, resources, ca).subject)))
    }
}
