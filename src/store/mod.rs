//! The store: mirror tables plus the change log, written in one transaction
//! with the source's checkpoint.
//!
//! - `ident`: validation and quoting of identifiers that come from upstream data
//! - `sqlite`: the embedded backend (one writer thread, WAL, group commit)
//!
//! Sources hand the store a [`Batch`]; the store decides per object whether it
//! is a change (`read`, `insert`, `update`, `delete`) or the state it already
//! holds (no change), so that decision is the same on every backend.

pub mod ident;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

/// What produced a write: it decides the change's `op` and `type`.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A row read by backfill: `op = "read"`.
    Backfill,
    /// An upstream event: `op = insert|update|delete`, `type` = the event type.
    Event { id: String, kind: String, previous_attributes: Option<Value> },
}

#[derive(Debug, Clone)]
pub enum Mutation {
    Upsert(Value),
    Delete,
}

/// One object's new state (or deletion) for the mirror.
#[derive(Debug, Clone)]
pub struct Write {
    pub object: String,
    pub id: String,
    /// Connected account or tenant; `None` for the platform's own objects.
    pub account: Option<String>,
    pub mutation: Mutation,
    pub origin: Origin,
    /// Backfill generation that last saw the row; a re-backfill sweeps rows
    /// of older generations (objects deleted while the cursor was expired).
    pub generation: i64,
}

/// Delete rows of one object type and account not seen by the current
/// backfill generation.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub object: String,
    pub account: Option<String>,
    pub below_generation: i64,
}

/// Everything one source commits at once: mirror writes, their changes, and
/// the checkpoint that says how far the source got.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub source: String,
    pub writes: Vec<Write>,
    pub sweeps: Vec<Sweep>,
    /// Checkpoint entries (`key` → JSON), committed with the data.
    pub checkpoints: Vec<(String, Value)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Changes written to the change log.
    pub changes: u64,
    /// Writes that matched the mirror already and recorded no change.
    pub unchanged: u64,
}

/// A change log entry as readers (delivery, queues, tests) see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    pub id: String,
    #[serde(skip)]
    pub seq: i64,
    pub source: String,
    pub object: String,
    pub object_id: String,
    pub account: Option<String>,
    pub op: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Option<Value>,
    pub previous_attributes: Option<Value>,
    pub upstream_event_id: Option<String>,
    pub committed_at: String,
}

/// The stable public id of a change log sequence number.
pub fn change_id(seq: i64) -> String {
    format!("chg_{seq:020}")
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    InvalidIdentifier(#[from] ident::IdentError),
    #[error("unsupported database url '{0}': expected sqlite://PATH")]
    UnsupportedUrl(String),
    #[error("cannot open database '{path}': {reason}")]
    Open { path: String, reason: String },
    #[error("corrupt json in {table} row {id}: {source}")]
    CorruptRow { table: String, id: String, source: serde_json::Error },
    #[error("store writer has stopped")]
    Closed,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Commit a batch in one transaction.
    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError>;
    /// Every checkpoint entry of a source.
    async fn checkpoints(&self, source: &str) -> Result<BTreeMap<String, Value>, StoreError>;
    /// Rows per object type in a source's mirror tables.
    async fn object_counts(&self, source: &str) -> Result<BTreeMap<String, u64>, StoreError>;
    /// Changes with a sequence above `after`, in commit order.
    async fn changes_after(&self, after: i64, limit: usize) -> Result<Vec<Change>, StoreError>;
}

/// Open the store named by `[database] url`, creating its tables.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let path =
        url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
    let path = path.to_string();
    let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path))
        .await
        .map_err(|e| StoreError::Open { path: url.to_string(), reason: e.to_string() })??;
    Ok(Arc::new(store))
}

/// The fields of `new` that differ from `old`, with their old values
/// (Stripe's `previous_attributes`).
pub fn previous_attributes(old: &Value, new: &Value) -> Option<Value> {
    let (Value::Object(old), Value::Object(new)) = (old, new) else { return None };
    let mut changed = Map::new();
    for (key, value) in new {
        let before = old.get(key).unwrap_or(&Value::Null);
        if before != value {
            changed.insert(key.clone(), before.clone());
        }
    }
    for (key, value) in old {
        if !new.contains_key(key) {
            changed.insert(key.clone(), value.clone());
        }
    }
    Some(Value::Object(changed))
}
