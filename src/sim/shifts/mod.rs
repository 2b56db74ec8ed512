//! The window API of a shift-planning service: it can only be asked "which
//! shifts start between these days". `GET /v2/shifts?start=YYYY-MM-DD&end=YYYY-MM-DD`
//! answers `{"shifts":[…]}` with every shift starting on those days
//! (inclusive, UTC). Live traffic edits, creates and deletes shifts.

pub mod routes;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

/// Seeded shifts start from this many days before the sim's first day…
pub const SEED_DAYS_BEFORE: i64 = 14;
/// …to this many days after it.
pub const SEED_DAYS_AFTER: i64 = 28;

const NOTES: &[&str] = &["", "opening", "closing", "inventory", "training a new hire", "covers for a colleague", "delivery expected"];
const LOCATIONS: usize = 8;

#[derive(Debug, Clone, Serialize)]
pub struct Shift {
    pub id: String,
    pub user: String,
    pub location: String,
    #[serde(serialize_with = "rfc3339")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub end: DateTime<Utc>,
    pub notes: String,
}

fn rfc3339<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

pub struct Shifts {
    by_id: BTreeMap<u64, Shift>,
    next_id: u64,
    users: u64,
    /// The day seeded shifts are placed around.
    first_day: NaiveDate,
    rng: StdRng,
}

impl Shifts {
    /// `count` shifts spread from two weeks before `today` to four weeks
    /// after it; the same seed and day give the same shifts.
    pub fn seeded(seed: u64, count: usize, today: NaiveDate) -> Self {
        let mut shifts = Shifts {
            by_id: BTreeMap::new(),
            next_id: 1,
            users: (count as u64 / 10).max(5),
            first_day: today,
            rng: StdRng::seed_from_u64(seed ^ 0x05_1f75),
        };
        for _ in 0..count {
            shifts.create();
        }
        shifts
    }

    fn create(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let day = self.first_day + Duration::days(self.rng.gen_range(-SEED_DAYS_BEFORE..=SEED_DAYS_AFTER));
        let start = day.and_hms_opt(self.rng.gen_range(6..18), [0, 15, 30, 45][self.rng.gen_range(0..4)], 0).expect("valid time").and_utc();
        let shift = Shift {
            id: format!("shf_{id:07}"),
            user: format!("usr_{:05}", self.rng.gen_range(1..=self.users)),
            location: format!("loc_{:02}", self.rng.gen_range(1..=LOCATIONS)),
            start,
            end: start + Duration::minutes(self.rng.gen_range(16..=40) * 15),
            notes: NOTES[self.rng.gen_range(0..NOTES.len())].to_string(),
        };
        self.by_id.insert(id, shift);
        id
    }

    fn random_id(&mut self) -> Option<u64> {
        let probe = self.rng.gen_range(1..self.next_id.max(2));
        self.by_id.range(probe..).next().or_else(|| self.by_id.iter().next()).map(|(id, _)| *id)
    }

    /// Edit a random shift (7 in 10), create one (2 in 10) or delete one.
    pub fn random_mutation(&mut self) {
        let roll: f64 = self.rng.r#gen();
        if roll < 0.2 || self.by_id.is_empty() {
            self.create();
            return;
        }
        let Some(id) = self.random_id() else { return };
        if roll > 0.9 {
            self.by_id.remove(&id);
            return;
        }
        self.edit(id);
    }

    /// Edit `count` distinct random shifts (benchmarks: "1% changed").
    pub fn edit_some(&mut self, count: usize) {
        let ids: Vec<u64> = self.by_id.keys().copied().collect();
        let step = (ids.len() / count.max(1)).max(1);
        for id in ids.into_iter().step_by(step).take(count) {
            self.edit(id);
        }
    }

    fn edit(&mut self, id: u64) {
        let users = self.users;
        let (rng, shifts) = (&mut self.rng, &mut self.by_id);
        let Some(shift) = shifts.get_mut(&id) else { return };
        match rng.gen_range(0..3) {
            0 => shift.user = format!("usr_{:05}", rng.gen_range(1..=users)),
            1 => shift.end = shift.start + Duration::minutes(rng.gen_range(16..=40) * 15),
            _ => shift.notes = format!("{} (rev {})", NOTES[rng.gen_range(1..NOTES.len())], rng.gen_range(0..1_000_000)),
        }
    }

    /// The answer to a window query: every shift starting on `from..=to`;
    /// with `broken`, led by a shift without an id (a fault).
    pub fn window_json(&self, from: NaiveDate, to: NaiveDate, broken: bool) -> String {
        let mut out = String::from("{\"shifts\":[");
        let mut first = true;
        if broken {
            let _ = write!(
                out,
                r#"{{"user":"usr_00001","location":"loc_01","start":"{from}T09:00:00Z","end":"{from}T17:00:00Z","notes":"no id"}}"#
            );
            first = false;
        }
        for shift in self.by_id.values() {
            let day = shift.start.date_naive();
            if day < from || day > to {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            // a Shift always serializes
            let _ = write!(out, "{}", serde_json::to_string(shift).unwrap_or_default());
        }
        out.push_str("]}");
        out
    }
}

/// Parse a window bound (`YYYY-MM-DD`).
pub fn parse_day(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_hold_the_shifts_starting_in_them() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let shifts = Shifts::seeded(7, 500, today);
        let all: serde_json::Value =
            serde_json::from_str(&shifts.window_json(today - Duration::days(100), today + Duration::days(100), false)).unwrap();
        assert_eq!(all["shifts"].as_array().unwrap().len(), 500);
        let one: serde_json::Value = serde_json::from_str(&shifts.window_json(today, today, false)).unwrap();
        let list = one["shifts"].as_array().unwrap();
        assert!(!list.is_empty() && list.len() < 100, "{}", list.len());
        assert!(list.iter().all(|s| s["start"].as_str().unwrap().starts_with("2026-11-22T")));
        let again = Shifts::seeded(7, 500, today);
        assert_eq!(again.window_json(today, today, false), shifts.window_json(today, today, false));
        let broken: serde_json::Value = serde_json::from_str(&shifts.window_json(today, today, true)).unwrap();
        assert_eq!(broken["shifts"].as_array().unwrap().len(), list.len() + 1);
        assert!(broken["shifts"][0].get("id").is_none());
    }
}
