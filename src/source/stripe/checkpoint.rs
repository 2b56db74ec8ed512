//! What a scope (the platform or one account) remembers between runs,
//! committed in the same transaction as the data it describes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaPhase {
    /// Nothing synced yet, or the event cursor expired: (re-)backfill.
    #[default]
    New,
    Backfilling,
    CatchingUp,
    Live,
}

/// Checkpoint key `{scope}/meta`: the scope's phase and event cursor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Incremented by every (re-)backfill; rows not seen by the current
    /// generation's backfill are swept when it completes.
    pub generation: i64,
    pub phase: MetaPhase,
    /// Newest event before backfill began; catch-up starts after it.
    pub last_event_before_backfill: Option<String>,
    /// Newest event applied.
    pub cursor: Option<String>,
    /// While `cursor` is `None` (the upstream had no events yet): when the
    /// newest applied poll started (unix ms). A gap longer than the
    /// upstream's event retention means events may have expired unseen.
    #[serde(default)]
    pub polled_at_ms: Option<i64>,
}

/// Checkpoint key `{scope}/backfill/{object}`: how far backfill paged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceCheckpoint {
    /// Id of the last object stored; the next page starts after it.
    pub after: Option<String>,
    pub done: bool,
    /// Objects stored so far in this generation.
    pub fetched: u64,
}

pub fn meta_key(scope: &str) -> String {
    format!("{scope}/meta")
}

pub fn resource_key(scope: &str, object: &str) -> String {
    format!("{scope}/backfill/{object}")
}
