//! What operators ask of sources and sinks (pause, resume, a sink's rewind,
//! a redrive of its dead letters), kept in the database so that whichever
//! process runs the source or sink applies it; the dead letters themselves;
//! and the change log read by filters (the console, `tributary changes`).

use serde::Serialize;

use super::{Change, ChangeCursor, StoreError};

/// What a control row steers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Source,
    Sink,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Source => "source",
            Target::Sink => "sink",
        }
    }

    pub fn parse(text: &str) -> Option<Target> {
        match text {
            "source" => Some(Target::Source),
            "sink" => Some(Target::Sink),
            _ => None,
        }
    }
}

/// The operator's requests for one source or sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub target: Target,
    pub name: String,
    /// Not run by any process until resumed.
    pub paused: bool,
    /// A rewind the sink's owner has not applied yet: the position its
    /// cursor moves to.
    pub rewind_to: Option<ChangeCursor>,
    /// Bumped by every redrive request: the owner redrives when it moves.
    pub redrives: i64,
}

/// Where a sink stands: its cursor, and the epoch a rewind moves on (a
/// batch confirmed against an older epoch cannot move the cursor).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkPosition {
    pub cursor: ChangeCursor,
    pub epoch: i64,
}

/// A change a sink gave up on, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StoredDeadLetter {
    /// `dl_…`
    pub id: String,
    /// The row behind `id`.
    #[serde(skip)]
    #[schema(ignore)]
    pub row: i64,
    pub change_id: String,
    /// The last error.
    pub error: String,
    /// Deliveries tried, redrives included.
    pub attempts: i64,
    /// The message as it would have been sent (the change's JSON envelope).
    pub envelope: String,
    /// RFC 3339: when it was parked.
    pub created_at: String,
    /// Set while a redrive is asked for and not yet tried.
    pub redrive_requested: bool,
}

/// The public id of a dead letter row.
pub fn dead_letter_id(row: i64) -> String {
    format!("dl_{row}")
}

/// The row of a public dead letter id.
pub fn dead_letter_row(id: &str) -> Option<i64> {
    id.strip_prefix("dl_")?.parse().ok().filter(|n| *n > 0)
}

/// Which changes to list, newest first. Every field narrows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    pub source: Option<String>,
    pub object: Option<String>,
    pub object_id: Option<String>,
    pub op: Option<String>,
    /// The change's `type`.
    pub kind: Option<String>,
    /// RFC 3339 (as the change log writes it): committed at or after.
    pub since: Option<String>,
    /// RFC 3339: committed before.
    pub until: Option<String>,
    /// Only changes older than this sequence number (the next page).
    pub before_seq: Option<i64>,
}

/// What a change-log reader has still to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Changes after the cursor, counted up to the asked maximum.
    pub count: u64,
    /// RFC 3339: when the oldest of them was committed.
    pub oldest_committed_at: Option<String>,
}

/// The outcome of one redriven dead letter, recorded by the sink's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redriven {
    /// Delivered: the dead letter is gone.
    Delivered,
    /// Failed again after `attempts` more tries; it stays, with `error`.
    Failed { error: String, attempts: i64 },
}

#[async_trait::async_trait]
pub trait ControlStore: Send + Sync {
    /// Every control row (a handful: only what an operator touched).
    async fn controls(&self) -> Result<Vec<Control>, StoreError>;
    /// Pause or resume a source or sink.
    async fn set_paused(&self, target: Target, name: &str, paused: bool) -> Result<(), StoreError>;
    /// Ask the sink's owner to move its cursor to `to`.
    async fn request_rewind(&self, sink: &str, to: ChangeCursor) -> Result<(), StoreError>;
    /// Apply the sink's pending rewind, if it still asks for `to`: the
    /// cursor moves there and its epoch on, in one transaction. Returns
    /// whether it did.
    async fn apply_rewind(&self, sink: &str, to: ChangeCursor) -> Result<bool, StoreError>;
    /// Where a sink stands (the start, epoch 0, before its first batch).
    async fn sink_position(&self, sink: &str) -> Result<SinkPosition, StoreError>;
    /// The position of a change in commit order.
    async fn change_cursor(&self, seq: i64) -> Result<Option<ChangeCursor>, StoreError>;
    /// The position of the first change committed at or after `at` (RFC
    /// 3339 as the change log writes it), in commit order.
    async fn first_change_since(&self, at: &str) -> Result<Option<ChangeCursor>, StoreError>;
    /// A sink's dead letters, oldest first, after row `after` (0: from the
    /// first).
    async fn dead_letters(&self, sink: &str, after: i64, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError>;
    /// Mark dead letters for redrive (every one of the sink's when `rows` is
    /// `None`) and bump the sink's redrive count; returns how many.
    async fn request_redrive(&self, sink: &str, rows: Option<&[i64]>) -> Result<u64, StoreError>;
    /// Dead letters marked for redrive, oldest first.
    async fn redrive_requested(&self, sink: &str, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError>;
    /// Record a redrive's outcome.
    async fn finish_redrive(&self, sink: &str, row: i64, outcome: Redriven) -> Result<(), StoreError>;
    /// Delete a dead letter; returns whether it existed.
    async fn discard_dead_letter(&self, sink: &str, row: i64) -> Result<bool, StoreError>;
    /// How many changes follow `cursor` (counted up to `max`), and when the
    /// first of them was committed: a reader's backlog, without reading it.
    async fn backlog(&self, cursor: ChangeCursor, max: usize) -> Result<Backlog, StoreError>;
    /// Changes matching `filter`, newest first.
    async fn find_changes(&self, filter: &ChangeFilter, limit: usize) -> Result<Vec<Change>, StoreError>;
    /// Bumped when a control row changes (on Postgres, in any process).
    fn controls_changed(&self) -> tokio::sync::watch::Receiver<u64>;
}
