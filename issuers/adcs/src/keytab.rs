//! The client key of a principal from an MIT keytab file (as `ktutil`, `kadmin ktadd` and
//! Windows' `ktpass` write them).
//!
//! sspi's Kerberos client takes a *key* (`KeytabIdentity`: raw key bytes and enctype), not a keytab
//! file, so this module reads the file and picks the key. Hand-written because the only keytab
//! crate on crates.io (`kerberos_keytab` 0.0.3) is AGPL-licensed and unmaintained; the format is
//! small and fixed (MIT `krb5/src/lib/krb5/keytab/kt_file.c`, "keytab file format"):
//!
//! ```text
//! 0x05 0x02                                   file format version 2 (big-endian integers)
//! repeated:
//!   int32 size                                entry length; negative = a deleted entry (hole)
//!   uint16 num_components
//!   counted_string realm                      uint16 length + bytes
//!   counted_string components[num_components]
//!   uint32 name_type
//!   uint32 timestamp
//!   uint8 vno8
//!   uint16 enctype; counted_string key        the keyblock
//!   [uint32 vno]                              present when the entry has 4 more bytes
//! ```
//!
//! Version 1 files (`0x05 0x01`, native byte order and no name type) come from DCE-era tools and
//! are refused with a message naming the fix.

use zeroize::Zeroizing;

/// enctype numbers (RFC 3962, RFC 3961) of the keys sspi can use, most preferred first.
pub const AES256_CTS_HMAC_SHA1_96: i32 = 18;
/// aes128-cts-hmac-sha1-96.
pub const AES128_CTS_HMAC_SHA1_96: i32 = 17;

