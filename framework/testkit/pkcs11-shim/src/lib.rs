//! A test-only PKCS#11 module: forwards to a real module (SoftHSM2 by default) and, as a control
//! file says, makes chosen calls hang, fail with a chosen `CKR_*`, or lose their login first. See
//! the README for the environment and the control file's format.
//!
//! Only `C_GetFunctionList` is exported (no PKCS#11 3.0 `C_GetInterface`), so callers use the 2.40
//! function list, which is the real module's list with the intercepted entries replaced.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cryptoki_sys::*;

/// The real module's path.
pub const TARGET_ENV: &str = "CERTBRIDGE_PKCS11_SHIM_TARGET";
/// The control file's path.
pub const CONTROL_ENV: &str = "CERTBRIDGE_PKCS11_SHIM_CONTROL";
/// An optional call log.
pub const LOG_ENV: &str = "CERTBRIDGE_PKCS11_SHIM_LOG";
const DEFAULT_TARGET: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// How often a hanging call looks whether it may go on.
const HANG_POLL: Duration = Duration::from_millis(20);

/// What the control file asks of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Pass,
    Hang,
    Fail(CK_RV),
    Logout,
}

/// Return values by name, for the control file (the ones fault tests use).
const NAMED: &[(&str, CK_RV)] = &[
    ("CKR_OK", CKR_OK),
    ("CKR_GENERAL_ERROR", CKR_GENERAL_ERROR),
    ("CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED),
    ("CKR_DEVICE_ERROR", CKR_DEVICE_ERROR),
    ("CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY),
    ("CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED),
    ("CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT),
    ("CKR_SESSION_CLOSED", CKR_SESSION_CLOSED),
    ("CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID),
    ("CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN),
    ("CKR_PIN_INCORRECT", CKR_PIN_INCORRECT),
    ("CKR_PIN_LOCKED", CKR_PIN_LOCKED),
    ("CKR_PIN_EXPIRED", CKR_PIN_EXPIRED),
    ("CKR_CRYPTOKI_NOT_INITIALIZED", CKR_CRYPTOKI_NOT_INITIALIZED),
];

fn parse_rv(s: &str) -> Option<CK_RV> {
    if let Some((_, rv)) = NAMED.iter().find(|(n, _)| *n == s) {
        return Some(*rv);
    }
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => CK_RV::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The action `text` (a control file) sets for `function`, with the rule's line and how many
/// times it may fire (`None`: while it is there). The first line naming the function wins.
fn rule_in(text: &str, function: &str) -> (Action, String, Option<u32>) {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words.next() != Some(function) {
            continue;
        }
        let (action, times) = match (words.next(), words.next(), words.next()) {
            (Some("hang"), _, _) => (Action::Hang, None),
            (Some("logout"), n, _) => (Action::Logout, n.and_then(|n| n.parse().ok())),
            (Some("fail"), Some(rv), n) => {
                (parse_rv(rv).map_or(Action::Pass, Action::Fail), n.and_then(|n| n.parse().ok()))
            }
            _ => (Action::Pass, None),
        };
        return (action, line.to_owned(), times);
    }
    (Action::Pass, String::new(), None)
}

/// The action `text` sets for `function`, ignoring counts.
#[cfg(test)]
fn action_in(text: &str, function: &str) -> Action {
    rule_in(text, function).0
}

/// Whether a rule limited to `times` may fire once more (counted per rule line, so writing the
/// same line again after removing it does not reset it; write a different count instead).
fn may_fire(line: &str, times: Option<u32>) -> bool {
    let Some(times) = times else { return true };
    static FIRED: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    let mut fired = FIRED.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    let n = fired.entry(line.to_owned()).or_insert(0);
    if *n >= times {
        return false;
    }
    *n += 1;
    true
}

fn control_path() -> Option<PathBuf> {
    std::env::var_os(CONTROL_ENV).map(PathBuf::from)
}

/// What to do for `function` now; blocks while the control file says `hang`.
fn before(function: &str) -> Action {
    let Some(path) = control_path() else { return Action::Pass };
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        match rule_in(&text, function) {
            (Action::Hang, _, _) => std::thread::sleep(HANG_POLL),
            (Action::Pass, _, _) => return Action::Pass,
            (other, line, times) => return if may_fire(&line, times) { other } else { Action::Pass },
        }
    }
}

fn log(function: &str, rv: CK_RV) {
    let Some(path) = std::env::var_os(LOG_ENV) else { return };
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        // One write per line: appends of a short line are not interleaved.
        let _ = f.write_all(format!("{function} {rv:#x}\n").as_bytes());
    }
}

/// The real module, loaded once, and its function list.
struct Target {
    _lib: libloading::Library,
    list: CK_FUNCTION_LIST,
}

fn target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let path = std::env::var_os(TARGET_ENV).unwrap_or_else(|| DEFAULT_TARGET.into());
            // SAFETY: loading a PKCS#11 module runs its initializers; that is what any PKCS#11
            // application does with the module it is configured with.
            let lib = unsafe { libloading::Library::new(&path) }.ok()?;
            // SAFETY: C_GetFunctionList has this signature in every PKCS#11 module.
            let get: libloading::Symbol<'_, unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV> =
                unsafe { lib.get(b"C_GetFunctionList\0") }.ok()?;
            let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
            // SAFETY: the module writes a pointer to its static function list.
            if unsafe { get(&mut list) } != CKR_OK || list.is_null() {
                return None;
            }
            // SAFETY: non-null, points at the module's list, which lives as long as the library.
            let list = unsafe { *list };
            Some(Target { _lib: lib, list })
        })
        .as_ref()
}

/// Defines an intercepting wrapper for `$field`: consult the control file, maybe fail, maybe log
/// the session out first (`$session`: the session handle argument, for calls that take one),
/// then forward to the real module.
macro_rules! intercept {
    ($field:ident, ($($arg:ident: $ty:ty),*), $session:expr) => {
        #[allow(non_snake_case, clippy::too_many_arguments)]
        unsafe extern "C" fn $field($($arg: $ty),*) -> CK_RV {
            let Some(t) = target() else { return CKR_GENERAL_ERROR };
            let Some(real) = t.list.$field else { return CKR_FUNCTION_NOT_SUPPORTED };
            match before(stringify!($field)) {
                Action::Fail(rv) => {
                    log(stringify!($field), rv);
                    return rv;
                }
                Action::Logout => {
                    let session: Option<CK_SESSION_HANDLE> = $session;
                    if let (Some(s), Some(logout)) = (session, t.list.C_Logout) {
                        // SAFETY: forwarding a handle the caller gave us to the module that made it.
                        unsafe { logout(s) };
                    }
                }
                Action::Pass | Action::Hang => {}
            }
            // SAFETY: the caller's arguments, unchanged, to the function the real module exports.
            let rv = unsafe { real($($arg),*) };
            log(stringify!($field), rv);
            rv
        }
    };
}

intercept!(C_GetSlotList, (present: CK_BBOOL, slots: *mut CK_SLOT_ID, count: *mut CK_ULONG), None);
intercept!(C_GetTokenInfo, (slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO), None);
intercept!(
    C_OpenSession,
    (slot: CK_SLOT_ID, flags: CK_FLAGS, app: *mut std::os::raw::c_void, notify: CK_NOTIFY, out: *mut CK_SESSION_HANDLE),
    None
);
intercept!(C_GetSessionInfo, (session: CK_SESSION_HANDLE, info: *mut CK_SESSION_INFO), Some(session));
intercept!(
    C_Login,
    (session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: *mut CK_UTF8CHAR, len: CK_ULONG),
    Some(session)
);
intercept!(C_Logout, (session: CK_SESSION_HANDLE), None);
intercept!(
    C_FindObjectsInit,
    (session: CK_SESSION_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG),
    Some(session)
);
intercept!(
    C_SignInit,
    (session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE),
    Some(session)
);
intercept!(
    C_Sign,
    (session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, sig: *mut CK_BYTE, sig_len: *mut CK_ULONG),
    Some(session)
);

/// The function list handed out: the real module's, with the intercepted entries replaced.
struct List(CK_FUNCTION_LIST);

// SAFETY: a table of function pointers and a version, written once and only read afterwards.
unsafe impl Sync for List {}
unsafe impl Send for List {}

fn list() -> Option<&'static List> {
    static LIST: OnceLock<Option<List>> = OnceLock::new();
    LIST.get_or_init(|| {
        let mut list = target()?.list;
        list.C_GetFunctionList = Some(C_GetFunctionList);
        list.C_GetSlotList = Some(C_GetSlotList);
        list.C_GetTokenInfo = Some(C_GetTokenInfo);
        list.C_OpenSession = Some(C_OpenSession);
        list.C_GetSessionInfo = Some(C_GetSessionInfo);
        list.C_Login = Some(C_Login);
        list.C_Logout = Some(C_Logout);
        list.C_FindObjectsInit = Some(C_FindObjectsInit);
        list.C_SignInit = Some(C_SignInit);
        list.C_Sign = Some(C_Sign);
        Some(List(list))
    })
    .as_ref()
}

