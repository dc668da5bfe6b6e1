//! What can go wrong talking to an HSM, and how each fault maps onto certbridge's error taxonomy.

use certbridge::SignError;
use cryptoki::error::{Error, RvError};

/// A PKCS#11 failure, described without secrets.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The module could not be loaded or initialized.
    #[error("PKCS#11 module {path} cannot be used: {source}")]
    Module {
        /// Module path.
        path: String,
        /// Why.
        source: Error,
    },
    /// No token matches the selector.
    #[error(
        "no token matches {selector} in module {module} (tokens present: {present}): fix spec.token or initialize the token"
    )]
    TokenNotFound {
        /// The selector, e.g. `label "ca"`.
        selector: String,
        /// Module path.
        module: String,
        /// Labels of the tokens that are present.
        present: String,
    },
    /// Several tokens match.
    #[error("{count} tokens match {selector}: select one with spec.token.serial")]
    TokenAmbiguous {
        /// The selector.
        selector: String,
        /// How many matched.
        count: usize,
    },
    /// The token was there and is gone (removed, device error).
    #[error("token {label:?} (serial {serial}) is not present: reconnect it; signing resumes when it returns")]
    TokenAbsent {
        /// Label.
        label: String,
        /// Serial.
        serial: String,
    },
    /// The PIN was refused by the token.
    #[error(
        "the user PIN in spec.pinSecretRef is incorrect for token {label:?}{}: put the right PIN in the Secret (it is not retried until it changes, so the token is not locked out)",
        if *.remembered { " (refused before, not sent again)" } else { "" }
    )]
    WrongPin {
        /// Token label.
        label: String,
        /// Whether this PIN was refused earlier and so was not sent to the token again.
        remembered: bool,
    },
    /// Another PIN is proven on this token: this one was compared with it, not sent.
    #[error(
        "the user PIN in spec.pinSecretRef is not the PIN token {label:?} is logged in with; it was not sent to the token (the token is shared: a wrong PIN would cost a login attempt and log the other issuers out). Put the token's PIN in the Secret; if the token's PIN was changed, restart the controller"
    )]
    PinMismatch {
        /// Token label.
        label: String,
    },
    /// Too many failed logins on this token recently: the PIN was not tried.
    #[error(
        "the PIN in spec.pinSecretRef was not tried: token {label:?} refused PINs recently and certbridge allows one failed login per token per minute (so tenants cannot lock it); retrying in about {retry_in}s"
    )]
    LoginRateLimited {
        /// Token label.
        label: String,
        /// Seconds until a login may be tried.
        retry_in: u64,
    },
    /// The token locked the PIN.
    #[error("the user PIN of token {label:?} is locked: unlock it with the SO PIN, then update spec.pinSecretRef")]
    PinLocked {
        /// Token label.
        label: String,
    },
    /// No private key matches spec.key.
    #[error("no private key matches {selector} on token {token:?}: fix spec.key or create the key in the token")]
    KeyNotFound {
        /// The selector, e.g. `label "ca-p256"`.
        selector: String,
        /// Token label.
        token: String,
    },
    /// Several private keys match spec.key.
    #[error("{count} private keys match {selector} on token {token:?}: set both spec.key.label and spec.key.id")]
    KeyAmbiguous {
        /// The selector.
        selector: String,
        /// Token label.
        token: String,
        /// How many matched.
        count: usize,
    },
    /// The private key is not the kind of key the CA certificate holds.
    #[error(
        "the private key ({selector}) is a {found} key but the CA certificate in spec.caChain holds a {expected} key: point spec.key at the CA's key"
    )]
    KeyTypeMismatch {
        /// The selector.
        selector: String,
        /// The key's CKA_KEY_TYPE.
        found: String,
        /// What the certificate needs.
        expected: String,
    },
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {op} failed: {rv}")]
    Call {
        /// The operation, e.g. `C_Sign`.
        op: &'static str,
        /// The PKCS#11 return value (short name, no secret).
        rv: String,
        /// The classification used for retries.
        fault: Fault,
    },
}

/// How a failed PKCS#11 call can be recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The session is gone: drop it, use another.
    Session,
    /// The application is no longer logged in: log in again.
    LoggedOut,
    /// A cached object handle is stale: look the object up again.
    Object,
    /// The token went away or the slot changed: reopen everything.
    Token,
    /// The module was finalized under us: initialize it again.
    Module,
    /// The PIN is wrong, expired or locked: never retry with the same PIN.
    Pin,
    /// Anything else: not recoverable by reopening.
    Other,
}

impl Fault {
    /// Classifies a cryptoki error.
    pub fn of(e: &Error) -> Fault {
        let Error::Pkcs11(rv, _) = e else { return Fault::Other };
        match rv {
            RvError::SessionHandleInvalid | RvError::SessionClosed => Fault::Session,
            RvError::UserNotLoggedIn => Fault::LoggedOut,
            RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid => Fault::Object,
            RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::SlotIdInvalid => Fault::Token,
            RvError::CryptokiNotInitialized => Fault::Module,
            RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinExpired
            | RvError::PinLocked => Fault::Pin,
            _ => Fault::Other,
        }
    }
}

impl HsmError {
    /// A failed call to `op`.
    pub fn call(op: &'static str, e: Error) -> HsmError {
        let fault = Fault::of(&e);
        let rv = match &e {
            Error::Pkcs11(rv, _) => format!("{rv:?}"),
            other => other.to_string(),
        };
        HsmError::Call { op, rv, fault }
    }

    /// The fault class (Other for errors that are not PKCS#11 return values).
    pub fn fault(&self) -> Fault {
        match self {
            HsmError::Call { fault, .. } => *fault,
            HsmError::TokenAbsent { .. } => Fault::Token,
            _ => Fault::Other,
        }
    }

    /// The reaction when proving the issuer (`check`): ambiguous selectors are permanent (the spec
    /// must change); the rest may heal or is fixed in a referenced object (the PIN Secret, the
    /// chain) and is not ready. Retrying is safe for the PIN: a refused PIN is remembered by value
    /// and never sent again, so only a *changed* Secret reaches the token (once).
    pub fn for_check(self) -> SignError {
        match &self {
            HsmError::TokenAmbiguous { .. } | HsmError::KeyAmbiguous { .. } => SignError::permanent(self.to_string()),
            _ => SignError::issuer_not_ready(self.to_string()),
        }
    }

    /// The reaction while signing a request: issuer-level problems make the issuer not ready (its
    /// check then decides); a failed signature operation is retried with backoff.
    pub fn for_sign(self) -> SignError {
        match &self {
            HsmError::Call { fault: Fault::Other, .. } | HsmError::TokenAbsent { .. } => {
                SignError::transient(self.to_string())
            }
            _ => SignError::issuer_not_ready(self.to_string()),
        }
    }
}
