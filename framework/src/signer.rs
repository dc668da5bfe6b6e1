//! The contract an adapter implements.

use async_trait::async_trait;

use crate::context::SignContext;
use crate::error::SignError;
use crate::issuer::{Issuer, IssuerSpec};
use crate::pki::Issued;
use crate::request::SignRequest;
use crate::resources::Resources;

/// A certificate authority backend: sign a request, check an issuer.
///
/// The framework calls `sign` only for approved requests whose issuer is Ready, with the CSR
/// already parsed and verified, and checks that the returned leaf carries the CSR's public key
/// before writing it. Both methods may run concurrently for different requests and issuers.
#[async_trait]
pub trait Signer: Send + Sync + 'static {
    /// The issuer spec this signer serves (both kinds share it).
    type Spec: IssuerSpec;

    /// Sign `request` with `issuer`. Return the chain in any order — [`Issued::from_pem_bundle`]
    /// orders it — or a [`SignError`] saying what the controller should do next.
    async fn sign(
        &self,
        request: &SignRequest,
        issuer: &Issuer<Self::Spec>,
        ctx: &mut SignContext,
    ) -> Result<Issued, SignError>;

    /// Prove the issuer can sign (credentials present, CA reachable, keys match). `Ok` makes it
    /// Ready; a [`Reaction::Permanent`](crate::Reaction::Permanent) error holds it Failed until its
    /// spec or an object it references changes; anything else is retried with backoff.
    async fn check(&self, issuer: &Issuer<Self::Spec>, resources: &Resources) -> Result<(), SignError>;
}
