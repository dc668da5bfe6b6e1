//! One issuer's connection to Vault and its cached token.
//!
//! cert-manager logs in on every sign and every issuer sync, which grows Vault's lease table
//! (cert-manager#1430). Here a token is reused until shortly before its TTL ends, renewed when
//! Vault allows it, and replaced by a new login otherwise. Only one task refreshes at a time; the
//! others wait for its result instead of logging in too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use zeroize::Zeroizing;

use certbridge::{Issuer, Reaction, Resources, SignError};

use crate::auth::Credentials;
use crate::chain::ChainCache;
use crate::client::{TokenGrant, VaultClient};
use crate::spec::VaultSpec;

/// What to do with a cached token now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Still comfortably valid.
    Use,
    /// Near its end and renewable: extend it.
    Renew,
    /// Near its end (or past it) and not renewable: get a new one.
    Replace,
}

/// How long before a token's end it is refreshed: a third of its TTL, at most a minute.
fn margin(ttl: Duration) -> Duration {
    (ttl / 3).min(Duration::from_secs(60))
}

/// The refresh decision, as a pure function of the token's lifetime and the time.
pub(crate) fn step(obtained: Instant, ttl: Option<Duration>, renewable: bool, now: Instant) -> Step {
    let Some(ttl) = ttl else { return Step::Use };
    let elapsed = now.saturating_duration_since(obtained);
    if elapsed + margin(ttl) < ttl {
        Step::Use
    } else if renewable && elapsed + Duration::from_secs(1) < ttl {
        Step::Renew
    } else {
        Step::Replace
    }
}

/// A token in use.
pub(crate) struct CachedToken {
    /// Distinguishes tokens, so a task that saw a token denied replaces only that one.
    pub id: u64,
    pub secret: Zeroizing<String>,
    obtained: Instant,
    ttl: Option<Duration>,
    renewable: bool,
    credentials: [u8; 32],
}

/// An issuer's client and cached token.
pub(crate) struct Session {
    pub client: VaultClient,
    pub chains: ChainCache,
    pub tls_fingerprint: [u8; 32],
    token: Mutex<Option<Arc<CachedToken>>>,
    next_id: AtomicU64,
}

impl Session {
    pub(crate) fn new(client: VaultClient, tls_fingerprint: [u8; 32]) -> Session {
        Session {
            client,
            chains: ChainCache::default(),
            tls_fingerprint,
            token: Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    fn store(&self, grant: TokenGrant, credentials: [u8; 32]) -> Arc<CachedToken> {
        Arc::new(CachedToken {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            secret: grant.token,
            obtained: Instant::now(),
            ttl: grant.ttl,
            renewable: grant.renewable,
            credentials,
        })
    }

    /// A usable token: the cached one, renewed or replaced when near its end.
    pub(crate) async fn token(
        &self,
        issuer: &Issuer<VaultSpec>,
        resources: &Resources,
    ) -> Result<Arc<CachedToken>, SignError> {
        let mut slot = self.token.lock().await;
        if let Some(current) = slot.as_ref() {
            match step(current.obtained, current.ttl, current.renewable, Instant::now()) {
                Step::Use => return Ok(current.clone()),
                Step::Renew => {
                    if let Some(renewed) = self.renew(issuer, current).await {
                        *slot = Some(renewed.clone());
                        return Ok(renewed);
                    }
                }
                Step::Replace => {}
            }
        }
        let credentials = Credentials::load(issuer, resources).await?;
        let fresh = self.obtain(issuer, &credentials, resources).await?;
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// Renews `current`; `None` when Vault refused or the renewal hit the token's max TTL (then a
    /// new login is better than a token about to end).
    async fn renew(&self, issuer: &Issuer<VaultSpec>, current: &CachedToken) -> Option<Arc<CachedToken>> {
        let increment = current.ttl?;
        match self.client.renew_self(&current.secret, increment).await {
            Ok(grant) if grant.ttl.is_none_or(|t| t >= increment / 2) => {
                tracing::debug!(issuer = %issuer.display_name(), ttl = ?grant.ttl, "renewed the Vault token");
                Some(self.store(grant, current.credentials))
            }
            Ok(grant) => {
                tracing::debug!(issuer = %issuer.display_name(), ttl = ?grant.ttl, "the Vault token reached its max TTL; logging in again");
                None
            }
            Err(e) => {
                tracing::info!(issuer = %issuer.display_name(), error = %e, "renewing the Vault token failed; logging in again");
                None
            }
        }
    }

    async fn obtain(
        &self,
        issuer: &Issuer<VaultSpec>,
        credentials: &Credentials,
        resources: &Resources,
    ) -> Result<Arc<CachedToken>, SignError> {
        let grant = credentials.obtain(&self.client, resources).await?;
        tracing::info!(
            issuer = %issuer.display_name(),
            method = credentials.method(),
            ttl = ?grant.ttl,
            renewable = grant.renewable,
            "obtained a Vault token"
        );
        Ok(self.store(grant, credentials.fingerprint()))
    }

    /// Forgets the token `id` after Vault denied it (revoked, expired early), unless another task
    /// already replaced it.
    pub(crate) async fn invalidate(&self, id: u64) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.id == id) {
            *slot = None;
        }
    }

    /// Proves the issuer can authenticate with its current credentials: the cached token is kept
    /// when it was obtained with the same credentials and Vault still accepts it; otherwise a fresh
    /// login (which is what a changed Secret needs).
    pub(crate) async fn verify(&self, issuer: &Issuer<VaultSpec>, resources: &Resources) -> Result<(), SignError> {
        let credentials = Credentials::load(issuer, resources).await?;
        let fingerprint = credentials.fingerprint();
        let mut slot = self.token.lock().await;
        if let Some(current) = slot.as_ref()
            && current.credentials == fingerprint
            && step(current.obtained, current.ttl, current.renewable, Instant::now()) == Step::Use
        {
            match self.client.lookup_self(&current.secret).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_transient() => {
                    return Err(SignError::issuer_not_ready(format!(
                        "Vault at {} did not answer a token lookup: {e}",
                        self.client.server()
                    )));
                }
                Err(e) => {
                    tracing::info!(issuer = %issuer.display_name(), error = %e, "Vault no longer accepts the cached token; logging in again");
                }
            }
        }
        *slot = None;
        let fresh = self.obtain(issuer, &credentials, resources).await.map_err(|e| match e {
            e if e.reaction == Reaction::Transient => e.with_reaction(Reaction::IssuerNotReady),
            other => other,
        })?;
        *slot = Some(fresh);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_reused_then_renewed_or_replaced_near_their_end() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // A token without TTL (root, periodic without TTL) is always used.
        assert_eq!(step(t0, None, false, t0 + s(1_000_000)), Step::Use);
        // 1 h token: refreshed in its last minute.
        assert_eq!(step(t0, Some(s(3600)), true, t0 + s(3539)), Step::Use);
        assert_eq!(step(t0, Some(s(3600)), true, t0 + s(3541)), Step::Renew);
        assert_eq!(step(t0, Some(s(3600)), false, t0 + s(3541)), Step::Replace);
        // Past its end it can only be replaced.
        assert_eq!(step(t0, Some(s(3600)), true, t0 + s(3600)), Step::Replace);
        // 9 s token: refreshed in its last third.
        assert_eq!(step(t0, Some(s(9)), true, t0 + s(5)), Step::Use);
        assert_eq!(step(t0, Some(s(9)), true, t0 + s(6)), Step::Renew);
    }
}
