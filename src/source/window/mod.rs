//! The `window` source: an API that can only be asked "which items fall
//! between these days" (the shift-planning case). Every run fetches the
//! window around today, compares each item's fingerprint with the last one
//! emitted, and stores and emits only new and changed items; items that
//! vanished from days the window still covers are deleted. The next run
//! starts `sleep_period_secs` after this one ended.
//!
//! - `config`: the validated `[[sources]]` entry
//! - `dedupe`: where fingerprints live (the store's ledger, or Redis)

pub mod config;
pub mod dedupe;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use config::WindowConfig;

use crate::source::declarative::paginate::with_param;
use crate::source::declarative::{self, TimeFormat};
use crate::source::drift::{Drifted, ResourceDrift, Tally, differing_fields};
use crate::source::http::{Client, ClientError};
use crate::source::{ScopeStatus, SourceStatus};
use crate::store::ledger::{LedgerEntry, LedgerOp};
use crate::store::{Batch, Mutation, Origin, Store, StoreError, Write};
use dedupe::Dedupe;

/// Mirror writes (with their ledger entries) per transaction.
const CHUNK: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("dedupe redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{url}: item {index}: {reason}; nothing of this run was applied")]
    Item { url: String, index: usize, reason: String },
    #[error("{0}")]
    Config(String),
}

impl WindowError {
    /// The client error no retry can cure, if this is one.
    pub fn permanent(&self) -> Option<&ClientError> {
        match self {
            WindowError::Client(e) if e.is_permanent() => Some(e),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            WindowError::Client(e) => e.kind(),
            WindowError::Store(_) => "store",
            WindowError::Redis(_) => "dedupe_redis",
            WindowError::Item { .. } => "item_unreadable",
            WindowError::Config(_) => "config",
        }
    }
}

/// One item of a window, checked and fingerprinted.
struct Item {
    key: String,
    day: String,
    fingerprint: String,
    data: Value,
}

/// What one read of the window holds.
#[derive(Default)]
struct Window {
    /// Its first and last day (`YYYY-MM-DD`).
    from: String,
    to: String,
    items: Vec<Item>,
    /// Side-loaded objects by object type, then id.
    sideloads: BTreeMap<String, BTreeMap<String, Value>>,
    /// Ids the answer says were deleted.
    deleted: HashSet<String>,
    requests: u64,
}

/// What one run did (the `window_sync` log line).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub fetched: u64,
    pub new: u64,
    pub changed: u64,
    /// Known items whose fingerprint had expired: emitted again.
    pub expired: u64,
    pub deleted: u64,
    pub skipped: u64,
    /// Side-loaded objects read (stored when new or changed).
    pub sideloaded: u64,
    /// Requests the run made (spans and pages).
    pub requests: u64,
    /// Change log entries written.
    pub changes: u64,
}

/// A window source's runs; [`run`] loops over them.
pub struct Runner {
    config: WindowConfig,
    tz: chrono_tz::Tz,
    client: Client,
    dedupe: Dedupe,
    store: Arc<dyn Store>,
}

/// Run a window source until the task is dropped.
pub async fn run(config: WindowConfig, store: Arc<dyn Store>, status: Arc<SourceStatus>) -> Result<(), WindowError> {
    let runner = Runner::new(config, store).await?;
    let scope = status.add_scope(None);
    status.set_scopes_ready();
    runner.run(&status, &scope).await;
    Ok(())
}

impl Runner {
    /// Connect to the upstream and, with `dedupe_url`, to Redis.
    pub async fn new(config: WindowConfig, store: Arc<dyn Store>) -> Result<Runner, WindowError> {
        let tz = config.timezone().map_err(WindowError::Config)?;
        let client = config.connection().client(store.clone(), "window")?;
        let dedupe = Dedupe::connect(config.dedupe_url.as_deref(), &config.name).await?;
        Ok(Runner { config, tz, client, dedupe, store })
    }

    async fn run(&self, status: &SourceStatus, scope: &ScopeStatus) {
        let name = &self.config.name;
        let max_backoff = Duration::from_millis(self.config.retry_max_backoff_ms);
        crate::source::poll_rounds(status, scope, name, "window_sync", max_backoff, WindowError::permanent, || async {
            let started = std::time::Instant::now();
            let report = self.run_once(Utc::now()).await?;
            tracing::info!(kind = "window_sync", source = %name, fetched = report.fetched, new = report.new, changed = report.changed,
                expired = report.expired, deleted = report.deleted, skipped = report.skipped, sideloaded = report.sideloaded,
                requests = report.requests, changes = report.changes, duration_ms = started.elapsed().as_millis() as u64, "window synced");
            metrics::counter!("tributary_items_fetched_total", "source" => name.clone()).increment(report.fetched);
            metrics::counter!("tributary_items_changed_total", "source" => name.clone()).increment(report.changes);
            Ok(Duration::from_secs(self.config.sleep_period_secs))
        })
        .await
    }

