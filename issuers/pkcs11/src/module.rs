//! PKCS#11 modules: which ones the controller may load, and one initialized context per module for
//! the whole process (`C_Initialize` may run only once per process and library).
//!
//! The allow-list is the controller's, not the issuer's: a namespaced user writing an issuer must not
//! be able to make the controller `dlopen` an arbitrary shared library. The list comes from the
//! controller's `--allowed-module` flags or [`ALLOWED_MODULES_ENV`] (see [`crate::flags`]), default
//! [`DEFAULT_MODULE`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};

/// The environment variable holding the allow-list.
pub const ALLOWED_MODULES_ENV: &str = "CERTBRIDGE_PKCS11_ALLOWED_MODULES";
/// The module allowed when the variable is unset: Debian's SoftHSM2.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The modules this controller may load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedModules(Vec<PathBuf>);

impl AllowedModules {
    /// An explicit list.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<Path>>(paths: I) -> AllowedModules {
        AllowedModules(paths.into_iter().map(|p| p.as_ref().to_path_buf()).collect())
    }

    /// The path to load for `requested`, if it is on the list. Both sides are compared after
    /// resolving symlinks and `..`, so `/usr/lib/softhsm/../../tmp/x.so` cannot sneak in, and the
    /// resolved path is what gets loaded (a symlink swapped later does not change what was allowed).
    pub fn resolve(&self, requested: &str) -> Result<PathBuf, String> {
        let deny = || {
            format!(
                "PKCS#11 module {requested:?} is not allowed by this controller (allowed: {}): use an allowed module or add it to the controller's --allowed-module flags ({ALLOWED_MODULES_ENV})",
                self.0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )
        };
        let req = Path::new(requested);
        if !req.is_absolute() {
            return Err(deny());
        }
        let listed = self.0.iter().any(|a| a == req);
        let canonical = std::fs::canonicalize(req);
        let matches_canonical =
            canonical.as_ref().is_ok_and(|c| self.0.iter().any(|a| std::fs::canonicalize(a).is_ok_and(|ac| ac == *c)));
        if !listed && !matches_canonical {
            return Err(deny());
        }
        canonical.map_err(|e| {
            format!("PKCS#11 module {requested:?} is allowed but cannot be found ({e}): install it on the controller")
        })
    }
}

/// A loaded, initialized module.
#[derive(Debug)]
pub struct Module {
    /// The canonical path it was loaded from.
    pub path: PathBuf,
    /// The process-wide context.
    pub ctx: Pkcs11,
    /// Shared by every use of the module's handles, exclusive for re-initialization: `C_Finalize`
    /// while another thread is inside the module is undefined behaviour (SoftHSM frees its state).
    in_use: RwLock<()>,
    /// Bumped by every re-initialization. Session and object handles from an older epoch are dead,
    /// and their numbers are handed out again (SoftHSM restarts both counters), so they must be
    /// forgotten, never closed or used.
    epoch: AtomicU64,
}

impl Module {
    /// Held while using the module's sessions or objects; re-initialization waits for it.
    pub(crate) fn in_use(&self) -> RwLockReadGuard<'_, ()> {
        self.in_use.read().unwrap_or_else(|p| p.into_inner())
    }

    /// How many times the module was re-initialized in this process.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// `C_Finalize` + `C_Initialize`, unless someone re-initialized since `seen` (an epoch read
    /// while the fault was observed), so that threads hitting the same fault re-initialize once.
    ///
    /// Some modules only see a token that returned (or appeared) after a re-initialization:
    /// SoftHSM 2.6 latches a token whose files vanished as invalid and reads the token directory
    /// only in `C_Initialize`. Every session of every token of the module closes and the login is
    /// lost, so this is the last step of recovery, taken on the error path only. The caller must
    /// not hold [`Module::in_use`].
    pub(crate) fn reinitialize(&self, seen: u64) -> Result<(), Error> {
        let _exclusive = self.in_use.write().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        match self.ctx.clone().finalize() {
            Ok(()) | Err(Error::Pkcs11(RvError::CryptokiNotInitialized, _)) => {}
            Err(e) => return Err(e),
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        tracing::info!(module = %self.path.display(), "PKCS#11 module re-initialized");
        initialize(&self.ctx)
    }
}

