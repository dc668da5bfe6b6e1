//! One token: a bounded pool of logged-in sessions, the PIN that proved itself, the PINs that did
//! not, and recovery when sessions close, the token logs out, or the token goes away and returns.
//!
//! Invariants:
//! - Login state belongs to the token and the process, not to a session, so the pool logs in once
//!   and every session it opens afterwards is already logged in.
//! - A PIN that the token refused is remembered (as a salted hash) and never sent again; real HSMs
//!   lock the user after a few wrong PINs.
//! - While a PIN is proven (the process is logged in with it), any other PIN is refused by
//!   comparing fingerprints in constant time: no `C_Login`, no logout of the issuers using it.
//!   Tenants share tokens, so a tenant's wrong PIN must neither cost a login attempt nor disturb
//!   the others. (Changing the token's PIN therefore needs a controller restart.)
//! - Failed logins per token are budgeted process-wide: [`FAILED_LOGIN_BURST`] at once, then one
//!   per [`FAILED_LOGIN_INTERVAL`]; past the budget a new PIN is not tried, so no sequence of
//!   issuer edits drives the token to its lockout count quickly.
//! - At most `max_sessions` sessions exist at once (idle + in use); callers wait for a free one.
//! - After a token-level fault the pool's generation changes: idle sessions are closed, sessions in
//!   use are closed when returned, and the slot is looked up again by serial number.
//! - A token missing from the slot list is looked for once more after re-initializing the module
//!   (see `Module::reinitialize`); sessions of an older module epoch are forgotten, not closed.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Fault, HsmError};
use crate::module::Module;

/// Which token an issuer means.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenSelector {
    /// Token label.
    pub label: Option<String>,
    /// Token serial number.
    pub serial: Option<String>,
}

impl std::fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.label, &self.serial) {
            (Some(l), Some(s)) => write!(f, "label {l:?} and serial {s:?}"),
            (Some(l), None) => write!(f, "label {l:?}"),
            (None, Some(s)) => write!(f, "serial {s:?}"),
            (None, None) => f.write_str("(nothing)"),
        }
    }
}

/// Failed logins a token may take at once (a fixed Secret after one typo must not wait).
pub const FAILED_LOGIN_BURST: f64 = 2.0;
/// After the burst, one more failed login per token is allowed per this interval.
pub const FAILED_LOGIN_INTERVAL: Duration = Duration::from_secs(60);

/// Compares two fingerprints in constant time (hand-written: eight lines do not need a crate).
fn same_fingerprint(a: &PinFingerprint, b: &PinFingerprint) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// A salted hash of a PIN: lets the pool recognise a PIN without keeping every PIN it was shown.
pub type PinFingerprint = [u8; 32];

/// The salted fingerprint of `pin` (the salt is random per process, so fingerprints are useless
/// outside it).
pub fn pin_fingerprint(pin: &str) -> PinFingerprint {
    static SALT: OnceLock<[u8; 32]> = OnceLock::new();
    let salt = SALT.get_or_init(rand::random);
    let mut h = Sha256::new();
    h.update(salt);
    h.update(pin.as_bytes());
    h.finalize().into()
}

/// Counters for tests and metrics.
#[derive(Debug, Default)]
pub struct TokenStats {
    /// C_Login calls made (any outcome).
    pub login_attempts: AtomicU64,
    /// Sessions opened since start.
    pub sessions_opened: AtomicU64,
    /// Token-level resets (token removed, module re-initialized).
    pub resets: AtomicU64,
}

struct Inner {
    slot: Option<Slot>,
    generation: u64,
    /// The module epoch the slot and sessions belong to.
    epoch: u64,
    idle: Vec<Session>,
    /// Sessions alive: idle + leased.
    open: usize,
    /// The PIN that last logged in, for logging in again after a logout or token return.
    pin: Option<AuthPin>,
    pin_fp: Option<PinFingerprint>,
    bad_pins: HashSet<PinFingerprint>,
    /// Failed logins still allowed now (refills at one per [`FAILED_LOGIN_INTERVAL`]).
    login_budget: f64,
    budget_at: Instant,
}

