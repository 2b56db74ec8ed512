//! WhenIWork's shifts API (v2), as `../shared/reference/wheniwork-shifts.md`
//! describes it: `POST /login` (a `W-Key` header and the user's email and
//! password) answers a token that expires; `GET /2/shifts?start=…&end=…`
//! with `W-Token` (or `Authorization: Bearer`) answers the shifts that start
//! in the window, in WhenIWork's envelope: RFC 2822 times, numeric ids,
//! the users, locations, positions and sites they reference side-loaded,
//! and with `deleted=true` the ids of shifts deleted in the window. Live
//! traffic edits, creates and deletes shifts and renames users.

pub mod routes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

/// Seeded shifts start from this many days before the sim's first day…
pub const SEED_DAYS_BEFORE: i64 = 14;
/// …to this many days after it.
pub const SEED_DAYS_AFTER: i64 = 28;

const NOTES: &[&str] = &["", "opening", "closing", "inventory", "training a new hire", "covers for a colleague", "delivery expected"];
const FIRST_NAMES: &[&str] = &["Ada", "Bo", "Chen", "Dee", "Eli", "Fatima", "Gus", "Hana", "Ivo", "June"];
const LAST_NAMES: &[&str] = &["Lovelace", "Nakamura", "Okafor", "Petrov", "Quist", "Rossi", "Silva", "Tanaka"];
const COLORS: &[&str] = &["cc0000", "0066cc", "009933", "ff9900", "663399"];
const LOCATIONS: u64 = 8;
const POSITIONS: u64 = 5;
/// The workplace's account id.
const ACCOUNT_ID: u64 = 4_242;
/// The workplace's offset from UTC: times are written in it (as WhenIWork
/// writes them in the account's time zone).
const OFFSET_SECS: i32 = -6 * 3600;

#[derive(Debug, Clone)]
pub struct Shift {
    pub id: u64,
    pub user_id: u64,
    pub location_id: u64,
    pub position_id: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub break_time: f64,
    pub color: &'static str,
    pub notes: String,
    pub published: bool,
    pub acknowledged: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Its JSON, rendered at every change: a window answer is mostly these.
    text: String,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: u64,
    pub first_name: String,
    pub last_name: String,
    pub updated_at: DateTime<Utc>,
}

/// A time as WhenIWork writes it: `Sun, 07 Oct 2018 21:00:00 -0600`.
pub fn rfc2822(at: DateTime<Utc>) -> String {
    let offset = FixedOffset::east_opt(OFFSET_SECS).expect("a valid offset");
    at.with_timezone(&offset).format("%a, %d %b %Y %H:%M:%S %z").to_string()
}

impl Shift {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "account_id": ACCOUNT_ID,
            "user_id": self.user_id,
            "location_id": self.location_id,
            "position_id": self.position_id,
            "site_id": site_of(self.location_id),
            "start_time": rfc2822(self.start),
            "end_time": rfc2822(self.end),
            "break_time": self.break_time,
            "color": self.color,
            "notes": self.notes,
            "instances": 1,
            "published": self.published,
            "published_date": if self.published { Value::String(rfc2822(self.created_at)) } else { Value::Null },
            "notified_at": Value::Null,
            "acknowledged": self.acknowledged,
            "acknowledged_at": "",
            "creator_id": 1,
            "is_open": false,
            "linked_users": Value::Null,
            "shiftchain_key": "",
            "created_at": rfc2822(self.created_at),
            "updated_at": rfc2822(self.updated_at),
        })
    }
}

/// Every location has one site.
fn site_of(location_id: u64) -> u64 {
    location_id + 100
}

impl User {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "account_id": ACCOUNT_ID,
            "role": 3,
            "email": format!("{}.{}@example.com", self.first_name.to_lowercase(), self.id),
            "first_name": self.first_name,
            "last_name": self.last_name,
            "is_active": true,
            "updated_at": rfc2822(self.updated_at),
        })
    }
}

fn location_json(id: u64) -> Value {
    json!({"id": id, "account_id": ACCOUNT_ID, "name": format!("Store {id}"), "address": format!("{id} Main Street"), "is_default": id == 1})
}

const POSITION_NAMES: &[&str] = &["Cashier", "Stock", "Barista", "Manager", "Driver"];

fn position_json(id: u64) -> Value {
    let at = (id as usize).saturating_sub(1);
    json!({"id": id, "account_id": ACCOUNT_ID, "name": POSITION_NAMES[at % POSITION_NAMES.len()], "color": COLORS[at % COLORS.len()]})
}

