//! The store: mirror tables plus the change log, written in one transaction
//! with the source's checkpoint.
//!
//! - `ident`: validation and quoting of identifiers that come from upstream data
//! - `migrate`: the numbered schema migrations of each backend, applied once
//! - `plan`: what a batch does to the mirror (the same decision on every backend)
//! - `sqlite`: the embedded backend (one writer thread, WAL, group commit)
//! - `postgres`: the production backend (pooled, set-based writes, xid8-ordered
//!   change log, advisory-lock ownership of sources)
//! - `queues`: apps, queues, subscriptions and per-queue positions of the
//!   built-in pull queues, and their acknowledgement rules
//! - `ledger`: what `window` and `event_queue` sources remember per item
//!   (fingerprints, event ids), committed with the batch
//! - `mirror`: reads of the mirror tables in Stripe's shapes (one object, a
//!   list page with Stripe's cursors), for the Stripe-compatible path
//! - `controls`: what operators ask of sources and sinks (pause, rewind,
//!   redrive), the dead letters, and the change log read by filters
//! - `writes`: idempotency keys of writes through to the upstream, their
//!   recovery points, and the rules for a request that names a known key
//!
//! Sources hand the store a [`Batch`]; [`plan`] decides per object whether it
//! is a change (`read`, `insert`, `update`, `delete`) or the state the mirror
//! already holds (no change).

pub mod controls;
pub mod ident;
pub mod ledger;
pub mod migrate;
pub mod mirror;
pub mod plan;
pub mod postgres;
pub mod queues;
pub mod sqlite;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
pub mod writes;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// What produced a write: it decides the change's `op` and `type`.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A row read by backfill: `op = "read"`.
    Backfill,
    /// An upstream event: `op = insert|update|delete`, `type` = the event type.
    Event { id: String, kind: String, previous_attributes: Option<Value> },
    /// A write made through Tributary: `op = insert|update|delete`, `type` =
    /// `{object}.created|updated|deleted`.
    Write,
    /// An item polled from a window API, typed like a write. With `resend`
    /// (its fingerprint had expired or was unknown), a state the mirror
    /// already holds is emitted again as `op = "read"`.
    Poll { resend: bool },
    /// A repair by reconcile: `type = "{object}.reconciled"`. Applied only
    /// while the mirror still holds `expected` (the state it was compared
    /// with; `None`: absent), so it never overwrites what the events tail
    /// wrote since.
    Reconcile { expected: Option<String> },
}

#[derive(Debug, Clone)]
pub enum Mutation {
    Upsert(Value),
    /// An upsert already serialized, with the object's `created`: what a
    /// backfill holds while its pages wait for the store, in a fraction of
    /// the memory of the JSON tree (see [`Mutation::serialized`]).
    UpsertText {
        text: String,
        created: Option<i64>,
    },
    Delete,
}

impl Mutation {
    /// An upsert of `data`, serialized now.
    pub fn serialized(data: &Value) -> Result<Mutation, serde_json::Error> {
        Ok(Mutation::UpsertText { text: serde_json::to_string(data)?, created: data.get("created").and_then(Value::as_i64) })
    }
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
/// backfill generation. A row is never moved to a lower generation, so one
/// written through the engine after the backfill read it is kept.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub object: String,
    pub account: Option<String>,
    pub below_generation: i64,
    /// When set, only rows created before it (unix seconds), or without a
    /// creation time, are swept: what was created after the backfill began,
    /// it could not list; the events bring it (or its deletion).
    pub created_before: Option<i64>,
}

/// Everything one source commits at once: mirror writes, their changes, and
/// the checkpoint that says how far the source got.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub source: String,
    pub writes: Vec<Write>,
    pub sweeps: Vec<Sweep>,
    /// Checkpoint entries, committed with the data (or, if one would move
    /// backwards, nothing of the batch is).
    pub checkpoints: Vec<Checkpoint>,
    /// An idempotent write's last phase: its key finished (and its jobs
    /// staged) in the same transaction as the mirror write.
    pub finish: Option<writes::Finish>,
    /// Staged jobs moving into the change log (the enqueuer's batch).
    pub handoff: Option<writes::Handoff>,
    /// The source's ledger entries to write or forget.
    pub ledger: Vec<ledger::LedgerOp>,
}

