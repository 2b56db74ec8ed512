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
    /// When the current generation's backfill began (unix seconds): what is
    /// created after it, the events bring, or for resources without events
    /// their follower. `None` for backfills of earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill_started_at: Option<i64>,
}

/// Checkpoint key `{scope}/backfill/{resource}`: how far backfill paged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceCheckpoint {
    /// Written by releases that paged one cursor per resource: the id of
    /// the last object stored. A resumed checkpoint that has it and no
    /// `ranges` pages on from it as one range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    pub done: bool,
    /// Objects stored so far in this generation.
    pub fetched: u64,
    /// The spans of creation time still to page; together with what is
    /// stored they cover everything created before the backfill began.
    /// `None` until the resource starts.
    #[serde(default)]
    pub ranges: Option<Vec<Range>>,
    /// Why the key may not read this resource (a 403): done without it
    /// until the next backfill asks again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// A child list: the last parent whose children are stored (parents
    /// are walked newest first, as the mirror lists them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_after: Option<String>,
}

/// Checkpoint key `{scope}/follow/{resource}`: how a resource followed
/// without events (by `created`, or re-listed) was last brought up to date.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FollowCheckpoint {
    /// When the last complete listing began (unix seconds): everything the
    /// upstream held then is in the mirror.
    pub listed_at: i64,
    /// A resource followed by `created`: the newest creation time seen,
    /// where the next listing starts (`created[gte]`, as several objects
    /// may share a second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_gte: Option<i64>,
}

impl FollowCheckpoint {
    /// Its checkpoint entry within backfill `generation`, positioned by
    /// time: a listing never moves it back.
    pub fn checkpoint(&self, scope: &str, resource: &str, generation: i64) -> Checkpoint {
        Checkpoint::at(follow_key(scope, resource), json!(self), Position { major: generation, minor: self.listed_at })
    }
}

/// How many pages' worth of creation time (at the density a page showed)
/// a range keeps when it splits off its older part. At Stripe's latency
/// (300 ms) and a budget of 100 requests/s, 32 read the core resources in
/// fewer requests and less time than 8 (980 requests, 11.4 s, against
/// 1,147 and 14 s; measured with `bench/spine.py latency`).
pub const SPLIT_PAGES: i64 = 32;

/// Objects created in `[gte, lt)` (unix seconds), newest first, resuming
/// after the object `after` when set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub gte: i64,
    pub lt: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl Range {
    /// After a page whose oldest object is `last` (created `at`; its
    /// newest was created `newest`) and more follow: the objects left are
    /// those of `[gte, at]` after `last`. When `split` and the span allows
    /// it, its older part becomes a range of its own, paged alongside:
    /// halfway back, but no further than [`SPLIT_PAGES`] pages at the
    /// density this page showed (a range that starts at the epoch would
    /// otherwise halve empty decades first). Stripe's own sync engine
    /// subdivides this way, so the request budget, not the upstream's
    /// latency, bounds a backfill.
    pub fn next(&self, last: &str, at: i64, newest: i64, split: bool) -> Vec<Range> {
        let lt = at.saturating_add(1).min(self.lt);
        let rest = Range { gte: self.gte, lt, after: Some(last.to_string()) };
        if !split || lt - self.gte < 2 {
            return vec![rest];
        }
        let per_page = newest.saturating_sub(at).max(1);
        let mid = (self.gte + (lt - self.gte) / 2).max(lt.saturating_sub(per_page.saturating_mul(SPLIT_PAGES))).min(lt - 1);
        vec![Range { gte: mid, ..rest }, Range { gte: self.gte, lt: mid, after: None }]
    }
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
    pub fn checkpoint(&self, scope: &str, resource: &str, generation: i64) -> Checkpoint {
        Checkpoint::at(resource_key(scope, resource), json!(self), Position { major: generation, minor: self.fetched as i64 })
    }
}

fn meta_key(scope: &str) -> String {
    format!("{scope}/meta")
}

fn resource_key(scope: &str, resource: &str) -> String {
    format!("{scope}/backfill/{resource}")
}

fn follow_key(scope: &str, resource: &str) -> String {
    format!("{scope}/follow/{resource}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_with_more_splits_off_its_older_half_and_covers_the_rest() {
        let range = Range { gte: 0, lt: 1_000, after: None };
        // a page spanning seconds 600 to 900: sparse, so the split is halfway
        let next = range.next("cus_9", 600, 900, true);
        assert_eq!(
            next,
            [Range { gte: 300, lt: 601, after: Some("cus_9".into()) }, Range { gte: 0, lt: 300, after: None }],
            "the cursor keeps the newer half, second 600 included; the older half starts fresh"
        );
        assert_eq!(range.next("cus_9", 600, 900, false), [Range { gte: 0, lt: 601, after: Some("cus_9".into()) }]);
        // a dense page (seconds 600 to 605): the cursor keeps SPLIT_PAGES
        // pages' worth (less than half: 601 - 5 x 32 = 441)
        let from_epoch = Range { gte: 0, lt: 1_000, after: None };
        assert_eq!(from_epoch.next("cus_9", 600, 605, true)[1], Range { gte: 0, lt: 601 - 5 * SPLIT_PAGES, after: None });
        // one second cannot be split: its objects page by cursor
        let second = Range { gte: 600, lt: 601, after: None };
        assert_eq!(second.next("cus_8", 600, 600, true), [Range { gte: 600, lt: 601, after: Some("cus_8".into()) }]);
    }

    #[test]
    fn checkpoints_of_the_single_cursor_release_still_read() {
        let old: ResourceCheckpoint = serde_json::from_value(json!({"after": "cus_5", "done": false, "fetched": 300})).unwrap();
        assert_eq!((old.after.as_deref(), old.ranges, old.fetched), (Some("cus_5"), None, 300));
    }
}
