//! Built-in pull queues (the Open Platform model): apps own queues,
//! subscribe them to event types of accounts, pull batches and acknowledge
//! them. The store keeps the state (`store::queues`); this module holds what
//! is the same whatever the backend: tokens, codes, `ack_id`s, the fan-out
//! from the change log and retention.
//!
//! - `fanout`: reads the change log in commit order and adds each change to
//!   the queues whose subscriptions match it (a reference, never a copy)
//! - `retention`: deletes queue events past retention, counting what a
//!   consumer never acknowledged as dropped

pub mod fanout;
pub mod retention;

use rand::Rng;
use sha2::Digest;

use crate::store::queues::Ack;

/// A random identifier: `prefix` then `len` characters of `[0-9a-z]`.
pub fn random_id(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    let tail: String = (0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{tail}")
}

/// A new app bearer token (shown once) and the hash the store keeps.
pub fn new_token() -> (String, String) {
    let token = random_id("trb_", 40);
    let hash = token_hash(&token);
    (token, hash)
}

/// SHA-256 of a bearer token, hex: what the store looks tokens up by.
pub fn token_hash(token: &str) -> String {
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `ack_id` of a batch: `{queue code}.{batch}.{nonce}`.
pub fn ack_id(queue: &str, ack: &Ack) -> String {
    format!("{queue}.{}.{}", ack.batch, ack.nonce)
}

/// Why an `ack_id` cannot be used on a queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckIdError {
    #[error("ack_id is not one this service hands out")]
    Malformed,
    #[error("ack_id belongs to another queue")]
    Foreign,
}

/// Parse an `ack_id` sent to `queue`.
pub fn parse_ack_id(queue: &str, text: &str) -> Result<Ack, AckIdError> {
    let mut parts = text.rsplitn(3, '.');
    let (Some(nonce), Some(batch), Some(code)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(AckIdError::Malformed);
    };
    let batch: i64 = batch.parse().map_err(|_| AckIdError::Malformed)?;
    if nonce.is_empty() || batch < 1 {
        return Err(AckIdError::Malformed);
    }
    if code != queue {
        return Err(AckIdError::Foreign);
    }
    Ok(Ack { batch, nonce: nonce.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_ids_round_trip_and_name_their_queue() {
        let ack = Ack { batch: 12, nonce: "k3j".into() };
        let text = ack_id("q_abc", &ack);
        assert_eq!(parse_ack_id("q_abc", &text), Ok(ack));
        assert_eq!(parse_ack_id("q_other", &text), Err(AckIdError::Foreign));
        for bad in ["", "x", "q_abc.0.n", "q_abc.-1.n", "q_abc.1.", "q_abc.one.n"] {
            assert_eq!(parse_ack_id("q_abc", bad), Err(AckIdError::Malformed), "{bad}");
        }
    }

    #[test]
    fn tokens_are_stored_as_hashes() {
        let (token, hash) = new_token();
        assert!(token.starts_with("trb_") && token.len() == 44);
        assert_eq!(hash, token_hash(&token));
        assert_ne!(hash, token_hash("trb_other"));
        assert_eq!(hash.len(), 64);
    }
}
