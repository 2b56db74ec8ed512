//! Late events. Stripe's events list is eventually consistent: an event can
//! show after newer ones, behind a cursor that has moved past it. So each
//! poll reads the last `lookback_secs` of events by creation time and
//! applies those not applied yet. What was applied within that span is
//! remembered here, committed with the cursor, so a restart keeps it.
//!
//! Reading the whole span on every poll costs a page per hundred events
//! in it, each poll: at 30 events a second and a 30 s span, nine pages
//! twice a second. So most polls read the last [`NEAR_SECS`] (where nearly
//! every late event shows, in the same request as the new ones), and the
//! whole span is read [`SWEEPS_PER_SPAN`] times per span.
//!
//! An event that shows late for an object already at or past its second
//! (Stripe's `created` has one-second resolution, so order within a second
//! is unknown) is not applied as a snapshot, which could be older than the
//! mirror's: the object is read again instead.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::Checkpoint;

/// Added to this host's clock for when an object was read again: the
/// upstream's clock may be ahead of ours.
pub const CLOCK_MARGIN_SECS: i64 = 2;

/// The span most polls read again, in seconds.
pub const NEAR_SECS: i64 = 3;

/// How often the whole span is read per its length: every 10 s for 30 s.
pub const SWEEPS_PER_SPAN: u64 = 3;

/// Checkpoint key `{scope}/recent`: the events applied within the lookback
/// span and the objects read again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recent {
    /// Creation time (unix seconds) of the newest event applied: the
    /// lookback reads from `lookback_secs` before it (the upstream's clock,
    /// not ours).
    #[serde(default)]
    pub newest: Option<i64>,
    /// Events created at or before this were covered by the backfill (the
    /// newest event before it began): never applied by the tail.
    #[serde(default)]
    pub floor: Option<i64>,
    /// Events applied within the span: id → creation time.
    #[serde(default)]
    pub applied: BTreeMap<String, i64>,
    /// Objects read again (`{object}/{id}`) → when (unix seconds, with a
    /// margin): an event of theirs created before then holds an older state.
    #[serde(default)]
    pub read: BTreeMap<String, i64>,
}

/// A poll's events sorted: snapshots to apply (oldest first) and late
/// events whose objects are read again (one per object).
#[derive(Debug, Default)]
pub struct Triage {
    pub apply: Vec<Value>,
    pub refetch: Vec<Value>,
}

fn created(event: &Value) -> i64 {
    event["created"].as_i64().unwrap_or_default()
}

fn object_key(event: &Value) -> String {
    let object = &event["data"]["object"];
    format!("{}/{}", object["object"].as_str().unwrap_or_default(), object["id"].as_str().unwrap_or_default())
}

fn event_id(event: &Value) -> &str {
    event["id"].as_str().unwrap_or_default()
}

impl Recent {
    /// Where a poll's lookback starts (unix seconds), once an event was
    /// applied.
    pub fn since(&self, lookback_secs: i64) -> Option<i64> {
        self.newest.map(|newest| newest - lookback_secs)
    }

    /// Sort events (oldest first, in the list's order): those applied
    /// already, or covered by the backfill, are dropped. An event listed
    /// before one of its object's applied ones showed late: its snapshot is
    /// older than the mirror's, so the object is read again; as it is for
    /// an event created before its object was last read again. The rest are
    /// applied in order. Each is remembered as applied.
    pub fn triage(&mut self, events: Vec<Value>) -> Triage {
        let mut last_applied: HashMap<String, usize> = HashMap::new();
        for (at, event) in events.iter().enumerate() {
            if self.applied.contains_key(event_id(event)) {
                last_applied.insert(object_key(event), at);
            }
        }
        let mut triage = Triage::default();
        let mut refetching = BTreeSet::new();
        for (position, event) in events.into_iter().enumerate() {
            let (id, at, key) = (event_id(&event).to_string(), created(&event), object_key(&event));
            if self.applied.contains_key(&id) || self.floor.is_some_and(|floor| at <= floor) {
                continue;
            }
            self.applied.insert(id, at);
            self.newest = Some(self.newest.map_or(at, |n| n.max(at)));
            let late = last_applied.get(&key).is_some_and(|applied| *applied > position);
            if late || self.read.get(&key).is_some_and(|read| *read >= at) {
                if refetching.insert(key) {
                    triage.refetch.push(event);
                }
            } else {
                triage.apply.push(event);
            }
        }
        triage
    }