    /// The window around `now`: its first and last day, its items (every
    /// one checked before any is used), side-loaded objects and deleted
    /// ids, every span and page read.
    async fn fetch(&self, now: DateTime<Utc>) -> Result<Window, WindowError> {
        let c = &self.config;
        let today = now.with_timezone(&self.tz).date_naive();
        let from = today.checked_sub_days(Days::new(c.days_prior.into())).unwrap_or(today);
        let to = today.checked_add_days(Days::new(c.days_ahead.into())).unwrap_or(today);
        let mut window = Window { from: day_text(from), to: day_text(to), ..Window::default() };
        let mut index: HashMap<String, usize> = HashMap::new();
        for (first, last) in spans(from, to, c.max_span_days) {
            let path = self.window_path(first, last)?;
            let requests = declarative::each_page(&self.client, &c.paginator, &path, |url, answer| {
                let items = self.page_items(answer, url)?;
                let count = items.len();
                for item in items {
                    // a later page or span that lists an item again wins
                    match index.get(&item.key) {
                        Some(&at) => window.items[at] = item,
                        None => {
                            index.insert(item.key.clone(), window.items.len());
                            window.items.push(item);
                        }
                    }
                }
                for (object, path) in &c.sideloads {
                    let Some(Value::Array(list)) = path.take(answer) else { continue };
                    let objects = window.sideloads.entry(object.clone()).or_default();
                    for (i, value) in list.into_iter().enumerate() {
                        let Some(id) = c.sideload_id_path.text(&value) else {
                            let reason = format!("side-loaded {object} {i}: no '{}' (a non-empty string or a number)", c.sideload_id_path);
                            return Err(WindowError::Item { url: url.to_string(), index: i, reason });
                        };
                        objects.insert(id, value);
                    }
                }
                if let Some(path) = &c.deleted_ids_path
                    && let Some(ids) = path.get(answer)
                {
                    let Some(ids) = ids.as_array() else {
                        return Err(ClientError::Shape { url: url.to_string(), reason: format!("'{path}' is not a list of ids") }.into());
                    };
                    window.deleted.extend(ids.iter().filter_map(declarative::select::id_text));
                }
                Ok::<_, WindowError>(count)
            })
            .await?;
            window.requests += requests;
        }
        Ok(window)
    }

    /// The request of the days `first..=last`, written as `param_format` says.
    fn window_path(&self, first: NaiveDate, last: NaiveDate) -> Result<String, WindowError> {
        let c = &self.config;
        let at = |day: NaiveDate, end: bool| {
            let time = match end && !c.param_format.is_date() {
                true => day.and_hms_opt(23, 59, 59),
                false => day.and_hms_opt(0, 0, 0),
            };
            let local = time.and_then(|t| self.tz.from_local_datetime(&t).earliest());
            local.map(|t| c.param_format.format(t)).ok_or_else(|| WindowError::Config(format!("day {day} has no such time in {}", self.tz)))
        };
        let mut path = c.path.clone();
        for (name, value) in &c.query {
            path = with_param(&path, name, value);
        }
        path = with_param(&path, &c.start_param, &at(first, false)?);
        Ok(with_param(&path, &c.end_param, &at(last, true)?))
    }

