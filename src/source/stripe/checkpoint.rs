//! What a scope (the platform or one account) remembers between runs,
//! committed in the same transaction as the data it describes.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::store::{Checkpoint, Position};

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

impl MetaPhase {
    /// Its order within a generation. `New` comes last: within a
    /// generation it means "re-backfill requested", which ends it (a fresh
    /// scope's `New` is generation 0, before any backfill).
    fn rank(self) -> i64 {
        match self {
            MetaPhase::Backfilling => 1,
            MetaPhase::CatchingUp => 2,
            MetaPhase::Live => 3,
            MetaPhase::New => 4,
        }
    }
}

impl Meta {
    /// Its checkpoint entry, positioned by generation then phase: the
    /// store refuses one that would move the scope back.
    pub fn checkpoint(&self, scope: &str) -> Checkpoint {
        Checkpoint::at(meta_key(scope), json!(self), Position { major: self.generation, minor: self.phase.rank() })
    }
}

impl ResourceCheckpoint {
    /// Its checkpoint entry within backfill `generation`, positioned by the
    /// objects fetched so far.
    pub fn checkpoint(&self, scope: &str, object: &str, generation: i64) -> Checkpoint {
        Checkpoint::at(resource_key(scope, object), json!(self), Position { major: generation, minor: self.fetched as i64 })
    }
}

fn meta_key(scope: &str) -> String {
    format!("{scope}/meta")
}

fn resource_key(scope: &str, object: &str) -> String {
    format!("{scope}/backfill/{object}")
}