/// The module's entry point.
///
/// # Safety
/// `out` must be a valid pointer to write the function list pointer to (PKCS#11's contract).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(out: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    if out.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    let Some(list) = list() else { return CKR_GENERAL_ERROR };
    // SAFETY: `out` is valid per the contract; callers only read through the pointer (the
    // PKCS#11 list is `CK_FUNCTION_LIST_PTR` for historical reasons, never written).
    unsafe { *out = &list.0 as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST };
    CKR_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines_select_an_action_per_function() {
        let text = "# faults\nC_Sign hang\nC_Login fail CKR_PIN_LOCKED  # locked\nC_SignInit fail 0x30\nC_FindObjectsInit logout\nC_Logout fail nonsense\n";
        assert_eq!(action_in(text, "C_Sign"), Action::Hang);
        assert_eq!(action_in(text, "C_Login"), Action::Fail(CKR_PIN_LOCKED));
        assert_eq!(action_in(text, "C_SignInit"), Action::Fail(CKR_DEVICE_ERROR));
        assert_eq!(action_in(text, "C_FindObjectsInit"), Action::Logout);
        assert_eq!(action_in(text, "C_Logout"), Action::Pass, "an unknown CKR name does nothing");
        assert_eq!(action_in(text, "C_OpenSession"), Action::Pass);
        assert_eq!(action_in("C_SignX hang", "C_Sign"), Action::Pass, "whole words only");
        assert_eq!(parse_rv("48"), Some(CKR_DEVICE_ERROR));
    }

    #[test]
    fn counted_rules_fire_that_many_times() {
        let (action, line, times) = rule_in("C_Sign fail CKR_DEVICE_ERROR 2\n", "C_Sign");
        assert_eq!((action, times), (Action::Fail(CKR_DEVICE_ERROR), Some(2)));
        assert!(may_fire(&line, times) && may_fire(&line, times));
        assert!(!may_fire(&line, times), "a third time");
        assert_eq!(rule_in("C_Sign logout 1", "C_Sign").2, Some(1));
        assert!(may_fire("C_Sign hang", None));
    }
}