    /// Compare the mirror with the window around `now`, writing nothing:
    /// items it lists that the mirror lacks or holds otherwise and, with
    /// `delete_vanished`, rows of its days that it no longer lists.
    pub async fn verify(&self, now: DateTime<Utc>, limit_ids: usize) -> Result<ResourceDrift, WindowError> {
        let c = &self.config;
        let Window { from, to, items, requests, .. } = self.fetch(now).await?;
        let ids: Vec<String> = items.iter().map(|i| i.key.clone()).collect();
        let held = self.store.mirror_objects(&c.name, &c.object, None, &ids).await?;
        let mut tally = Tally { checked: items.len() as u64, requests, ..Tally::default() };
        let mut sample = Vec::new();
        let mut note = |how: &'static str, id: &str, fields: Vec<String>| {
            if sample.len() < limit_ids {
                sample.push(Drifted { object: c.object.clone(), id: id.to_string(), how, fields });
            }
        };
        for item in &items {
            match held.get(&item.key) {
                None => {
                    tally.missing += 1;
                    note("missing", &item.key, vec![]);
                }
                Some(row) if *row != item.data => {
                    tally.differed += 1;
                    note("differs", &item.key, differing_fields(row, &item.data));
                }
                Some(_) => {}
            }
        }
        if c.delete_vanished {
            let listed: HashSet<&str> = ids.iter().map(String::as_str).collect();
            let mut vanished: Vec<String> = self
                .store
                .ledger_range(&c.name, &from, &to)
                .await?
                .into_iter()
                .map(|e| e.key)
                .filter(|k| !listed.contains(k.as_str()))
                .collect();
            vanished.sort();
            let rows = self.store.mirror_objects(&c.name, &c.object, None, &vanished).await?;
            for key in vanished.iter().filter(|k| rows.contains_key(*k)) {
                tally.extra += 1;
                note("extra", key, vec![]);
            }
        }
        Ok(ResourceDrift { resource: c.object.clone(), account: None, tally, sample })
    }

    /// One run at `now`: fetch the window, decide, commit.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<Report, WindowError> {
        let c = &self.config;
        let Window { from, to, items, sideloads, deleted, requests } = self.fetch(now).await?;
        let ledger: HashMap<String, LedgerEntry> =
            self.store.ledger_range(&c.name, &from, &to).await?.into_iter().map(|e| (e.key.clone(), e)).collect();
        let seen_at = now.timestamp();
        let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        let live = self.dedupe.fingerprints(&keys, &ledger, seen_at.saturating_sub(c.expire_secs as i64)).await?;
        let fetched: HashSet<String> = keys.iter().map(|k| k.to_string()).collect();

        let mut report = Report { fetched: items.len() as u64, requests, ..Report::default() };
        // mirror writes and ledger entries, committed together
        let mut pending: Vec<(Option<Write>, Option<LedgerOp>)> = Vec::new();
        let mut emitted = Vec::new();
        let write = |object: &str, id: &str, mutation, resend| Write {
            object: object.to_string(),
            id: id.to_string(),
            account: None,
            mutation,
            origin: Origin::Poll { resend },
            generation: 0,
        };
        for (item, live) in items.into_iter().zip(live) {
            let known = ledger.get(&item.key);
            if live.as_deref() == Some(item.fingerprint.as_str()) {
                report.skipped += 1;
                if let Some(entry) = known.filter(|e| e.day != item.day) {
                    // moved to another day of the window: only the ledger follows
                    pending.push((None, Some(LedgerOp::Put(LedgerEntry { day: item.day, ..entry.clone() }))));
                }
                continue;
            }
            match (known, &live) {
                (None, _) => report.new += 1,
                (Some(_), Some(_)) => report.changed += 1,
                (Some(_), None) => report.expired += 1,
            }
            let entry = LedgerEntry {
                key: item.key.clone(),
                fingerprint: self.dedupe.in_store().then(|| item.fingerprint.clone()),
                day: item.day,
                seen_at,
            };
            pending.push((Some(write(&c.object, &item.key, Mutation::Upsert(item.data), live.is_none())), Some(LedgerOp::Put(entry))));
            emitted.push((item.key, item.fingerprint));
        }
        // gone: items of the window not listed now that the answer says were
        // deleted or, with `delete_vanished`, that it no longer lists
        let mut gone: Vec<String> =
            ledger.keys().filter(|k| !fetched.contains(*k) && (c.delete_vanished || deleted.contains(*k))).cloned().collect();
        gone.sort();
        for key in &gone {
            report.deleted += 1;
            pending.push((Some(write(&c.object, key, Mutation::Delete, false)), Some(LedgerOp::Remove(key.clone()))));
        }
        // side-loaded objects: upserted as they come (the store records no
        // change for one it holds as it is), never deleted
        for (object, objects) in sideloads {
            report.sideloaded += objects.len() as u64;
            for (id, data) in objects {
                pending.push((Some(write(&object, &id, Mutation::Upsert(data), false)), None));
            }
        }
        while !pending.is_empty() {
            let rest = pending.split_off(pending.len().min(CHUNK));
            let (writes, ops): (Vec<Option<Write>>, Vec<Option<LedgerOp>>) = std::mem::replace(&mut pending, rest).into_iter().unzip();
            let batch = Batch {
                source: c.name.clone(),
                writes: writes.into_iter().flatten().collect(),
                ledger: ops.into_iter().flatten().collect(),
                ..Batch::default()
            };
            report.changes += self.store.apply(batch).await?.changes;
        }
        let forgotten = gone;
        self.dedupe.remember(&emitted, &forgotten, c.expire_secs).await?;
        Ok(report)
    }

    /// A page's items (taken out of its answer), each with an id, a day
    /// and a fingerprint; the first bad item fails the whole run.
    fn page_items(&self, answer: &mut Value, url: &str) -> Result<Vec<Item>, WindowError> {
        let c = &self.config;
        let list = match c.items_path.take(answer) {
            Some(Value::Array(list)) => list,
            Some(_) => return Err(ClientError::Shape { url: url.to_string(), reason: format!("'{}' is not a list", c.items_path) }.into()),
            None => {
                return Err(
                    ClientError::Shape { url: url.to_string(), reason: format!("no '{}' list in the response", c.items_path) }.into()
                );
            }
        };
        let mut items = Vec::with_capacity(list.len());
        for (index, data) in list.into_iter().enumerate() {
            let bad = |reason: String| WindowError::Item { url: url.to_string(), index, reason };
            let Some(key) = c.id_path.text(&data) else {
                return Err(bad(format!("no '{}' (a non-empty string or a number)", c.id_path)));
            };
            let Some(day) = c.time_path.get(&data).and_then(|t| self.item_day(t)) else {
                let format = match &c.time_format {
                    Some(TimeFormat::Pattern(p)) => format!("'{p}'"),
                    Some(f) => format!("{f:?}").to_lowercase(),
                    None => "RFC 3339 or YYYY-MM-DD".into(),
                };
                return Err(bad(format!("item '{key}': '{}' is not a time ({format})", c.time_path)));
            };
            let fingerprint = fingerprint(&data);
            items.push(Item { key, day: day_text(day), fingerprint, data });
        }
        Ok(items)
    }

    /// The day an item's time falls on in the source's time zone.
    fn item_day(&self, time: &Value) -> Option<NaiveDate> {
        match &self.config.time_format {
            Some(format) => format.parse(time, self.tz).map(|at| at.with_timezone(&self.tz).date_naive()),
            None => item_day(time.as_str()?, self.tz),
        }
    }
}