impl Inner {
    /// The failed-login budget now.
    fn budget(&mut self) -> f64 {
        let now = Instant::now();
        let refill = now.duration_since(self.budget_at).as_secs_f64() / FAILED_LOGIN_INTERVAL.as_secs_f64();
        self.login_budget = (self.login_budget + refill).min(FAILED_LOGIN_BURST);
        self.budget_at = now;
        self.login_budget
    }

    fn spend_failed_login(&mut self) {
        self.budget();
        self.login_budget -= 1.0;
    }
}

/// A token in a module, shared by every issuer that names it.
pub struct Token {
    module: Arc<Module>,
    label: String,
    serial: String,
    max_sessions: usize,
    inner: Mutex<Inner>,
    freed: Condvar,
    stats: TokenStats,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("module", &self.module.path)
            .field("label", &self.label)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

type Registry = Mutex<HashMap<(PathBuf, String), Arc<Token>>>;

fn registry() -> &'static Registry {
    static TOKENS: OnceLock<Registry> = OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Finds the slot of the token matching `sel`, with its label and serial. A token whose info
/// cannot be read is not there (SoftHSM answers CKR_GENERAL_ERROR for a token whose files vanished).
fn find_slot(module: &Module, sel: &TokenSelector) -> Result<(Slot, String, String), HsmError> {
    let ctx = &module.ctx;
    let slots = ctx.get_slots_with_token().map_err(|e| HsmError::call("C_GetSlotList", e))?;
    let mut found = Vec::new();
    let mut present = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else { continue };
        let label = info.label().trim_end().to_owned();
        let serial = info.serial_number().trim_end().to_owned();
        let ok = sel.label.as_deref().is_none_or(|l| l == label) && sel.serial.as_deref().is_none_or(|s| s == serial);
        if ok {
            found.push((slot, label.clone(), serial));
        }
        present.push(format!("{label:?}"));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(HsmError::TokenNotFound {
            selector: sel.to_string(),
            module: module.path.display().to_string(),
            present: if present.is_empty() { "none".into() } else { present.join(", ") },
        }),
        count => Err(HsmError::TokenAmbiguous { selector: sel.to_string(), count }),
    }
}

impl Token {
    /// The shared token matching `sel` in `module`, creating its pool on first use. A token this
    /// process used before that is missing now is looked for again after re-initializing the
    /// module, and reported as absent (it may return), not as unknown.
    pub fn find(module: &Arc<Module>, sel: &TokenSelector, max_sessions: usize) -> Result<Arc<Token>, HsmError> {
        let mut reinitialized = false;
        loop {
            let in_use = module.in_use();
            let epoch = module.epoch();
            let err = match find_slot(module, sel) {
                Ok((slot, label, serial)) => return Ok(Token::register(module, slot, label, serial, max_sessions)),
                Err(e) => e,
            };
            let known = matches!(err, HsmError::TokenNotFound { .. }).then(|| Token::known(module, sel)).flatten();
            if !reinitialized && (err.fault() == Fault::Module || known.is_some()) {
                drop(in_use);
                reinitialized = true;
                module.reinitialize(epoch).map_err(|e| HsmError::call("C_Initialize", e))?;
                continue;
            }
            return Err(known.map_or(err, |t| t.absent()));
        }
    }

    /// The pool of a token found in slot `slot` (the caller holds [`Module::in_use`]).
    fn register(module: &Arc<Module>, slot: Slot, label: String, serial: String, max_sessions: usize) -> Arc<Token> {
        let mut tokens = lock(registry());
        let token = tokens
            .entry((module.path.clone(), serial.clone()))
            .or_insert_with(|| {
                Arc::new(Token {
                    module: module.clone(),
                    label,
                    serial,
                    max_sessions: max_sessions.max(1),
                    inner: Mutex::new(Inner {
                        slot: None,
                        generation: 0,
                        epoch: module.epoch(),
                        idle: Vec::new(),
                        open: 0,
                        pin: None,
                        pin_fp: None,
                        bad_pins: HashSet::new(),
                        login_budget: FAILED_LOGIN_BURST,
                        budget_at: Instant::now(),
                    }),
                    freed: Condvar::new(),
                    stats: TokenStats::default(),
                })
            })
            .clone();
        drop(tokens);
        let mut g = lock(&token.inner);
        token.sync_epoch(&mut g);
        g.slot.get_or_insert(slot);
        drop(g);
        token
    }