fn site_json(id: u64) -> Value {
    json!({"id": id, "account_id": ACCOUNT_ID, "location_id": id - 100, "name": format!("Site {}", id - 100), "color": "cccccc"})
}

/// What a window query asks for.
#[derive(Debug, Clone, Default)]
pub struct WindowAsk {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `deleted=true`: add `deleted_ids`.
    pub deleted: bool,
    /// `limit`: at most this many shifts.
    pub limit: Option<usize>,
}

pub struct Shifts {
    by_id: BTreeMap<u64, Shift>,
    users: BTreeMap<u64, User>,
    /// Deleted shifts and when they started: `deleted_ids` of a window.
    deleted: BTreeMap<u64, DateTime<Utc>>,
    next_id: u64,
    /// The day seeded shifts are placed around.
    first_day: NaiveDate,
    rng: StdRng,
    /// Tokens `/login` issued, and when each expires.
    tokens: HashMap<String, Instant>,
    /// How long a token lives.
    pub token_ttl: StdDuration,
    /// Logins answered (for tests: a token expired and was renewed).
    pub logins: u64,
}

impl Shifts {
    /// `count` shifts spread from two weeks before `today` to four weeks
    /// after it; the same seed and day give the same shifts.
    pub fn seeded(seed: u64, count: usize, today: NaiveDate) -> Self {
        let users = (count as u64 / 10).max(5);
        let created = today.and_hms_opt(0, 0, 0).expect("midnight").and_utc() - Duration::days(30);
        let mut shifts = Shifts {
            by_id: BTreeMap::new(),
            users: BTreeMap::new(),
            deleted: BTreeMap::new(),
            next_id: 27_000,
            first_day: today,
            rng: StdRng::seed_from_u64(seed ^ 0x05_1f75),
            tokens: HashMap::new(),
            token_ttl: StdDuration::from_secs(604_800),
            logins: 0,
        };
        for id in 1..=users {
            let first_name = FIRST_NAMES[shifts.rng.gen_range(0..FIRST_NAMES.len())].to_string();
            let last_name = LAST_NAMES[shifts.rng.gen_range(0..LAST_NAMES.len())].to_string();
            shifts.users.insert(100 + id, User { id: 100 + id, first_name, last_name, updated_at: created });
        }
        for _ in 0..count {
            shifts.create(created);
        }
        shifts
    }

    fn create(&mut self, now: DateTime<Utc>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let day = self.first_day + Duration::days(self.rng.gen_range(-SEED_DAYS_BEFORE..=SEED_DAYS_AFTER));
        let start = day.and_hms_opt(self.rng.gen_range(6..18), [0, 15, 30, 45][self.rng.gen_range(0..4)], 0).expect("valid time").and_utc();
        let user_count = self.users.len() as u64;
        let shift = Shift {
            id,
            user_id: 100 + self.rng.gen_range(1..=user_count),
            location_id: self.rng.gen_range(1..=LOCATIONS),
            position_id: self.rng.gen_range(1..=POSITIONS),
            start,
            end: start + Duration::minutes(self.rng.gen_range(16..=40) * 15),
            break_time: [0.0, 0.5, 1.0][self.rng.gen_range(0..3)],
            color: COLORS[self.rng.gen_range(0..COLORS.len())],
            notes: NOTES[self.rng.gen_range(0..NOTES.len())].to_string(),
            published: self.rng.gen_bool(0.8),
            acknowledged: false,
            created_at: now,
            updated_at: now,
            text: String::new(),
        };
        let text = shift.json().to_string();
        self.by_id.insert(id, Shift { text, ..shift });
        id
    }

    fn random_id(&mut self) -> Option<u64> {
        let probe = self.rng.gen_range(27_000..self.next_id.max(27_001));
        self.by_id.range(probe..).next().or_else(|| self.by_id.iter().next()).map(|(id, _)| *id)
    }

    /// Edit a random shift (6 in 10), create one (2 in 10), delete one or
    /// rename a user (1 in 10 each).
    pub fn random_mutation(&mut self) {
        let now = Utc::now();
        let roll: f64 = self.rng.r#gen();
        if roll < 0.2 || self.by_id.is_empty() {
            self.create(now);
            return;
        }
        if roll > 0.9 {
            let id = 101 + self.rng.gen_range(0..self.users.len() as u64);
            let name = FIRST_NAMES[self.rng.gen_range(0..FIRST_NAMES.len())];
            if let Some(user) = self.users.get_mut(&id) {
                user.first_name = format!("{name} {}", self.rng.gen_range(0..1_000));
                user.updated_at = now;
            }
            return;
        }
        let Some(id) = self.random_id() else { return };
        if roll > 0.8 {
            if let Some(shift) = self.by_id.remove(&id) {
                self.deleted.insert(id, shift.start);
            }
            return;
        }
        self.edit(id, now);
    }