    /// An object was read again at `at` (unix seconds, this host's clock
    /// and a margin for the upstream's).
    pub fn read_at(&mut self, event: &Value, at: i64) {
        let last = self.read.entry(object_key(event)).or_insert(at);
        *last = (*last).max(at);
    }

    /// Remember events as applied without sorting them (the catch-up after
    /// a backfill applies the newest per object, which covers the rest).
    pub fn remember(&mut self, events: &[Value]) {
        for event in events {
            let at = created(event);
            self.applied.insert(event_id(event).to_string(), at);
            self.newest = Some(self.newest.map_or(at, |n| n.max(at)));
        }
    }

    /// Forget what is older than the span (and a second, for the events
    /// of the second it starts in).
    pub fn prune(&mut self, lookback_secs: i64) {
        let Some(floor) = self.since(lookback_secs + 1) else { return };
        self.applied.retain(|_, at| *at >= floor);
        self.read.retain(|_, at| *at >= floor);
    }

    pub fn checkpoint(&self, scope: &str) -> Checkpoint {
        Checkpoint::unordered(format!("{scope}/recent"), json!(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, object: &str, created: i64) -> Value {
        json!({"id": id, "object": "event", "created": created, "type": "customer.updated",
               "data": {"object": {"id": object, "object": "customer"}}})
    }

    fn ids(events: &[Value]) -> Vec<&str> {
        events.iter().map(event_id).collect()
    }

    #[test]
    fn a_late_event_is_applied_once_and_one_listed_before_its_objects_applied_ones_is_read_again() {
        let mut recent = Recent { floor: Some(90), ..Recent::default() };
        let first = recent.triage(vec![event("evt_0", "cus_a", 90), event("evt_1", "cus_a", 100), event("evt_3", "cus_b", 105)]);
        assert_eq!(ids(&first.apply), ["evt_1", "evt_3"], "evt_0 is covered by the backfill");
        assert_eq!(recent.since(30), Some(75));
        // evt_2 shows late, listed before cus_b's applied evt_3
        let second = recent.triage(vec![event("evt_1", "cus_a", 100), event("evt_2", "cus_b", 103), event("evt_3", "cus_b", 105)]);
        assert!(second.apply.is_empty(), "{:?}", second.apply);
        assert_eq!(ids(&second.refetch), ["evt_2"]);
        // listed after what was applied of their objects: applied in order,
        // two of one second too
        let third = recent.triage(vec![
            event("evt_1", "cus_a", 100),
            event("evt_4", "cus_a", 100),
            event("evt_5", "cus_c", 106),
            event("evt_6", "cus_c", 106),
        ]);
        assert_eq!(ids(&third.apply), ["evt_4", "evt_5", "evt_6"]);
        assert_eq!(recent.newest, Some(106));
        // cus_c was read again at second 110: an event created before then
        // holds an older state
        recent.read_at(&third.apply[1], 110);
        let fourth = recent.triage(vec![event("evt_7", "cus_c", 108), event("evt_8", "cus_c", 111)]);
        assert_eq!((ids(&fourth.refetch), ids(&fourth.apply)), (vec!["evt_7"], vec!["evt_8"]));
    }

    #[test]
    fn what_is_older_than_the_span_is_forgotten() {
        let mut recent = Recent::default();
        recent.remember(&[event("evt_1", "cus_a", 10), event("evt_2", "cus_b", 50), event("evt_3", "cus_a", 60)]);
        recent.read_at(&event("evt_2", "cus_b", 50), 52);
        recent.prune(30);
        assert_eq!(recent.applied.keys().collect::<Vec<_>>(), ["evt_2", "evt_3"]);
        recent.prune(5);
        assert_eq!(recent.applied.keys().collect::<Vec<_>>(), ["evt_3"]);
        assert!(recent.read.is_empty());
    }
}