/// How long one piece of HSM work (a signature, preparing an issuer) may take by default before
/// the issuer is reported not ready (`--call-timeout`).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why [`with_deadline`] returned without a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadlineError {
    /// The work did not finish in time: the module hangs (or is far too slow).
    TimedOut(Duration),
    /// The blocking thread panicked or was cancelled.
    Failed(String),
}

/// Runs blocking PKCS#11 work on tokio's blocking pool and waits for it at most `timeout`, so that
/// a module that never returns costs a bounded wait, never a stuck reconcile.
///
/// A thread blocked inside a C call cannot be cancelled: on timeout it is left to finish on its
/// own, keeping its session leased (and the module's shared lock) until the module answers. Later
/// calls that need a session wait for one under their own deadline, so a hung module shows as
/// timeouts, not as a growing pile of stuck reconciles.
pub async fn with_deadline<T: Send + 'static>(
    timeout: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DeadlineError> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(DeadlineError::Failed(e.to_string())),
        Err(_) => Err(DeadlineError::TimedOut(timeout)),
    }
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<Module>>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    MODULES.get_or_init(Default::default)
}

/// The process-wide module at `path` (an allowed path), loading and initializing it on
/// first use.
pub fn load(path: &Path) -> Result<Arc<Module>, Error> {
    // One entry per library file, whatever path (symlink) named it.
    let canonical = std::fs::canonicalize(path);
    let path = canonical.as_deref().unwrap_or(path);
    let mut modules = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let ctx = Pkcs11::new(path)?;
    initialize(&ctx)?;
    let m = Arc::new(Module { path: path.to_path_buf(), ctx, in_use: RwLock::new(()), epoch: AtomicU64::new(0) });
    modules.insert(path.to_path_buf(), m.clone());
    Ok(m)
}

/// `C_Initialize` with OS locking; "already initialized" (another context in this process, or a
/// re-initialization after a finalize) counts as success.
pub fn initialize(ctx: &Pkcs11) -> Result<(), Error> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_past_the_deadline_is_abandoned_not_awaited() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let slow = with_deadline(Duration::from_millis(50), move || wait.recv().is_ok());
        assert_eq!(slow.await, Err(DeadlineError::TimedOut(Duration::from_millis(50))));
        // The abandoned thread finishes when the module answers.
        let _ = release.send(());
        assert_eq!(with_deadline(Duration::from_secs(60), || 7).await, Ok(7));
    }

    #[test]
    fn only_listed_modules_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.so");
        std::fs::write(&real, b"").unwrap();
        let link = dir.path().join("link.so");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let evil = dir.path().join("evil.so");
        std::fs::write(&evil, b"").unwrap();
        let allowed = AllowedModules::new([&link]);
        assert_eq!(allowed.resolve(link.to_str().unwrap()).unwrap(), real.canonicalize().unwrap());
        // The target of an allowed symlink is the same library.
        assert!(allowed.resolve(real.to_str().unwrap()).is_ok());
        let e = allowed.resolve(evil.to_str().unwrap()).unwrap_err();
        assert!(e.contains("not allowed") && e.contains(ALLOWED_MODULES_ENV), "{e}");
        let sneaky =
            format!("{}/../{}/evil.so", dir.path().display(), dir.path().file_name().unwrap().to_str().unwrap());
        assert!(allowed.resolve(&sneaky).is_err());
        assert!(allowed.resolve("relative.so").is_err());
        let missing = AllowedModules::new(["/nonexistent/lib.so"]);
        assert!(missing.resolve("/nonexistent/lib.so").unwrap_err().contains("cannot be found"));
    }
}