/// The upsert of a checkpoint row (`tributary_checkpoints`, new values in
/// `excluded`), the same on both backends: an unordered checkpoint, or one
/// at or ahead of the stored position, is written; one behind it is not
/// (the statement then reports fewer rows than it was given).
pub(crate) const CHECKPOINT_CONFLICT: &str = "ON CONFLICT (source, key) DO UPDATE
    SET value = excluded.value, updated_at = excluded.updated_at,
        position_major = excluded.position_major, position_minor = excluded.position_minor
    WHERE excluded.position_major IS NULL OR tributary_checkpoints.position_major IS NULL
       OR (tributary_checkpoints.position_major, tributary_checkpoints.position_minor)
          <= (excluded.position_major, excluded.position_minor)";

/// What a source remembers under `key`, committed with the data it
/// describes. A checkpoint with a `position` never moves backwards: the
/// store refuses the batch (Quickwit's `try_apply_delta` is the model) when
/// the stored checkpoint's position is ahead of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub key: String,
    pub value: Value,
    pub position: Option<Position>,
}

/// Where a checkpoint stands, compared `major` first (a backfill's
/// generation, say) then `minor` (its progress within it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub major: i64,
    pub minor: i64,
}

impl Checkpoint {
    /// A checkpoint without an order (an upstream's opaque ack id): always
    /// written.
    pub fn unordered(key: impl Into<String>, value: Value) -> Checkpoint {
        Checkpoint { key: key.into(), value, position: None }
    }

    /// A checkpoint at `position`: refused if the stored one is ahead.
    pub fn at(key: impl Into<String>, value: Value, position: Position) -> Checkpoint {
        Checkpoint { key: key.into(), value, position: Some(position) }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Changes written to the change log.
    pub changes: u64,
    /// Writes that matched the mirror already and recorded no change.
    pub unchanged: u64,
}

/// A change log entry as readers (delivery, queues, tests) see it. `data`
/// and `previous_attributes` stay raw JSON text: readers mostly pass them on,
/// and parsing every object would cost more than reading it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Change {
    /// `chg_…`: stable across redeliveries.
    pub id: String,
    #[serde(skip)]
    pub seq: i64,
    /// Where this change sits in commit order.
    #[serde(skip)]
    pub cursor: ChangeCursor,
    pub source: String,
    /// The object type (`customer`, `shift`, …).
    pub object: String,
    pub object_id: String,
    pub account: Option<String>,
    #[schema(pattern = "^(read|insert|update|delete)$")]
    pub op: String,
    /// The event type (`customer.updated`, `customer.backfilled`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The object as stored; null for a delete.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Box<RawValue>>,
    /// The fields an update changed, with their values before it.
    #[schema(value_type = Option<Object>)]
    pub previous_attributes: Option<Box<RawValue>>,
    pub upstream_event_id: Option<String>,
    #[schema(format = DateTime)]
    pub committed_at: String,
}

impl Change {
    /// `data` as a JSON tree.
    pub fn data_value(&self) -> Option<Value> {
        self.data.as_ref().and_then(|raw| serde_json::from_str(raw.get()).ok())
    }

    /// `previous_attributes` as a JSON tree.
    pub fn previous_value(&self) -> Option<Value> {
        self.previous_attributes.as_ref().and_then(|raw| serde_json::from_str(raw.get()).ok())
    }
}

/// Raw JSON text from the change log, checked to be JSON.
pub(crate) fn raw_json(table: &str, id: i64, text: Option<String>) -> Result<Option<Box<RawValue>>, StoreError> {
    text.map(RawValue::from_string).transpose().map_err(|e| StoreError::CorruptRow {
        table: table.to_string(),
        id: id.to_string(),
        source: e,
    })
}

/// A position in the change log, in commit order: the writing transaction's
/// id (Postgres `xid8`; 0 on SQLite, which has one writer) and the change's
/// sequence. Opaque to readers: `to_string` and `parse` round-trip it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeCursor {
    pub(crate) xid: u64,
    pub(crate) seq: i64,
}

impl ChangeCursor {
    /// Before the first change.
    pub const START: ChangeCursor = ChangeCursor { xid: 0, seq: 0 };
    /// After every change.
    pub const END: ChangeCursor = ChangeCursor { xid: i64::MAX as u64, seq: i64::MAX };

    pub fn parse(text: &str) -> Option<ChangeCursor> {
        let (xid, seq) = text.split_once('.')?;
        Some(ChangeCursor { xid: xid.parse().ok()?, seq: seq.parse().ok()? })
    }
}

impl std::fmt::Display for ChangeCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.xid, self.seq)
    }
}

/// A page of changes and the cursor to read on from.
#[derive(Debug, Clone)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    pub next: ChangeCursor,
}

/// A mirror row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorRow {
    pub id: String,
    pub account: Option<String>,
    pub data: Value,
}

