//! The contract an adapter implements.

use async_trait::async_trait;

use crate::context::SignContext;
use crate::error::SignError;
use crate::issuer::{Issuer, IssuerSpec};
use crate::pki::Issued;
use crate::request::{RequestObject, SignRequest};
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
    /// Ready, with [`Ready`]'s message (say, which CA signs) in the Ready condition; a
    /// [`Reaction::Permanent`](crate::Reaction::Permanent) error holds it Failed until its spec or
    /// an object it references changes; anything else is retried with backoff, with the error's
    /// [reason](SignError::with_reason) (default `Pending`) on the Ready=False condition.
    async fn check(&self, issuer: &Issuer<Self::Spec>, resources: &Resources) -> Result<Ready, SignError>;

    /// Whether [`Signer::revoke`] can revoke certificates `issuer` signed. Only then does the
    /// request controller put its finalizer `<group>/revoke-on-delete` on requests annotated
    /// `<group>/revoke-on-delete: "true"`. Default: no.
    fn revokes(&self, issuer: &Issuer<Self::Spec>) -> bool {
        let _ = issuer;
        false
    }

    /// Revoke the certificate the framework wrote for `request` (`certificate_pem`: the chain,
    /// leaf first), called when an annotated request is deleted (see [`Signer::revokes`]). `Ok`
    /// (also: already revoked) and a [`Reaction::Permanent`](crate::Reaction::Permanent) error
    /// release the request (the latter with a Warning event); anything else is retried with
    /// backoff, for at most an hour after the deletion, then the request is released with a
    /// Warning event. `request.annotations` holds the state `sign` saved.
    async fn revoke(
        &self,
        certificate_pem: &str,
        request: &RequestObject,
        issuer: &Issuer<Self::Spec>,
        resources: &Resources,
    ) -> Result<(), SignError> {
        let _ = (certificate_pem, request, issuer, resources);
        Err(SignError::permanent("this issuer cannot revoke certificates"))
    }
}

/// What [`Signer::check`] says about an issuer it found ready: `Ready::default()` writes the
/// framework's "Succeeded checking the issuer", `Ready::message("issuing CA CN=…")` writes that
/// message instead (it is shown by `kubectl get`, so never a secret value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ready {
    message: Option<String>,
}

impl Ready {
    /// Ready, with `message` in the Ready condition (an empty message means the default).
    pub fn message(message: impl Into<String>) -> Self {
        let message = message.into();
        Ready { message: (!message.trim().is_empty()).then_some(message) }
    }

    /// The message to write, if the signer gave one.
    pub fn text(&self) -> Option<&str> {
        self.message.as_deref()
    }
}
