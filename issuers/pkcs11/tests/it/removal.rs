//! A token that goes away and comes back while the process keeps running: signing and the issuer
//! check fail with a retryable error naming the absent token (never permanent, never the PIN), and
//! work again once it is back, logged in again automatically, without a restart. A token replaced by
//! a new one under the same label is not mistaken for it.
//!
//! How SoftHSM 2.6.1 behaves (found by experiment; see the README): when a token's directory
//! vanishes, its slot stays listed and logged in, C_GetTokenInfo answers CKR_GENERAL_ERROR,
//! C_FindObjects finds nothing and cached key handles are invalid. The token stays broken after its
//! files return, until the module is re-initialized (C_Finalize + C_Initialize), which is what the
//! pool does on that error path, and which closes every session of every token of the module.
//!
//! So these tests load their own copy of `libsofthsm2.so`: a second, independent SoftHSM instance
//! in this process (same code, same token directory), whose re-initializations do not disturb the
//! other tests, which share the first instance. The two instances must log in to different tokens:
//! SoftHSM rewrites `token.object` on every C_Login, and its fcntl file locks do not exclude each
//! other within one process, so the other instance could read a half-written file and lose the token.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use certbridge::{Issuer, Reaction, Resources, SignContext, SignError, Signer};
use certbridge_pkcs11::Pkcs11Signer;
use certbridge_pkcs11::module::{AllowedModules, DEFAULT_MODULE, Module, load};
use certbridge_pkcs11::spec::Pkcs11IssuerSpec;
use certbridge_pkcs11::token::{Token, TokenSelector};

use crate::fixture::*;

/// This test's own SoftHSM instance: a copy of the module file (`dlopen` of another file gives
/// another instance with its own state).
fn own_module() -> &'static Path {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let copy = hsm().dir.join("libsofthsm2-own-instance.so");
        std::fs::copy(DEFAULT_MODULE, &copy)
            .unwrap_or_else(|e| panic!("cannot copy {DEFAULT_MODULE} ({e}): run softhsm/setup-token.sh to install it"));
        copy
    })
}

/// An issuer of `token` through the module at `module`, and what it needs.
struct Ca {
    issuer: Issuer<Pkcs11IssuerSpec>,
    resources: Resources,
    ca_pem: String,
}

impl Ca {
    fn new(token: &str, pin: &str, module: &Path) -> Ca {
        let mut s = spec(token, "p256");
        s.module = module.display().to_string();
        let ca_pem = hsm().ca_pem(token, "p256");
        Ca { issuer: issuer(&format!("{token}-own"), s), resources: resources(pin, &ca_pem), ca_pem }
    }

    /// Signs a fresh request; the certificate must verify with openssl against this CA.
    async fn sign(&self, signer: &Pkcs11Signer) -> Result<(), SignError> {
        let csr = openssl_csr("ec:P-256", "/CN=back.example.com", "DNS:back.example.com");
        let mut ctx = SignContext::offline(self.resources.clone());
        let issued = signer.sign(&request(&csr, 1, false, &[]), &self.issuer, &mut ctx).await?;
        openssl_verify(&self.ca_pem, &issued).unwrap_or_else(|e| panic!("openssl rejects the certificate: {e}"));
        Ok(())
    }

    async fn check(&self, signer: &Pkcs11Signer) -> Result<certbridge::Ready, SignError> {
        signer.check(&self.issuer, &self.resources).await
    }
}

/// The error says the token is absent and will be used again, is retryable, and holds no PIN.
fn assert_absent(e: &SignError, when: &str) {
    let retryable = matches!(e.reaction, Reaction::Transient | Reaction::IssuerNotReady);
    assert!(retryable, "{when}: a missing token must be retried, not fail for good: {e:?}");
    let m = e.to_string();
    assert!(m.contains(&format!("token \"{GONE}\"")) && m.contains("is not present"), "{when}: {m}");
    assert!(m.contains("signing resumes when it returns"), "{when}: {m}");
    assert!(!m.contains(GONE_PIN), "{when}: no PIN in the message: {m}");
}

