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
    /// Its creation time: events created at or before it are covered by the
    /// backfill (the lookback does not apply them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_before_backfill_created: Option<i64>,
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

/// A range whose rest holds fewer pages' worth of creation time than this
/// (at the density its last page showed) is not split.
pub const MIN_SPLIT_PAGES: i64 = 2;

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
    /// those of `[gte, at]` after `last`, returned as up to `parts` ranges
    /// to page alongside. The first keeps the cursor and no more than
    /// [`SPLIT_PAGES`] pages at the density this page showed, or the span
    /// divided by `parts` when that is less; each further one, older, the same width, and
    /// the last whatever is left (at least that width) (a range that starts at the epoch would
    /// otherwise halve empty decades first). A rest of fewer than
    /// [`MIN_SPLIT_PAGES`] pages is not split. Stripe's own sync engine
    /// subdivides this way, so the request budget, not the upstream's
    /// latency, bounds a backfill.
    pub fn next(&self, last: &str, at: i64, newest: i64, parts: usize) -> Vec<Range> {
        let lt = at.saturating_add(1).min(self.lt);
        let rest = Range { gte: self.gte, lt, after: Some(last.to_string()) };
        let per_page = newest.saturating_sub(at).max(1);
        let span = lt - self.gte;
        // a rest that holds less than MIN_SPLIT_PAGES pages at this density
        // is paged on by its cursor: split, its older part would mostly
        // cost a request that finds nothing
        if parts < 2 || span < 2 || span / per_page < MIN_SPLIT_PAGES {
            return vec![rest];
        }
        let width = per_page.saturating_mul(SPLIT_PAGES).min(span / parts as i64).max(1);
        let mut ranges = vec![Range { gte: lt - width, ..rest }];
        let mut upper = lt - width;
        while ranges.len() + 1 < parts && upper - self.gte >= 2 * width {
            ranges.push(Range { gte: upper - width, lt: upper, after: None });
            upper -= width;
        }
        ranges.push(Range { gte: self.gte, lt: upper, after: None });
        ranges
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
    fn a_range_with_more_splits_off_its_older_part_and_covers_the_rest() {
        let range = Range { gte: 0, lt: 1_000, after: None };
        let cursor = |gte, lt| Range { gte, lt, after: Some("cus_9".into()) };
        let fresh = |gte, lt| Range { gte, lt, after: None };
        // a page spanning seconds 600 to 900: sparse, so the split is halfway
        assert_eq!(range.next("cus_9", 600, 900, 2), [cursor(301, 601), fresh(0, 301)], "the cursor keeps second 600");
        assert_eq!(range.next("cus_9", 600, 900, 1), [cursor(0, 601)]);
        // a dense page (seconds 600 to 605): each range holds SPLIT_PAGES
        // pages' worth (5 s a page), the last one what is left
        let w = 5 * SPLIT_PAGES;
        assert_eq!(range.next("cus_9", 600, 605, 2), [cursor(601 - w, 601), fresh(0, 601 - w)]);
        let long = Range { gte: 0, lt: 10_000, after: None };
        assert_eq!(
            long.next("cus_9", 9_000, 9_005, 4),
            [cursor(9_001 - w, 9_001), fresh(9_001 - 2 * w, 9_001 - w), fresh(9_001 - 3 * w, 9_001 - 2 * w), fresh(0, 9_001 - 3 * w)]
        );
        // a rest of fewer than SPLIT_PAGES pages per part is split evenly
        // into the parts (each round trip then reads as much as it can); the
        // last is never narrower than the others
        assert_eq!(range.next("cus_9", 600, 605, 4), [cursor(451, 601), fresh(301, 451), fresh(151, 301), fresh(0, 151)]);
        let eighths: Vec<Range> = (1..7).map(|i| fresh(301 - 37 * (i + 1), 301 - 37 * i)).collect();
        assert_eq!(range.next("cus_9", 300, 305, 8), [vec![cursor(264, 301)], eighths, vec![fresh(0, 42)]].concat());
        // what is left fits in less than MIN_SPLIT_PAGES pages: no split
        let short = Range { gte: 595, lt: 1_000, after: None };
        assert_eq!(short.next("cus_9", 600, 605, 4), [Range { gte: 595, lt: 601, after: Some("cus_9".into()) }]);
        // one second cannot be split: its objects page by cursor
        let second = Range { gte: 600, lt: 601, after: None };
        assert_eq!(second.next("cus_8", 600, 600, 4), [Range { gte: 600, lt: 601, after: Some("cus_8".into()) }]);
        // however split, the ranges tile [gte, at] without gap or overlap
        for parts in 1..6 {
            let next = range.next("cus_9", 600, 603, parts);
            assert!(next.windows(2).all(|w| w[0].gte == w[1].lt), "{next:?}");
            assert_eq!((next[0].lt, next.last().unwrap().gte), (601, 0));
        }
    }

    #[test]
    fn checkpoints_of_the_single_cursor_release_still_read() {
        let old: ResourceCheckpoint = serde_json::from_value(json!({"after": "cus_5", "done": false, "fetched": 300})).unwrap();
        assert_eq!((old.after.as_deref(), old.ranges, old.fetched), (Some("cus_5"), None, 300));
    }
}
