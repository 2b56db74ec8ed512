//! Identifiers and digests every room shares: random ids, SHA-256 in hex,
//! and the rule for the short texts clients send (names, accounts, keys).

use rand::Rng;
use sha2::Digest;

/// Longest name, account or event type.
pub const MAX_TEXT: usize = 255;

/// A text the rule refuses, in words for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Names, accounts and event types: 1 to 255 printable characters.
pub fn check_text(field: &str, value: &str) -> Result<(), Invalid> {
    if value.trim().is_empty() || value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(Invalid(format!("{field} must be 1 to {MAX_TEXT} printable characters")));
    }
    Ok(())
}

/// A random id: `prefix` and `len` characters of `[0-9a-z]`.
pub fn random_id(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    let tail: String = (0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{tail}")
}

/// SHA-256 of `text`, in hex.
pub fn sha256_hex(text: &str) -> String {
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