    /// The one token of `module` used before that `sel` matches.
    fn known(module: &Module, sel: &TokenSelector) -> Option<Arc<Token>> {
        let tokens = lock(registry());
        let mut matching = tokens.values().filter(|t| {
            t.module.path == module.path
                && sel.label.as_deref().is_none_or(|l| l == t.label)
                && sel.serial.as_deref().is_none_or(|s| s == t.serial)
        });
        let first = matching.next()?;
        matching.next().is_none().then(|| first.clone())
    }

    fn absent(&self) -> HsmError {
        HsmError::TokenAbsent { label: self.label.clone(), serial: self.serial.clone() }
    }

    /// Whether the token in `slot` still answers; for telling a vanished token from a missing
    /// object on the error path.
    pub(crate) fn present(&self, slot: Slot) -> Result<(), HsmError> {
        self.module.ctx.get_token_info(slot).map(|_| ()).map_err(|_| self.absent())
    }

    /// Forgets the slot and sessions of an older module epoch: their handles are dead and may
    /// already name someone else's session, so they are leaked instead of closed.
    fn sync_epoch(&self, g: &mut Inner) {
        let epoch = self.module.epoch();
        if g.epoch == epoch {
            return;
        }
        g.epoch = epoch;
        g.generation += 1;
        g.slot = None;
        g.open -= g.idle.len();
        for session in g.idle.drain(..) {
            std::mem::forget(session);
        }
        self.freed.notify_all();
    }

    /// The token label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The module this token lives in.
    pub fn module(&self) -> &Arc<Module> {
        &self.module
    }

    /// Counters.
    pub fn stats(&self) -> &TokenStats {
        &self.stats
    }

    /// Sessions currently open by the pool (idle + in use).
    pub fn open_sessions(&self) -> usize {
        lock(&self.inner).open
    }