    /// Edit `count` distinct random shifts (benchmarks: "1% changed").
    pub fn edit_some(&mut self, count: usize) {
        let ids: Vec<u64> = self.by_id.keys().copied().collect();
        let step = (ids.len() / count.max(1)).max(1);
        let now = Utc::now();
        for id in ids.into_iter().step_by(step).take(count) {
            self.edit(id, now);
        }
    }

    fn edit(&mut self, id: u64, now: DateTime<Utc>) {
        let user_count = self.users.len() as u64;
        let (rng, shifts) = (&mut self.rng, &mut self.by_id);
        let Some(shift) = shifts.get_mut(&id) else { return };
        match rng.gen_range(0..4) {
            0 => shift.user_id = 100 + rng.gen_range(1..=user_count),
            1 => shift.end = shift.start + Duration::minutes(rng.gen_range(16..=40) * 15),
            2 => shift.published = !shift.published,
            _ => shift.notes = format!("{} (rev {})", NOTES[rng.gen_range(1..NOTES.len())], rng.gen_range(0..1_000_000)),
        }
        shift.updated_at = now;
        shift.text = shift.json().to_string();
    }

    /// A new token for a login.
    pub fn login(&mut self) -> String {
        let now = Instant::now();
        self.tokens.retain(|_, expires| *expires > now);
        let token = format!("wiw_{:032x}", self.rng.r#gen::<u128>());
        self.tokens.insert(token.clone(), now + self.token_ttl);
        self.logins += 1;
        token
    }

    /// Is this a token `/login` issued that has not expired?
    pub fn token_valid(&self, token: &str) -> bool {
        self.tokens.get(token).is_some_and(|expires| *expires > Instant::now())
    }

    /// The answer to a window query: the shifts starting in it, the objects
    /// they reference side-loaded, and with `deleted` the ids of shifts
    /// deleted in it; with `broken`, led by a shift without an id (a fault).
    pub fn window_json(&self, ask: &WindowAsk, broken: bool) -> String {
        let in_window = |at: &DateTime<Utc>| *at >= ask.start && *at <= ask.end;
        let mut shifts: Vec<&Shift> = self.by_id.values().filter(|s| in_window(&s.start)).collect();
        shifts.sort_by_key(|s| (s.start, s.id));
        if let Some(limit) = ask.limit {
            shifts.truncate(limit);
        }
        let users: BTreeSet<u64> = shifts.iter().map(|s| s.user_id).collect();
        let locations: BTreeSet<u64> = shifts.iter().map(|s| s.location_id).collect();
        let positions: BTreeSet<u64> = shifts.iter().map(|s| s.position_id).collect();
        let mut list: Vec<&str> = shifts.iter().map(|s| s.text.as_str()).collect();
        let bad = broken.then(|| {
            let mut bad = shifts.first().map(|s| s.json()).unwrap_or_else(|| json!({"start_time": rfc2822(ask.start)}));
            if let Some(fields) = bad.as_object_mut() {
                fields.remove("id");
            }
            bad.to_string()
        });
        if let Some(bad) = &bad {
            list.insert(0, bad);
        }
        let mut rest = json!({
            "users": users.iter().filter_map(|id| self.users.get(id)).map(User::json).collect::<Vec<_>>(),
            "locations": locations.iter().map(|id| location_json(*id)).collect::<Vec<_>>(),
            "positions": positions.iter().map(|id| position_json(*id)).collect::<Vec<_>>(),
            "sites": locations.iter().map(|id| site_json(site_of(*id))).collect::<Vec<_>>(),
        });
        if ask.deleted {
            rest["deleted_ids"] = self.deleted.iter().filter(|(_, start)| in_window(start)).map(|(id, _)| json!(id)).collect();
        }
        // the envelope around the shifts' own texts; `rest` is an object
        let rest = rest.to_string();
        format!(
            r#"{{"start":{},"end":{},"shifts":[{}],{}"#,
            json!(rfc2822(ask.start)),
            json!(rfc2822(ask.end)),
            list.join(","),
            rest.strip_prefix('{').unwrap_or(&rest)
        )
    }
}

/// A window bound as WhenIWork takes it: ISO 8601 with an offset,
/// `2014-03-05 00:00:00` (UTC), or a day (its first second, or for an
/// `end` its last).
pub fn parse_bound(text: &str, end: bool) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    if let Ok(at) = DateTime::parse_from_rfc2822(text) {
        return Some(at.with_timezone(&Utc));
    }
    if let Ok(at) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
        return Some(Utc.from_utc_datetime(&at));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let time = if end { day.and_hms_opt(23, 59, 59)? } else { day.and_hms_opt(0, 0, 0)? };
    Some(Utc.from_utc_datetime(&time))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(from: NaiveDate, to: NaiveDate) -> WindowAsk {
        WindowAsk {
            start: parse_bound(&from.to_string(), false).unwrap(),
            end: parse_bound(&to.to_string(), true).unwrap(),
            deleted: true,
            limit: None,
        }
    }

