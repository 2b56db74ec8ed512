//! What a source remembers about the items it has seen, committed in the
//! same transaction as the mirror writes they caused: a `window` source's
//! fingerprint and day per item id (so an unchanged item is skipped and a
//! vanished one is noticed), an `event_queue` source's event ids (so a
//! redelivered batch is recognised), and the events it parked because it
//! could not store them.

/// One remembered item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The item's id (or event id), unique per source.
    pub key: String,
    /// Digest of the item as last emitted; `None` when fingerprints are kept
    /// elsewhere (Redis) or not needed (event ids).
    pub fingerprint: Option<String>,
    /// The day (`YYYY-MM-DD`) the item belongs to: its window day, or the
    /// day an event arrived. Ranges and pruning go by it.
    pub day: String,
    /// Unix seconds when `fingerprint` was written.
    pub seen_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerOp {
    Put(LedgerEntry),
    Remove(String),
    /// Park an event the source cannot store (kept once per key).
    Park(Parked),
    /// Take a parked event out (it was stored after all).
    Unpark(String),
}

/// An upstream event parked with why it could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Parked {
    /// Its event id, or `sha256:` and the digest of its body.
    pub key: String,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub reason: String,
    /// The event as the upstream sent it.
    pub body: String,
    /// RFC 3339.
    pub parked_at: String,
}

#[async_trait::async_trait]
pub trait LedgerStore: Send + Sync {
    /// Entries of a source whose day is within `from..=to` (`YYYY-MM-DD`).
    async fn ledger_range(&self, source: &str, from: &str, to: &str) -> Result<Vec<LedgerEntry>, super::StoreError>;
    /// Which of `keys` a source has remembered.
    async fn ledger_known(&self, source: &str, keys: &[String]) -> Result<Vec<String>, super::StoreError>;
    /// Forget a source's entries whose day is before `day`; returns how many.
    async fn prune_ledger(&self, source: &str, before_day: &str) -> Result<u64, super::StoreError>;
    /// A source's parked events, oldest first.
    async fn parked(&self, source: &str) -> Result<Vec<Parked>, super::StoreError>;
    /// How many events a source has parked.
    async fn parked_count(&self, source: &str) -> Result<u64, super::StoreError>;
}
