//! A private key from PEM in any of the three unencrypted forms in use, as the PKCS#8 that rcgen on
//! ring reads (ring reads nothing else):
//!
//! - PKCS#8, `BEGIN PRIVATE KEY` (`openssl genpkey`, most current tools);
//! - PKCS#1, `BEGIN RSA PRIVATE KEY` (`openssl genrsa -traditional`, older tools, many CA
//!   Secrets made years ago);
//! - SEC1, `BEGIN EC PRIVATE KEY` (`openssl ecparam -genkey`, Go's `x509.MarshalECPrivateKey`,
//!   hence cert-manager's own EC keys). An `EC PARAMETERS` block before it is skipped.
//!
//! Crates: RustCrypto's `pkcs1`, `sec1` and `pkcs8` parse and encode exactly these structures.
//! Turning PKCS#1 or SEC1 into PKCS#8 is wrapping the same DER in a `PrivateKeyInfo` that names
//! the algorithm (and curve) outside it, so no key arithmetic is involved; `rsa` or `p256`/`p384`
//! would add big-number and curve code only to recompute what the file already holds. These
//! three share `der` 0.7 with `x509-cert`, already in the tree. ring then checks the key itself
//! (RSA primes consistent, EC point on the curve) when rcgen loads it.
//!
//! Errors never quote the key or the parser's view of it: they name the form, the algorithm or
//! the problem, and the fix.

use pkcs8::ObjectIdentifier;
use pkcs8::der::Encode;
use pkcs8::der::asn1::AnyRef;
use pkcs8::{AlgorithmIdentifierRef, PrivateKeyInfo};
use zeroize::Zeroizing;

use super::KeyKind;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// ring signs with RSA keys of these sizes only.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// The PEM form a key was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyForm {
    /// `PRIVATE KEY`.
    Pkcs8,
    /// `RSA PRIVATE KEY`.
    Pkcs1,
    /// `EC PRIVATE KEY`.
    Sec1,
}

impl std::fmt::Display for KeyForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyForm::Pkcs8 => "PKCS#8",
            KeyForm::Pkcs1 => "PKCS#1",
            KeyForm::Sec1 => "SEC1",
        })
    }
}

/// Why a PEM private key cannot be used. Messages read after the name of what held the key, e.g.
/// `key "tls.key" <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No `… PRIVATE KEY` block (or not PEM at all).
    #[error(
        "holds no PEM private key{found}: expected \"BEGIN PRIVATE KEY\" (PKCS#8), \"BEGIN RSA PRIVATE KEY\" (PKCS#1) or \"BEGIN EC PRIVATE KEY\" (SEC1)"
    )]
    NotFound {
        /// What was there instead, e.g. ` (found: CERTIFICATE)`, or empty.
        found: String,
    },
    /// More than one private key.
    #[error("holds {0} private keys: keep only the one that belongs to the certificate")]
    Several(usize),
    /// A password-protected key (PKCS#8 `ENCRYPTED PRIVATE KEY` or a legacy `Proc-Type: 4,ENCRYPTED` header).
    #[error(
        "holds an encrypted private key, which cannot be used without its password: store it unencrypted (`openssl pkey -in KEY -out PLAIN.key`)"
    )]
    Encrypted,
    /// A private key block of another kind (`DSA PRIVATE KEY`, `OPENSSH PRIVATE KEY`…).
    #[error(
        "holds a \"{0}\", which is not supported: use a PKCS#8 (\"PRIVATE KEY\"), PKCS#1 (\"RSA PRIVATE KEY\") or SEC1 (\"EC PRIVATE KEY\") key"
    )]
    UnsupportedBlock(String),
    /// The DER inside the block is not the structure its label promises.
    #[error("holds a {form} private key that does not parse ({reason})")]
    Malformed {
        /// The form the label named.
        form: KeyForm,
        /// What is wrong, without key material.
        reason: String,
    },
    /// A well-formed key of an algorithm, curve or size ring cannot sign with.
    #[error("holds a {0} key; supported are RSA (2048 to 8192 bits), ECDSA P-256 and P-384, and Ed25519")]
    UnsupportedAlgorithm(String),
    /// An EC key stored without its public point, which ring needs.
    #[error(
        "holds an EC private key without its public key, which is required: rewrite it with `openssl ec -in KEY -out FULL.key`"
    )]
    NoPublicKey,
    /// The structure is fine but ring refuses the key (inconsistent RSA parameters, a point off
    /// the curve…).
    #[error("holds a {0} key that is inconsistent or corrupt and cannot sign")]
    Rejected(KeyKind),
}