/// A time as the change log writes it: RFC 3339 in UTC with microseconds,
/// so such strings sort in time order.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The stable public id of a change log sequence number.
pub fn change_id(seq: i64) -> String {
    format!("chg_{seq:020}")
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {message}")]
    Postgres { message: String, kind: ErrorKind },
    #[error("{0}")]
    InvalidIdentifier(#[from] ident::IdentError),
    #[error("unsupported database url '{0}': expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("cannot open database '{path}': {reason}")]
    Open { path: String, reason: String },
    #[error("corrupt json in {table} row {id}: {source}")]
    CorruptRow { table: String, id: String, source: serde_json::Error },
    #[error("store writer has stopped")]
    Closed,
    /// Another process did the same work first; nothing was written.
    #[error("{0}")]
    Raced(String),
    /// A checkpoint would have moved backwards; nothing of its batch was
    /// committed.
    #[error("checkpoint '{key}' of source '{name}' is behind the stored one; nothing of the batch was committed")]
    CheckpointBehind { name: String, key: String },
}

/// What a database error means to the caller (sqlx's `DatabaseError::kind()`
/// is the model): whether to reconnect, retry the transaction, or give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The server went away or cannot be reached: reconnect and retry.
    ConnectionLost,
    /// A concurrent transaction won (serialization failure, deadlock, a
    /// busy SQLite file): retry the transaction.
    SerializationFailure,
    /// A unique constraint refused a row.
    UniqueViolation,
    /// The disk (or the server's) is full: nothing is written until space
    /// is freed.
    DiskFull,
    Other,
}

impl ErrorKind {
    /// The kind of a Postgres SQLSTATE.
    pub fn of_sqlstate(code: &str) -> ErrorKind {
        match code {
            "40001" | "40P01" => ErrorKind::SerializationFailure,
            "23505" => ErrorKind::UniqueViolation,
            "53100" => ErrorKind::DiskFull,
            // connection exceptions, and the server shutting down
            _ if code.starts_with("08") || code.starts_with("57P") => ErrorKind::ConnectionLost,
            _ => ErrorKind::Other,
        }
    }
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        use rusqlite::ErrorCode;
        match self {
            StoreError::Postgres { kind, .. } => *kind,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => match e.code {
                ErrorCode::DiskFull => ErrorKind::DiskFull,
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => ErrorKind::SerializationFailure,
                ErrorCode::ConstraintViolation
                    if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                {
                    ErrorKind::UniqueViolation
                }
                ErrorCode::CannotOpen => ErrorKind::ConnectionLost,
                _ => ErrorKind::Other,
            },
            StoreError::Closed => ErrorKind::ConnectionLost,
            _ => ErrorKind::Other,
        }
    }
}

/// Whether a runtime (a source, a sink) is stuck on a store error (a full
/// disk, a lost database): set when its write fails, cleared by the next
/// that succeeds. `/health` answers 503 while any is set.
#[derive(Debug, Default)]
pub struct StoreHealth(parking_lot::RwLock<Option<String>>);

impl StoreHealth {
    pub fn failed(&self, error: &StoreError) {
        let kind = serde_json::to_value(error.kind()).ok().and_then(|k| k.as_str().map(String::from)).unwrap_or_default();
        *self.0.write() = Some(format!("{kind}: {error}"));
    }

    /// A write went through (called per commit: a read lock unless it was
    /// failing).
    pub fn ok(&self) {
        if self.0.read().is_some() {
            *self.0.write() = None;
        }
    }

    pub fn error(&self) -> Option<String> {
        self.0.read().clone()
    }

    /// Record the [`StoreError`] in `error`'s chain of causes, if any.
    pub fn failed_if_store(&self, error: &(dyn std::error::Error + 'static)) {
        if let Some(store) = std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref::<StoreError>()) {
            self.failed(store);
        }
    }
}

pub use controls::ControlStore;
pub use ledger::LedgerStore;
pub use mirror::MirrorStore;
pub use queues::QueueStore;
pub use writes::WriteStore;