    #[test]
    fn windows_hold_the_shifts_starting_in_them_in_wheniworks_shape() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let shifts = Shifts::seeded(7, 500, today);
        let answer = |shifts: &Shifts, ask: &WindowAsk, broken| serde_json::from_str::<Value>(&shifts.window_json(ask, broken)).unwrap();
        let all = answer(&shifts, &ask(today - Duration::days(100), today + Duration::days(100)), false);
        assert_eq!(all["shifts"].as_array().unwrap().len(), 500);
        let one = answer(&shifts, &ask(today, today), false);
        let list = one["shifts"].as_array().unwrap();
        assert!(!list.is_empty() && list.len() < 100, "{}", list.len());
        for shift in list {
            assert!(shift["id"].is_u64(), "numeric ids: {shift}");
            let start = DateTime::parse_from_rfc2822(shift["start_time"].as_str().unwrap()).unwrap();
            assert_eq!(start.with_timezone(&Utc).date_naive(), today);
            assert!(shift["start_time"].as_str().unwrap().ends_with("-0600"), "written in the workplace's offset");
            let user = shift["user_id"].as_u64().unwrap();
            assert!(one["users"].as_array().unwrap().iter().any(|u| u["id"] == user), "the user is side-loaded");
        }
        assert_eq!(one["deleted_ids"], json!([]));
        let again = Shifts::seeded(7, 500, today);
        assert_eq!(answer(&again, &ask(today, today), false), one, "the same seed gives the same shifts");
        let broken = answer(&shifts, &ask(today, today), true);
        assert_eq!(broken["shifts"].as_array().unwrap().len(), list.len() + 1);
        assert!(broken["shifts"][0].get("id").is_none());
        let short = answer(&shifts, &WindowAsk { limit: Some(2), ..ask(today, today) }, false);
        assert_eq!(short["shifts"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn deleted_shifts_are_listed_by_id_in_their_window() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let mut shifts = Shifts::seeded(7, 200, today);
        let wide = ask(today - Duration::days(100), today + Duration::days(100));
        let answer = |shifts: &Shifts, ask: &WindowAsk| serde_json::from_str::<Value>(&shifts.window_json(ask, false)).unwrap();
        let victim = answer(&shifts, &wide)["shifts"][0]["id"].as_u64().unwrap();
        let start = shifts.by_id.remove(&victim).unwrap().start;
        shifts.deleted.insert(victim, start);
        let after = answer(&shifts, &wide);
        assert_eq!(after["deleted_ids"], json!([victim]));
        assert!(after["shifts"].as_array().unwrap().iter().all(|s| s["id"] != victim));
        let without = answer(&shifts, &WindowAsk { deleted: false, ..wide });
        assert!(without.get("deleted_ids").is_none());
    }

    #[test]
    fn tokens_expire() {
        let mut shifts = Shifts::seeded(7, 10, NaiveDate::from_ymd_opt(2026, 11, 22).unwrap());
        shifts.token_ttl = StdDuration::from_millis(50);
        let token = shifts.login();
        assert!(shifts.token_valid(&token));
        assert!(!shifts.token_valid("wiw_other"));
        std::thread::sleep(StdDuration::from_millis(80));
        assert!(!shifts.token_valid(&token));
    }

    #[test]
    fn bounds_are_read_as_wheniwork_takes_them() {
        let at = |t: &str, end| parse_bound(t, end).map(|t| t.to_rfc3339());
        assert_eq!(at("2014-03-05", false).as_deref(), Some("2014-03-05T00:00:00+00:00"));
        assert_eq!(at("2014-03-05", true).as_deref(), Some("2014-03-05T23:59:59+00:00"));
        assert_eq!(at("2014-03-05 10:00:00", false).as_deref(), Some("2014-03-05T10:00:00+00:00"));
        assert_eq!(at("2014-03-05T10:00:00-06:00", false).as_deref(), Some("2014-03-05T16:00:00+00:00"));
        assert_eq!(at("soon", false), None);
    }
}
