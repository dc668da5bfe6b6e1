//! Scrubbing secret values out of text that leaves the process (error messages, conditions,
//! events, logs). CAs echo what they were sent (a wrong password in "Wrong password … for user"),
//! so adapters pass every answer text through [`redact`] with the secrets of that call.

/// What a secret value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// `text` with every occurrence of each of `secrets` replaced by [`REDACTED`]. Values shorter than
/// 4 characters are left alone: replacing them would mangle ordinary words while hiding nothing
/// an attacker could not guess.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    // Longest first, so a secret that contains another is replaced whole.
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| s.len() >= 4).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets {
        out = out.replace(s, REDACTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_secret_and_leaves_short_values() {
        assert_eq!(redact("bad secret_id s3cr3t-id given", &["s3cr3t-id", "x"]), "bad secret_id <redacted> given");
        assert_eq!(
            redact("pw hunter2hunter2 and hunter2", &["hunter2", "hunter2hunter2"]),
            "pw <redacted> and <redacted>"
        );
    }
}