    /// The pool's capacity.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// Proves `pin` logs in (once per PIN): a PIN seen to work is accepted without a new login; a PIN
    /// seen to fail is refused without touching the token; a new PIN is tried exactly once.
    pub fn authenticate(&self, pin: &Zeroizing<String>) -> Result<(), HsmError> {
        let fp = pin_fingerprint(pin);
        let _in_use = self.module.in_use();
        let mut g = lock(&self.inner);
        if g.bad_pins.contains(&fp) {
            return Err(HsmError::WrongPin { label: self.label.clone(), remembered: true });
        }
        if let Some(proven) = g.pin_fp {
            if same_fingerprint(&proven, &fp) {
                return Ok(());
            }
            if g.pin.is_some() {
                return Err(HsmError::PinMismatch { label: self.label.clone() });
            }
        }
        let budget = g.budget();
        if budget < 1.0 {
            let wait = FAILED_LOGIN_INTERVAL.mul_f64(1.0 - budget);
            return Err(HsmError::LoginRateLimited { label: self.label.clone(), retry_in: wait.as_secs().max(1) });
        }
        self.sync_epoch(&mut g);
        let slot = self.slot(&mut g)?;
        let session = self.module.ctx.open_ro_session(slot).map_err(|e| HsmError::call("C_OpenSession", e))?;
        self.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
        let logged_in = matches!(
            session.get_session_info().map(|i| i.session_state()),
            Ok(SessionState::RoUser | SessionState::RwUser)
        );
        if logged_in {
            // Another PIN logged this process in. Login state is per token, so the only way to
            // prove this PIN is to log out and in again; sessions in use re-login on their own.
            let _ = session.logout();
        }
        let new_pin = AuthPin::new(pin.as_str().into());
        self.stats.login_attempts.fetch_add(1, Ordering::Relaxed);
        match session.login(UserType::User, Some(&new_pin)) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                g.pin = Some(new_pin);
                g.pin_fp = Some(fp);
                // Keep the session: closing the last session of a token logs the process out.
                if g.open < self.max_sessions {
                    g.open += 1;
                    g.idle.push(session);
                    self.freed.notify_one();
                }
                Ok(())
            }
            Err(e) => {
                let err = self.pin_error(&mut g, fp, e);
                if let Some(old) = &g.pin {
                    // Restore the login other issuers rely on.
                    self.stats.login_attempts.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = session.login(UserType::User, Some(old))
                        && Fault::of(&e) == Fault::Pin
                    {
                        g.pin = None;
                        g.pin_fp = None;
                    }
                }
                Err(err)
            }
        }
    }

    fn pin_error(&self, g: &mut Inner, fp: PinFingerprint, e: Error) -> HsmError {
        match e {
            Error::Pkcs11(RvError::PinLocked, _) => {
                g.bad_pins.insert(fp);
                g.spend_failed_login();
                HsmError::PinLocked { label: self.label.clone() }
            }
            e if Fault::of(&e) == Fault::Pin => {
                g.bad_pins.insert(fp);
                g.spend_failed_login();
                tracing::warn!(token = %self.label, "the token refused the user PIN; it will not be sent again");
                HsmError::WrongPin { label: self.label.clone(), remembered: false }
            }
            e => HsmError::call("C_Login", e),
        }
    }

    fn slot(&self, g: &mut Inner) -> Result<Slot, HsmError> {
        if let Some(s) = g.slot {
            return Ok(s);
        }
        let sel = TokenSelector { label: None, serial: Some(self.serial.clone()) };
        let slot = match find_slot(&self.module, &sel) {
            Ok((slot, _, _)) => slot,
            Err(HsmError::TokenNotFound { .. }) => return Err(self.absent()),
            Err(e) => return Err(e),
        };
        g.slot = Some(slot);
        Ok(slot)
    }

    /// Logs the process in again with the known-good PIN (after a logout or a token return).
    fn relogin(&self, session: &Session) -> Result<(), HsmError> {
        let mut g = lock(&self.inner);
        let Some(pin) = &g.pin else {
            return Err(HsmError::WrongPin { label: self.label.clone(), remembered: true });
        };
        self.stats.login_attempts.fetch_add(1, Ordering::Relaxed);
        match session.login(UserType::User, Some(pin)) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(e) if Fault::of(&e) == Fault::Pin => {
                // The token's PIN changed under us: forget it, never retry it.
                let fp = g.pin_fp.take().unwrap_or_default();
                g.pin = None;
                Err(self.pin_error(&mut g, fp, e))
            }
            Err(e) => Err(HsmError::call("C_Login", e)),
        }
    }

    /// Forgets the slot and every idle session: the next lease reopens from scratch.
    fn reset(&self) {
        let mut g = lock(&self.inner);
        self.sync_epoch(&mut g);
        g.generation += 1;
        g.slot = None;
        let dropped = g.idle.len();
        g.idle.clear();
        g.open -= dropped;
        self.stats.resets.fetch_add(1, Ordering::Relaxed);
        self.freed.notify_all();
        tracing::info!(token = %self.label, "token reset: sessions will be reopened");
    }

    /// A session (the caller holds [`Module::in_use`] until the lease is dropped).
    fn lease(&self) -> Result<Lease<'_>, HsmError> {
        let mut g = lock(&self.inner);
        self.sync_epoch(&mut g);
        loop {
            if let Some(session) = g.idle.pop() {
                return Ok(Lease { token: self, session: Some(session), generation: g.generation });
            }
            if g.open < self.max_sessions {
                let slot = self.slot(&mut g)?;
                let generation = g.generation;
                g.open += 1;
                drop(g);
                return match self.open_session(slot) {
                    Ok(session) => Ok(Lease { token: self, session: Some(session), generation }),
                    Err(e) => {
                        let mut g = lock(&self.inner);
                        g.open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            g = self.freed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn open_session(&self, slot: Slot) -> Result<Session, HsmError> {
        let session = self.module.ctx.open_ro_session(slot).map_err(|e| HsmError::call("C_OpenSession", e))?;
        self.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
        let state = session.get_session_info().map_err(|e| HsmError::call("C_GetSessionInfo", e))?.session_state();
        if !matches!(state, SessionState::RoUser | SessionState::RwUser) {
            self.relogin(&session)?;
        }
        Ok(session)
    }

    fn give_back(&self, session: Session, generation: u64, healthy: bool) {
        let mut g = lock(&self.inner);
        if healthy && generation == g.generation {
            g.idle.push(session);
        } else {
            g.open -= 1;
            drop(g);
            drop(session);
        }
        self.freed.notify_one();
    }

    /// Runs `f` on a pooled, logged-in session. Lost sessions, logouts, stale handles, a token that
    /// went away and came back, and a module finalized under us are recovered by reopening and
    /// retrying (a bounded number of times); other errors are returned as they are. A token missing
    /// from the slot list costs one module re-initialization per call, then it is reported absent.
    pub fn run<T>(&self, mut f: impl FnMut(&Session) -> Result<T, HsmError>) -> Result<T, HsmError> {
        const ATTEMPTS: usize = 6;
        let mut last = None;
        let mut reinitialized = false;
        for _ in 0..ATTEMPTS {
            let in_use = self.module.in_use();
            let epoch = self.module.epoch();
            let mut lease = match self.lease() {
                Ok(l) => l,
                Err(e) if matches!(e.fault(), Fault::Session | Fault::Token | Fault::Module) => {
                    self.reset();
                    // Not in the slot list, or the module finalized under us: only a
                    // re-initialization helps, once per call.
                    if matches!(e, HsmError::TokenAbsent { .. }) || e.fault() == Fault::Module {
                        drop(in_use);
                        if std::mem::replace(&mut reinitialized, true) {
                            return Err(e);
                        }
                        self.module.reinitialize(epoch).map_err(|e| HsmError::call("C_Initialize", e))?;
                    }
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let session = lease.session.as_ref().expect("a lease holds its session until dropped");
            let err = match f(session) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match err.fault() {
                Fault::Session => {
                    // Sessions rarely die alone (C_CloseAllSessions, a token reset): drop the idle
                    // ones too rather than trying each of them.
                    lease.discard();
                    drop(lease);
                    self.reset();
                }
                Fault::LoggedOut => {
                    if let Err(e) = self.relogin(session) {
                        lease.discard();
                        if e.fault() != Fault::Session {
                            return Err(e);
                        }
                    }
                }
                Fault::Object => {}
                Fault::Token | Fault::Module => {
                    lease.discard();
                    drop(lease);
                    self.reset();
                    if err.fault() == Fault::Module {
                        drop(in_use);
                        if std::mem::replace(&mut reinitialized, true) {
                            return Err(err);
                        }
                        self.module.reinitialize(epoch).map_err(|e| HsmError::call("C_Initialize", e))?;
                    }
                }
                Fault::Pin | Fault::Other => return Err(err),
            }
            tracing::debug!(token = %self.label, error = %err, "recovering from a PKCS#11 fault");
            last = Some(err);
        }
        Err(last.expect("at least one attempt ran"))
    }
}

/// A session borrowed from the pool; returned (or closed, if broken or stale) on drop.
struct Lease<'a> {
    token: &'a Token,
    session: Option<Session>,
    generation: u64,
}

impl Lease<'_> {
    /// Marks the session broken: it is closed instead of returned.
    fn discard(&mut self) {
        if let Some(s) = self.session.take() {
            self.token.give_back(s, self.generation, false);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.token.give_back(s, self.generation, true);
        }
    }
}