/// The days `from..=to` in spans of at most `max_days` (0: one span).
fn spans(from: NaiveDate, to: NaiveDate, max_days: u32) -> Vec<(NaiveDate, NaiveDate)> {
    if max_days == 0 {
        return vec![(from, to)];
    }
    let mut spans = Vec::new();
    let mut first = from;
    while first <= to {
        let last = first.checked_add_days(Days::new(u64::from(max_days) - 1)).unwrap_or(to).min(to);
        spans.push((first, last));
        let Some(next) = last.succ_opt() else { break };
        first = next;
    }
    spans
}

/// The day an item's time falls on in `tz`.
fn item_day(text: &str, tz: chrono_tz::Tz) -> Option<NaiveDate> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&tz).date_naive());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

fn day_text(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// A digest of an item's JSON: equal items give equal fingerprints.
pub fn fingerprint(item: &Value) -> String {
    let digest = Sha256::digest(item.to_string().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_falls_on_its_day_in_the_time_zone() {
        let amsterdam: chrono_tz::Tz = "Europe/Amsterdam".parse().unwrap();
        let late = "2026-11-22T23:30:00Z";
        assert_eq!(item_day(late, chrono_tz::UTC), NaiveDate::from_ymd_opt(2026, 11, 22));
        assert_eq!(item_day(late, amsterdam), NaiveDate::from_ymd_opt(2026, 11, 23));
        assert_eq!(item_day("2026-11-22", amsterdam), NaiveDate::from_ymd_opt(2026, 11, 22));
        assert_eq!(item_day("yesterday", amsterdam), None);
    }

    #[test]
    fn a_window_is_split_into_spans_of_at_most_max_days() {
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        assert_eq!(spans(day(1), day(10), 0), vec![(day(1), day(10))]);
        assert_eq!(spans(day(1), day(10), 4), vec![(day(1), day(4)), (day(5), day(8)), (day(9), day(10))]);
        assert_eq!(spans(day(1), day(1), 7), vec![(day(1), day(1))]);
        assert_eq!(spans(day(1), day(7), 7), vec![(day(1), day(7))]);
        assert_eq!(spans(day(1), day(7), 1).len(), 7);
    }

    #[test]
    fn fingerprints_follow_the_content() {
        let a = serde_json::json!({"id": "shf_1", "notes": "a"});
        let b = serde_json::json!({"id": "shf_1", "notes": "b"});
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 32);
    }
}