/// An unencrypted private key as PKCS#8 DER, with what it is and which form it came in. Its Debug
/// output shows no key material; the DER is zeroed on drop.
pub struct Pkcs8Key {
    der: Zeroizing<Vec<u8>>,
    kind: KeyKind,
    form: KeyForm,
}

impl std::fmt::Debug for Pkcs8Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs8Key").field("kind", &self.kind).field("form", &self.form).finish_non_exhaustive()
    }
}

impl Pkcs8Key {
    /// Reads the one private key in `pem` (other blocks, e.g. a certificate or `EC PARAMETERS`,
    /// are ignored), in PKCS#8, PKCS#1 or SEC1 form.
    pub fn from_pem(pem: &str) -> Result<Pkcs8Key, KeyError> {
        // A parse error is not shown: it could quote part of the key.
        let blocks =
            pem::parse_many(pem).map_err(|_| KeyError::NotFound { found: " (the PEM is malformed)".into() })?;
        let (keys, others): (Vec<_>, Vec<_>) = blocks.into_iter().partition(|b| b.tag().ends_with("PRIVATE KEY"));
        let block = match <[_; 1]>::try_from(keys) {
            Ok([block]) => block,
            Err(keys) if keys.is_empty() => {
                let found: Vec<&str> = others.iter().map(pem::Pem::tag).collect();
                let found = if found.is_empty() { String::new() } else { format!(" (found: {})", found.join(", ")) };
                return Err(KeyError::NotFound { found });
            }
            Err(keys) => return Err(KeyError::Several(keys.len())),
        };
        let encrypted_header = block.headers().get("Proc-Type").is_some_and(|v| v.contains("ENCRYPTED"));
        let tag = block.tag().to_owned();
        let der = Zeroizing::new(block.into_contents());
        match tag.as_str() {
            _ if encrypted_header => Err(KeyError::Encrypted),
            "ENCRYPTED PRIVATE KEY" => Err(KeyError::Encrypted),
            "PRIVATE KEY" => from_pkcs8(der),
            "RSA PRIVATE KEY" => from_pkcs1(&der),
            "EC PRIVATE KEY" => from_sec1(&der),
            _ => Err(KeyError::UnsupportedBlock(tag)),
        }
    }

    /// The PKCS#8 DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The key's algorithm.
    pub fn kind(&self) -> &KeyKind {
        &self.kind
    }

    /// The form the PEM held it in.
    pub fn form(&self) -> KeyForm {
        self.form
    }

    /// The key loaded for signing (RSA signs with SHA-256, P-384 with SHA-384).
    pub fn key_pair(&self) -> Result<rcgen::KeyPair, KeyError> {
        // rcgen reads PKCS#8 DER and picks the signature algorithm from the key.
        rcgen::KeyPair::try_from(self.der.as_slice()).map_err(|_| KeyError::Rejected(self.kind.clone()))
    }
}

/// Reads the one private key in `pem` (PKCS#8, PKCS#1 or SEC1) and loads it for signing: what
/// `rcgen::KeyPair::from_pem` does on ring for PKCS#8 alone.
pub fn key_pair_from_pem(pem: &str) -> Result<rcgen::KeyPair, KeyError> {
    Pkcs8Key::from_pem(pem)?.key_pair()
}

fn malformed(form: KeyForm, e: impl std::fmt::Display) -> KeyError {
    // der's errors name the ASN.1 problem and a byte offset, never content.
    KeyError::Malformed { form, reason: e.to_string() }
}

fn from_pkcs8(der: Zeroizing<Vec<u8>>) -> Result<Pkcs8Key, KeyError> {
    let info = PrivateKeyInfo::try_from(der.as_slice()).map_err(|e| malformed(KeyForm::Pkcs8, e))?;
    let kind = match info.algorithm.oid {
        RSA_ENCRYPTION => rsa_kind(info.private_key, KeyForm::Pkcs8)?,
        EC_PUBLIC_KEY => {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|_| malformed(KeyForm::Pkcs8, "the EC algorithm identifier does not name a curve"))?;
            let kind = ec_kind(curve)?;
            let ec = sec1::EcPrivateKey::try_from(info.private_key).map_err(|e| malformed(KeyForm::Pkcs8, e))?;
            if ec.public_key.is_none() {
                return Err(KeyError::NoPublicKey);
            }
            kind
        }
        ED25519 => KeyKind::Ed25519,
        other => return Err(KeyError::UnsupportedAlgorithm(algorithm_name(other))),
    };
    Ok(Pkcs8Key { der, kind, form: KeyForm::Pkcs8 })
}

fn from_pkcs1(der: &[u8]) -> Result<Pkcs8Key, KeyError> {
    let kind = rsa_kind(der, KeyForm::Pkcs1)?;
    let algorithm = AlgorithmIdentifierRef { oid: RSA_ENCRYPTION, parameters: Some(AnyRef::NULL) };
    Ok(Pkcs8Key { der: wrap(algorithm, der, KeyForm::Pkcs1)?, kind, form: KeyForm::Pkcs1 })
}