/// The directory holding `label`'s files. SoftHSM names it after a UUID whose last 16 hex digits
/// are the token's serial number.
fn token_dir(module: &Module, label: &str) -> PathBuf {
    let serial = module
        .ctx
        .get_slots_with_token()
        .expect("C_GetSlotList")
        .into_iter()
        .filter_map(|s| module.ctx.get_token_info(s).ok())
        .find(|i| i.label().trim_end() == label)
        .map(|i| i.serial_number().trim_end().to_owned())
        .expect("the token is present");
    let tokens = hsm().dir.join("tokens");
    let mut dirs = std::fs::read_dir(&tokens)
        .expect("tokens directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().replace('-', "").ends_with(&serial)));
    let dir = dirs.next().unwrap_or_else(|| panic!("no directory for serial {serial} in {}", tokens.display()));
    assert!(dirs.next().is_none(), "one directory per token");
    dir
}

fn cp(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

#[tokio::test]
async fn a_token_that_goes_away_and_returns_is_used_again_without_restart() {
    let module_path = own_module();
    let signer = Pkcs11Signer::with_config(AllowedModules::new([module_path]), 4)
        .with_token_policy(certbridge_pkcs11::grants::TokenPolicy::unrestricted());
    let gone = Ca::new(GONE, GONE_PIN, module_path);
    // Another token of the same module, used first: SoftHSM numbers sessions and objects from one
    // counter that restarts with each initialization, so once the returning token has reopened, the
    // bystander's old session and key handle numbers name the returning token's session and key.
    // Using them would sign with the wrong key or close the other's session; its certificates must
    // still verify with its own CA, and the returning token's session must survive.
    let bystander = Ca::new(BYSTANDER, PIN, module_path);
    bystander.sign(&signer).await.expect("bystander signs");
    gone.check(&signer).await.expect("check");
    gone.sign(&signer).await.expect("sign");
    let module = load(module_path).expect("own module");
    let tok = Token::find(&module, &TokenSelector { label: Some(GONE.into()), serial: None }, 4).expect("token");
    let dir = token_dir(&module, GONE);
    let logins = || tok.stats().login_attempts.load(Ordering::SeqCst);

    // Unplugged: the token's directory moves away. Signing and checking fail, retryably, and
    // keep failing the same way; each time the module was re-initialized to look for the token.
    let away = hsm().dir.join("gone-token-away");
    std::fs::rename(&dir, &away).expect("move the token away");
    let epoch = module.epoch();
    assert_absent(&gone.sign(&signer).await.unwrap_err(), "sign while away");
    assert!(module.epoch() > epoch, "the module was re-initialized to look for the token");
    let e = gone.check(&signer).await.unwrap_err();
    assert!(e.reaction == Reaction::IssuerNotReady, "check while away: {e:?}");
    assert_absent(&e, "check while away");
    assert_absent(&gone.sign(&signer).await.unwrap_err(), "sign again while away");

    // Plugged back: the next signature works, after one automatic login; so does the check.
    std::fs::rename(&away, &dir).expect("move the token back");
    let before = logins();
    gone.sign(&signer).await.expect("signs again once the token is back");
    assert_eq!(logins(), before + 1, "logged in again, once, by the pool");
    gone.check(&signer).await.expect("check passes again");
    bystander.sign(&signer).await.expect("the bystander's reopened sessions sign with its own key");
    let opened = tok.stats().sessions_opened.load(Ordering::SeqCst);
    gone.sign(&signer).await.expect("sign");
    assert_eq!(tok.stats().sessions_opened.load(Ordering::SeqCst), opened, "the bystander closed no session of ours");
    assert!(tok.open_sessions() <= tok.max_sessions());

    // Deleted and restored from a backup, and this time the check is first to see both.
    let backup = hsm().dir.join("gone-token-backup");
    cp(&dir, &backup);
    std::fs::remove_dir_all(&dir).expect("delete the token");
    let e = gone.check(&signer).await.unwrap_err();
    assert!(e.reaction == Reaction::IssuerNotReady, "check while deleted: {e:?}");
    assert_absent(&e, "check while deleted");
    assert_absent(&gone.sign(&signer).await.unwrap_err(), "sign while deleted");
    cp(&backup, &dir);
    let before = logins();
    gone.check(&signer).await.expect("check passes once the token is restored");
    assert_eq!(logins(), before + 1, "logged in again, once");
    gone.sign(&signer).await.expect("signs after the restore");
    bystander.check(&signer).await.expect("bystander check");
    bystander.sign(&signer).await.expect("bystander sign");
    std::fs::remove_dir_all(&backup).expect("remove the backup");

    // Replaced: deleted and made again by the project's script with the same label and PIN. That
    // is another token (new serial, new key, new CA certificate), not this one returning: signing
    // never uses the new key, and the check says the key no longer matches spec.caChain.
    std::fs::remove_dir_all(&dir).expect("delete the token");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../softhsm/setup-token.sh");
    run(Command::new("bash")
        .arg(script)
        .arg(&hsm().dir)
        .args(["--label", GONE, "--pin", GONE_PIN, "--so-pin", "99999", "--kind", "p256"])
        .env("CERTBRIDGE_PKCS11_TOKEN_BIN", env!("CARGO_BIN_EXE_certbridge-pkcs11-token")));
    assert_absent(&gone.sign(&signer).await.unwrap_err(), "sign after the token was replaced");
    let e = gone.check(&signer).await.unwrap_err();
    // Not ready: updating the chain Secret to the new CA certificate re-checks the issuer.
    assert!(e.reaction == Reaction::IssuerNotReady, "{e:?}");
    assert!(e.to_string().contains("does not match the CA certificate"), "{e}");
    let renewed = Ca::new(GONE, GONE_PIN, module_path);
    assert_ne!(renewed.ca_pem, gone.ca_pem, "the script made a new CA certificate for the new key");
    renewed.check(&signer).await.expect("check with the new CA certificate");
    renewed.sign(&signer).await.expect("sign with the new CA certificate");
}