/// One key from a keytab.
pub struct KeytabKey {
    /// `components/joined@REALM` of the entry.
    pub principal: String,
    /// Key version number.
    pub kvno: u32,
    /// Encryption type (18 = aes256-cts-hmac-sha1-96, 17 = aes128-cts-hmac-sha1-96).
    pub enctype: i32,
    /// The raw key.
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for KeytabKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeytabKey({}, kvno {}, enctype {})", self.principal, self.kvno, self.enctype)
    }
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.data.len() < n {
            return Err("the keytab is truncated".into());
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn string(&mut self) -> Result<&'a [u8], String> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

/// Every entry of `keytab` (a version 2 keytab file).
pub fn entries(keytab: &[u8]) -> Result<Vec<KeytabKey>, String> {
    match keytab.get(..2) {
        Some([5, 2]) => {}
        Some([5, 1]) => {
            return Err("the keytab is a version 1 (0x0501) file: export it again with ktutil or ktpass (version 2)".into());
        }
        _ => return Err("the keytab is not a keytab file (it must start with 0x0502): store the binary file, not its base64 text or a klist listing".into()),
    }
    let mut r = Reader { data: &keytab[2..] };
    let mut out = Vec::new();
    while !r.data.is_empty() {
        // A truncated length at the very end is padding some writers leave: stop there.
        if r.data.len() < 4 {
            break;
        }
        let size = r.u32()? as i32;
        if size == 0 {
            break;
        }
        let body = r.take(size.unsigned_abs() as usize)?;
        if size < 0 {
            continue; // a deleted entry
        }
        let mut e = Reader { data: body };
        let components = e.u16()?;
        let realm = String::from_utf8_lossy(e.string()?).into_owned();
        let mut name = Vec::with_capacity(usize::from(components));
        for _ in 0..components {
            name.push(String::from_utf8_lossy(e.string()?).into_owned());
        }
        let _name_type = e.u32()?;
        let _timestamp = e.u32()?;
        let vno8 = e.u8()?;
        let enctype = i32::from(e.u16()?);
        let key = Zeroizing::new(e.string()?.to_vec());
        // The 32-bit kvno, when present, supersedes the 8-bit one (kvno > 255); MIT writes 0 in
        // it when unknown, and then the 8-bit value stands.
        let kvno = match e.data.len() >= 4 {
            true => Some(e.u32()?).filter(|v| *v != 0).unwrap_or(u32::from(vno8)),
            false => u32::from(vno8),
        };
        out.push(KeytabKey { principal: format!("{}@{realm}", name.join("/")), kvno, enctype, key });
    }
    Ok(out)
}

/// The key to authenticate `principal` (`name@REALM`) with: of its entries with an enctype sspi
/// supports (AES), the newest kvno, AES-256 before AES-128.
pub fn key_for(keytab: &[u8], principal: &str) -> Result<KeytabKey, String> {
    let all = entries(keytab)?;
    let names: std::collections::BTreeSet<&str> = all.iter().map(|k| k.principal.as_str()).collect();
    let mine: Vec<&KeytabKey> = all.iter().filter(|k| k.principal == principal).collect();
    if mine.is_empty() {
        return Err(format!(
            "the keytab has no key for {principal:?} (it holds {names:?}): set the Secret's username to one of them or export the right principal"
        ));
    }
    let rank = |e: i32| match e {
        AES256_CTS_HMAC_SHA1_96 => 2,
        AES128_CTS_HMAC_SHA1_96 => 1,
        _ => 0,
    };
    let best = mine
        .iter()
        .filter(|k| rank(k.enctype) > 0)
        .max_by_key(|k| (k.kvno, rank(k.enctype)))
        .ok_or_else(|| {
            let types: Vec<i32> = mine.iter().map(|k| k.enctype).collect();
            format!(
                "the keytab's keys for {principal:?} have enctypes {types:?}; only AES (17, 18) is supported: export an aes256-cts-hmac-sha1-96 key (ktpass /crypto AES256-SHA1)"
            )
        })?;
    Ok(KeytabKey { principal: best.principal.clone(), kvno: best.kvno, enctype: best.enctype, key: best.key.clone() })
}

/// The one principal of `keytab`, when it holds exactly one (the Secret then needs no username).
pub fn only_principal(keytab: &[u8]) -> Result<String, String> {
    let all = entries(keytab)?;
    let names: std::collections::BTreeSet<String> = all.into_iter().map(|k| k.principal).collect();
    match names.len() {
        1 => Ok(names.into_iter().next().expect("one")),
        0 => Err("the keytab holds no keys".into()),
        _ => {
            Err(format!("the keytab holds several principals ({names:?}): add a username key naming one to the Secret"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keytab entry as MIT writes it.
    fn entry(components: &[&str], realm: &str, vno8: u8, enctype: u16, key: &[u8], vno32: Option<u32>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((components.len() as u16).to_be_bytes());
        b.extend((realm.len() as u16).to_be_bytes());
        b.extend(realm.as_bytes());
        for c in components {
            b.extend((c.len() as u16).to_be_bytes());
            b.extend(c.as_bytes());
        }
        b.extend(1u32.to_be_bytes()); // KRB5_NT_PRINCIPAL
        b.extend(1_700_000_000u32.to_be_bytes());
        b.push(vno8);
        b.extend(enctype.to_be_bytes());
        b.extend((key.len() as u16).to_be_bytes());
        b.extend(key);
        if let Some(v) = vno32 {
            b.extend(v.to_be_bytes());
        }
        let mut out = (b.len() as i32).to_be_bytes().to_vec();
        out.extend(b);
        out
    }

    #[test]
    fn picks_the_newest_aes_key_of_the_principal() {
        let mut kt = vec![5, 2];
        kt.extend(entry(&["alice"], "CORP.TEST", 2, 18, &[1; 32], Some(2)));
        kt.extend(entry(&["alice"], "CORP.TEST", 3, 17, &[2; 16], Some(3)));
        kt.extend(entry(&["alice"], "CORP.TEST", 3, 18, &[3; 32], Some(3)));
        kt.extend(entry(&["alice"], "CORP.TEST", 4, 23, &[4; 16], Some(4))); // rc4: not usable
        // A hole (deleted entry) and an entry for another principal.
        kt.extend((-8i32).to_be_bytes());
        kt.extend([0u8; 8]);
        kt.extend(entry(&["HTTP", "ca.corp.test"], "CORP.TEST", 9, 18, &[9; 32], None));
        let k = key_for(&kt, "alice@CORP.TEST").unwrap();
        assert_eq!((k.kvno, k.enctype, k.key[0]), (3, 18, 3));
        assert_eq!(entries(&kt).unwrap().len(), 5);
        assert_eq!(entries(&kt).unwrap()[4].principal, "HTTP/ca.corp.test@CORP.TEST");
        let e = key_for(&kt, "bob@CORP.TEST").unwrap_err();
        assert!(e.contains("no key for \"bob@CORP.TEST\"") && e.contains("alice@CORP.TEST"), "{e}");
        assert!(only_principal(&kt).unwrap_err().contains("several principals"));
    }

    #[test]
    fn the_32_bit_kvno_wins_unless_zero() {
        let mut kt = vec![5, 2];
        kt.extend(entry(&["svc"], "R", 1, 18, &[1; 32], Some(257)));
        kt.extend(entry(&["svc"], "R", 7, 17, &[2; 16], Some(0)));
        let all = entries(&kt).unwrap();
        assert_eq!((all[0].kvno, all[1].kvno), (257, 7));
        assert_eq!(only_principal(&kt).unwrap(), "svc@R");
    }

    #[test]
    fn bad_files_are_named() {
        assert!(entries(b"BQIAAAB").unwrap_err().contains("not a keytab"));
        assert!(entries(&[5, 1, 0, 0]).unwrap_err().contains("version 1"));
        let mut kt = vec![5, 2];
        kt.extend(entry(&["alice"], "R", 1, 18, &[1; 32], None));
        kt.truncate(kt.len() - 5);
        assert!(entries(&kt).unwrap_err().contains("truncated"));
        let mut kt = vec![5, 2];
        kt.extend(entry(&["alice"], "R", 1, 23, &[1; 16], None));
        assert!(key_for(&kt, "alice@R").unwrap_err().contains("only AES"));
    }
}