#[async_trait::async_trait]
pub trait Store: QueueStore + WriteStore + LedgerStore + MirrorStore + ControlStore + Send + Sync {
    /// Commit a batch in one transaction.
    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError>;
    /// Every checkpoint entry of a source.
    async fn checkpoints(&self, source: &str) -> Result<BTreeMap<String, Value>, StoreError>;
    /// Rows per object type in a source's mirror tables.
    async fn object_counts(&self, source: &str) -> Result<BTreeMap<String, u64>, StoreError>;
    /// Every mirror row of a source, by object type.
    async fn mirror_rows(&self, source: &str) -> Result<BTreeMap<String, Vec<MirrorRow>>, StoreError>;
    /// The reader API of the change log: changes after `cursor` in commit
    /// order. A change appears only once every transaction that could commit
    /// before it has finished, so a reader never skips one and never waits.
    async fn changes_after(&self, cursor: ChangeCursor, limit: usize) -> Result<ChangePage, StoreError>;
    /// Wait until this process owns `name` (a source, or a sink as
    /// `sink:NAME`): one owner at a time across processes sharing the database.
    async fn acquire(&self, name: &str) -> Result<Box<dyn Lease>, StoreError>;
    /// Where a sink's delivery stands; `None` before its first batch.
    async fn sink_cursor(&self, sink: &str) -> Result<Option<ChangeCursor>, StoreError>;
    /// Move a sink's cursor past a confirmed batch, parking the changes it
    /// gave up on, in one transaction; [`StoreError::Raced`] (nothing
    /// written) when a rewind moved the sink past `epoch` meanwhile.
    async fn advance_sink(&self, sink: &str, epoch: i64, cursor: ChangeCursor, dead: Vec<DeadLetter>) -> Result<(), StoreError>;
    /// Changes parked for a sink.
    async fn dead_letter_count(&self, sink: &str) -> Result<u64, StoreError>;
    /// Delete up to `limit` changes committed before `cutoff` (RFC 3339) and
    /// at or below `through` (the slowest reader's cursor); returns how many.
    async fn purge_changes(&self, cutoff: &str, through: ChangeCursor, limit: usize) -> Result<u64, StoreError>;
    /// Bumped after every commit that wrote changes (on Postgres, also when
    /// another process commits): delivery wakes on it instead of polling.
    fn commits(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// A change a sink gave up on, parked with the last error.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub change_id: String,
    pub error: String,
    /// The message as it would have been sent.
    pub envelope: String,
    /// Deliveries tried.
    pub attempts: i64,
}

/// Whether this process runs a source or sink (it holds the lease) or
/// stands by while another does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Standby,
}

impl Role {
    pub fn of(owner: bool) -> Role {
        if owner { Role::Owner } else { Role::Standby }
    }
}

/// Ownership of a source; dropping it gives the source up.
#[async_trait::async_trait]
pub trait Lease: Send {
    /// Resolves when ownership is lost, with the reason.
    async fn lost(&mut self) -> String;
}

/// `[database]` as the store needs it.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    /// Postgres schema of every table.
    pub schema: String,
    /// Postgres connections at most.
    pub pool_size: usize,
}

impl Options {
    pub fn url(url: &str) -> Self {
        Options { url: url.to_string(), schema: "public".into(), pool_size: 16 }
    }
}

/// The file of a `sqlite://PATH` url. An empty path is refused (SQLite
/// would give every connection its own private temporary database), and so
/// is a directory.
fn sqlite_path(url: &str) -> Result<&str, StoreError> {
    let path =
        url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).ok_or_else(|| StoreError::UnsupportedUrl(url.into()))?;
    let refuse = |reason: &str| StoreError::Open { path: path.to_string(), reason: reason.to_string() };
    if path.is_empty() || path == ":memory:" {
        return Err(refuse("sqlite:// needs a file path, e.g. sqlite://tributary.db"));
    }
    if std::path::Path::new(path).is_dir() {
        return Err(refuse("it is a directory; name a file, e.g. sqlite://DIR/tributary.db"));
    }
    Ok(path)
}

pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Open the store named by `[database] url`, creating its tables.
pub async fn open(options: &Options) -> Result<Arc<dyn Store>, StoreError> {
    if is_postgres(&options.url) {
        return Ok(Arc::new(postgres::PgStore::open(options).await?));
    }
    let path = sqlite_path(&options.url)?.to_string();
    let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path))
        .await
        .map_err(|e| StoreError::Open { path: options.url.clone(), reason: e.to_string() })??;
    Ok(Arc::new(store))
}

/// Check that the database is reachable, without creating anything.
pub async fn check(options: &Options) -> Result<(), StoreError> {
    if is_postgres(&options.url) {
        return postgres::check(options).await;
    }
    let path = sqlite_path(&options.url)?;
    let refuse = |reason: String| StoreError::Open { path: path.to_string(), reason };
    let file = std::path::Path::new(path);
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !parent.is_dir() {
        return Err(refuse(format!("directory {} does not exist", parent.display())));
    }
    // SQLite writes the file and, beside it, its journal: both must be
    // writable, which only trying tells (permissions, a read-only mount)
    if file.exists() {
        std::fs::OpenOptions::new().append(true).open(file).map_err(|e| refuse(format!("the file is not writable: {e}")))?;
    }
    let probe = parent.join(format!(".tributary-check-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| refuse(format!("directory {} is not writable: {e}", parent.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
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