fn from_sec1(der: &[u8]) -> Result<Pkcs8Key, KeyError> {
    let ec = sec1::EcPrivateKey::try_from(der).map_err(|e| malformed(KeyForm::Sec1, e))?;
    let curve = ec
        .parameters
        .and_then(|p| p.named_curve())
        .ok_or_else(|| malformed(KeyForm::Sec1, "the key does not name its curve"))?;
    let kind = ec_kind(curve)?;
    if ec.public_key.is_none() {
        return Err(KeyError::NoPublicKey);
    }
    // The ECPrivateKey goes in unchanged; its curve parameter matches the one outside, which ring checks.
    let algorithm = AlgorithmIdentifierRef { oid: EC_PUBLIC_KEY, parameters: Some(AnyRef::from(&curve)) };
    Ok(Pkcs8Key { der: wrap(algorithm, der, KeyForm::Sec1)?, kind, form: KeyForm::Sec1 })
}

fn wrap(algorithm: AlgorithmIdentifierRef<'_>, key: &[u8], form: KeyForm) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    PrivateKeyInfo::new(algorithm, key).to_der().map(Zeroizing::new).map_err(|e| malformed(form, e))
}

fn rsa_kind(pkcs1_der: &[u8], form: KeyForm) -> Result<KeyKind, KeyError> {
    let key = pkcs1::RsaPrivateKey::try_from(pkcs1_der).map_err(|e| malformed(form, e))?;
    if key.other_prime_infos.is_some() {
        return Err(KeyError::UnsupportedAlgorithm("multi-prime RSA".into()));
    }
    let modulus = key.modulus.as_bytes();
    let bits = modulus.first().map_or(0, |top| modulus.len() * 8 - top.leading_zeros() as usize);
    if !RSA_BITS.contains(&bits) {
        return Err(KeyError::UnsupportedAlgorithm(format!("RSA-{bits}")));
    }
    Ok(KeyKind::Rsa { bits })
}

fn ec_kind(curve: ObjectIdentifier) -> Result<KeyKind, KeyError> {
    match curve {
        P256 => Ok(KeyKind::EcP256),
        P384 => Ok(KeyKind::EcP384),
        other => Err(KeyError::UnsupportedAlgorithm(format!("EC {}", curve_name(other)))),
    }
}

fn curve_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.3.132.0.35" => "P-521".into(),
        "1.3.132.0.10" => "secp256k1".into(),
        other => format!("curve {other}"),
    }
}

fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.10" => "RSA-PSS".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        "1.3.101.110" => "X25519".into(),
        "1.3.101.111" => "X448".into(),
        "1.3.101.113" => "Ed448".into(),
        other => format!("algorithm {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// Runs openssl in `dir` and returns stdout; panics with the fix when it is missing.
    fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}): run ./scripts/test.sh, which installs it"));
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap()
    }

    /// The key in `file` loads in `form` as `kind`, and signs: a self-signed certificate made with
    /// it verifies under the public key openssl derives from the same file.
    fn assert_loads(dir: &Path, file: &str, form: KeyForm, kind: KeyKind) {
        let pem = read(dir, file);
        let key = Pkcs8Key::from_pem(&pem).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((key.form(), key.kind()), (form, &kind), "{file}");
        let pair = key.key_pair().unwrap();
        let openssl_spki = openssl(dir, &["pkey", "-in", file, "-pubout", "-outform", "DER"]);
        assert_eq!(rcgen::PublicKeyData::subject_public_key_info(&pair), openssl_spki, "{file}: same public key");
        let cert = rcgen::CertificateParams::new(vec!["k.example".to_owned()]).unwrap().self_signed(&pair).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        assert_eq!(x.public_key().raw, &openssl_spki[..]);
        assert!(x.verify_signature(None).is_ok(), "{file}: the converted key signs");
        assert!(!format!("{key:?}").contains(&pem[40..80]), "Debug shows no key material");
    }

    #[test]
    fn pkcs8_pkcs1_and_sec1_keys_load_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(d, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa8.pem"]);
        openssl(d, &["rsa", "-in", "rsa8.pem", "-traditional", "-out", "rsa1.pem"]);
        openssl(d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "p256-8.pem"]);
        // `ecparam -genkey` writes an EC PARAMETERS block before the key.
        openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-out", "p256-sec1.pem"]);
        openssl(d, &["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "p384-sec1.pem"]);
        openssl(d, &["genpkey", "-algorithm", "ED25519", "-out", "ed.pem"]);
        assert!(read(d, "rsa1.pem").starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert!(read(d, "p256-sec1.pem").starts_with("-----BEGIN EC PARAMETERS-----"));
        assert!(read(d, "p384-sec1.pem").starts_with("-----BEGIN EC PRIVATE KEY-----"));

        assert_loads(d, "rsa8.pem", KeyForm::Pkcs8, KeyKind::Rsa { bits: 2048 });
        assert_loads(d, "rsa1.pem", KeyForm::Pkcs1, KeyKind::Rsa { bits: 2048 });
        assert_loads(d, "p256-8.pem", KeyForm::Pkcs8, KeyKind::EcP256);
        assert_loads(d, "p256-sec1.pem", KeyForm::Sec1, KeyKind::EcP256);
        assert_loads(d, "p384-sec1.pem", KeyForm::Sec1, KeyKind::EcP384);
        assert_loads(d, "ed.pem", KeyForm::Pkcs8, KeyKind::Ed25519);

        // PKCS#1 wrapped here is byte for byte what `openssl pkcs8 -topk8` makes of it.
        let ours = Pkcs8Key::from_pem(&read(d, "rsa1.pem")).unwrap();
        let theirs = openssl(d, &["pkcs8", "-topk8", "-nocrypt", "-in", "rsa1.pem", "-outform", "DER"]);
        assert_eq!(ours.der(), &theirs[..]);
        // A combined file (certificate then key) finds the key.
        let combined = format!("{}{}", pem_cert(), read(d, "p384-sec1.pem"));
        assert_eq!(Pkcs8Key::from_pem(&combined).unwrap().kind(), &KeyKind::EcP384);
    }

    fn pem_cert() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec![]).unwrap().self_signed(&key).unwrap().pem()
    }

    #[test]
    fn encrypted_keys_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
        openssl(d, &[&["genpkey"][..], &ec, &["-aes256", "-pass", "pass:secret-pw", "-out", "enc8.pem"]].concat());
        openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "plain.pem"]);
        openssl(d, &["ec", "-in", "plain.pem", "-aes256", "-passout", "pass:secret-pw", "-out", "enc-sec1.pem"]);
        assert!(read(d, "enc8.pem").starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        assert!(read(d, "enc-sec1.pem").contains("Proc-Type: 4,ENCRYPTED"));
        for file in ["enc8.pem", "enc-sec1.pem"] {
            let e = key_pair_from_pem(&read(d, file)).unwrap_err();
            assert_eq!(e, KeyError::Encrypted, "{file}");
            assert!(e.to_string().contains("encrypted private key") && e.to_string().contains("openssl pkey"), "{e}");
        }
    }

    #[test]
    fn other_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(d, &["ecparam", "-name", "secp521r1", "-genkey", "-noout", "-out", "p521.pem"]);
        openssl(d, &["genrsa", "-traditional", "-out", "rsa1024.pem", "1024"]);
        openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "p256.pem"]);
        openssl(d, &["ec", "-in", "p256.pem", "-no_public", "-out", "nopub.pem"]);
        openssl(d, &["genpkey", "-algorithm", "X25519", "-out", "x25519.pem"]);

        let err = |pem: &str| Pkcs8Key::from_pem(pem).unwrap_err();
        assert_eq!(err(&read(d, "p521.pem")), KeyError::UnsupportedAlgorithm("EC P-521".into()));
        assert_eq!(err(&read(d, "rsa1024.pem")), KeyError::UnsupportedAlgorithm("RSA-1024".into()));
        assert_eq!(err(&read(d, "nopub.pem")), KeyError::NoPublicKey);
        assert_eq!(err(&read(d, "x25519.pem")), KeyError::UnsupportedAlgorithm("X25519".into()));
        assert_eq!(err("no PEM here"), KeyError::NotFound { found: String::new() });
        let only_cert = err(&pem_cert());
        assert!(only_cert.to_string().starts_with("holds no PEM private key (found: CERTIFICATE)"), "{only_cert}");
        let two = format!("{}{}", read(d, "p256.pem"), read(d, "p256.pem"));
        assert_eq!(err(&two), KeyError::Several(2));
        let dsa = "-----BEGIN DSA PRIVATE KEY-----\nMAA=\n-----END DSA PRIVATE KEY-----\n";
        assert_eq!(err(dsa), KeyError::UnsupportedBlock("DSA PRIVATE KEY".into()));

        // A corrupt body: the message names the form, and quotes nothing of the key.
        let good = read(d, "p256.pem");
        let body: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
        let corrupt = format!("-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n");
        let e = err(&corrupt);
        assert!(matches!(e, KeyError::Malformed { form: KeyForm::Pkcs1, .. }), "{e:?}");
        assert!(!e.to_string().contains(&body[..16]), "{e}");
    }
}
