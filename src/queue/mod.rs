//! Built-in pull queues (the Open Platform model): apps own queues,
//! subscribe them to event types of accounts, pull batches and acknowledge
//! them. The store keeps the state (`store::queues`); this module holds what
//! is the same whatever the backend: tokens, codes, `ack_id`s and the
//! fan-out from the change log (retention is the engine's, `retention`).
//!
//! - `fanout`: reads the change log in commit order and adds each change to
//!   the queues whose subscriptions match it (a reference, never a copy)

pub mod fanout;

use crate::ids::{Invalid, check_text, random_id};
use crate::store::queues::{Ack, App, AppKind, Subscription};
use crate::store::timestamp;

/// A new app, its bearer token (shown once) and the token's hash (what the
/// store keeps). An in-house app is bound to one account; a public app has
/// none (accounts grant it access).
pub fn new_app(name: String, kind: AppKind, account: Option<String>) -> Result<(App, String, String), Invalid> {
    check_text("name", &name)?;
    match (kind, &account) {
        (AppKind::Inhouse, None) => return Err(Invalid("an inhouse app needs its account".into())),
        (AppKind::Public, Some(_)) => return Err(Invalid("a public app has no account: accounts grant it access".into())),
        (_, Some(account)) => check_text("account", account)?,
        _ => {}
    }
    let app = App { id: random_id("app_", 16), name, kind, account, created_at: timestamp(chrono::Utc::now()), revoked: false };
    let (token, hash) = new_token();
    Ok((app, token, hash))
}

/// A subscription to `event_type` of `account`: changes committed from now
/// on, or with `replay` every one still within `retention` too.
pub fn new_subscription(event_type: String, account: String, replay: bool, retention: std::time::Duration) -> Subscription {
    let now = chrono::Utc::now();
    let since = if replay { chrono::Duration::from_std(retention).ok().and_then(|r| now.checked_sub_signed(r)) } else { None };
    Subscription {
        code: random_id("sub_", 16),
        queue_id: 0,
        event_type,
        account,
        start_at: timestamp(since.unwrap_or(now)),
        replay,
        created_at: timestamp(now),
    }
}

/// A random identifier: `prefix` then `len` characters of `[0-9a-z]`.
/// SHA-256 of a bearer token, hex: what the store looks tokens up by.
pub fn token_hash(token: &str) -> String {
    crate::ids::sha256_hex(token)
}

/// A new app bearer token (shown once) and the hash the store keeps.
pub fn new_token() -> (String, String) {
    let token = random_id("trb_", 40);
    let hash = token_hash(&token);
    (token, hash)
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
