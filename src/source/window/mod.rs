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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use config::WindowConfig;

use crate::source::drift::{Drifted, ResourceDrift, Tally, differing_fields};
use crate::source::http::{Client, ClientError};
use crate::source::{Phase, ScopeStatus, SourceStatus};
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

/// One item of a window, checked and fingerprinted.
struct Item {
    key: String,
    day: String,
    fingerprint: String,
    data: Value,
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
pub async fn run(config: WindowConfig, api_key: String, store: Arc<dyn Store>, status: Arc<SourceStatus>) -> Result<(), WindowError> {
    let runner = Runner::new(config, api_key, store).await?;
    let scope = status.add_scope(None);
    status.set_scopes_ready();
    runner.run(&status, &scope).await;
    Ok(())
}

impl Runner {
    /// Connect to the upstream and, with `dedupe_url`, to Redis.
    pub async fn new(config: WindowConfig, api_key: String, store: Arc<dyn Store>) -> Result<Runner, WindowError> {
        let tz = config.timezone().map_err(WindowError::Config)?;
        let client = Client::new(&config.client_options(), api_key)?;
        let dedupe = Dedupe::connect(config.dedupe_url.as_deref(), &config.name).await?;
        Ok(Runner { config, tz, client, dedupe, store })
    }

    async fn run(&self, status: &SourceStatus, scope: &ScopeStatus) {
        let name = &self.config.name;
        let max_backoff = Duration::from_millis(self.config.retry_max_backoff_ms);
        let mut failures = 0;
        loop {
            let (round, started) = scope.begin_round();
            let pause = match self.run_once(Utc::now()).await {
                Ok(report) => {
                    failures = 0;
                    status.store_health.ok();
                    scope.set_phase(Phase::Live);
                    scope.finish_round(round, started);
                    status.set_error(None);
                    let duration_ms = started.elapsed().as_millis() as u64;
                    tracing::info!(kind = "window_sync", source = %name, fetched = report.fetched, new = report.new, changed = report.changed,
                        expired = report.expired, deleted = report.deleted, skipped = report.skipped, changes = report.changes, duration_ms,
                        "window synced");
                    metrics::counter!("tributary_sync_runs_total", "source" => name.clone()).increment(1);
                    metrics::counter!("tributary_items_fetched_total", "source" => name.clone()).increment(report.fetched);
                    metrics::counter!("tributary_items_changed_total", "source" => name.clone()).increment(report.changes);
                    metrics::histogram!("tributary_sync_run_seconds", "source" => name.clone()).record(started.elapsed().as_secs_f64());
                    Duration::from_secs(self.config.sleep_period_secs)
                }
                Err(WindowError::Client(e)) if e.is_permanent() => {
                    tracing::error!(kind = "source_stopped", source = %name, error = %e, error_kind = e.kind(),
                        "window source stopped; it will not be retried until restart");
                    status.set_error(Some(format!("stopped: {e}")));
                    return;
                }
                Err(e) => {
                    failures += 1;
                    status.store_health.failed_if_store(&e);
                    let pause = crate::retry::backoff(failures, max_backoff);
                    tracing::error!(kind = "window_sync_failed", source = %name, error = %e, retry_in_ms = pause.as_millis() as u64,
                        "window run failed; retrying");
                    metrics::counter!("tributary_sync_failures_total", "source" => name.clone()).increment(1);
                    status.set_error(Some(e.to_string()));
                    pause
                }
            };
            // counted from the end of the run; `/wait` cuts it short
            scope.pause(pause, crate::source::EARLY_POLL_GAP).await;
        }
    }

    /// The window around `now`: its first and last day, and its items
    /// (every one checked before any is used).
    async fn fetch(&self, now: DateTime<Utc>) -> Result<(String, String, Vec<Item>), WindowError> {
        let today = now.with_timezone(&self.tz).date_naive();
        let from = today.checked_sub_days(Days::new(self.config.days_prior.into())).unwrap_or(today);
        let to = today.checked_add_days(Days::new(self.config.days_ahead.into())).unwrap_or(today);
        let (from, to) = (day_text(from), day_text(to));
        let c = &self.config;
        let joiner = if c.path.contains('?') { '&' } else { '?' };
        let path = format!("{}{joiner}{}={from}&{}={to}", c.path, c.start_param, c.end_param);
        let body = self.client.get(&path, None).await?;
        let items = self.items(body, &path)?;
        Ok((from, to, items))
    }

    /// Compare the mirror with the window around `now`, writing nothing:
    /// items it lists that the mirror lacks or holds otherwise and, with
    /// `delete_vanished`, rows of its days that it no longer lists.
    pub async fn verify(&self, now: DateTime<Utc>, limit_ids: usize) -> Result<ResourceDrift, WindowError> {
        let c = &self.config;
        let (from, to, items) = self.fetch(now).await?;
        let ids: Vec<String> = items.iter().map(|i| i.key.clone()).collect();
        let held = self.store.mirror_objects(&c.name, &c.object, None, &ids).await?;
        let mut tally = Tally { checked: items.len() as u64, requests: 1, ..Tally::default() };
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
        let (from, to, items) = self.fetch(now).await?;
        let ledger: HashMap<String, LedgerEntry> =
            self.store.ledger_range(&c.name, &from, &to).await?.into_iter().map(|e| (e.key.clone(), e)).collect();
        let seen_at = now.timestamp();
        let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        let live = self.dedupe.fingerprints(&keys, &ledger, seen_at.saturating_sub(c.expire_secs as i64)).await?;
        let fetched: HashSet<String> = keys.iter().map(|k| k.to_string()).collect();

        let mut report = Report { fetched: items.len() as u64, ..Report::default() };
        // (mirror write, ledger entry) pairs, committed together
        let mut pending: Vec<(Option<Write>, LedgerOp)> = Vec::new();
        let mut emitted = Vec::new();
        for (item, live) in items.into_iter().zip(live) {
            let known = ledger.get(&item.key);
            if live.as_deref() == Some(item.fingerprint.as_str()) {
                report.skipped += 1;
                if let Some(entry) = known.filter(|e| e.day != item.day) {
                    // moved to another day of the window: only the ledger follows
                    pending.push((None, LedgerOp::Put(LedgerEntry { day: item.day, ..entry.clone() })));
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
            let write = Write {
                object: c.object.clone(),
                id: item.key.clone(),
                account: None,
                mutation: Mutation::Upsert(item.data),
                origin: Origin::Poll { resend: live.is_none() },
                generation: 0,
            };
            emitted.push((item.key, item.fingerprint));
            pending.push((Some(write), LedgerOp::Put(entry)));
        }
        let mut forgotten = Vec::new();
        if c.delete_vanished {
            let mut vanished: Vec<&String> = ledger.keys().filter(|k| !fetched.contains(*k)).collect();
            vanished.sort();
            for key in vanished {
                report.deleted += 1;
                let write = Write {
                    object: c.object.clone(),
                    id: key.clone(),
                    account: None,
                    mutation: Mutation::Delete,
                    origin: Origin::Poll { resend: false },
                    generation: 0,
                };
                pending.push((Some(write), LedgerOp::Remove(key.clone())));
                forgotten.push(key.clone());
            }
        }
        while !pending.is_empty() {
            let rest = pending.split_off(pending.len().min(CHUNK));
            let (writes, ops): (Vec<Option<Write>>, Vec<LedgerOp>) = std::mem::replace(&mut pending, rest).into_iter().unzip();
            let batch = Batch { source: c.name.clone(), writes: writes.into_iter().flatten().collect(), ledger: ops, ..Batch::default() };
            report.changes += self.store.apply(batch).await?.changes;
        }
        self.dedupe.remember(&emitted, &forgotten, c.expire_secs).await?;
        Ok(report)
    }

    /// The response's items, each with an id, a day and a fingerprint; the
    /// first bad item fails the whole run.
    fn items(&self, body: Value, path: &str) -> Result<Vec<Item>, WindowError> {
        let c = &self.config;
        let Value::Object(mut fields) = body else {
            return Err(ClientError::Shape { url: path.to_string(), reason: format!("expected an object with '{}'", c.items_field) }.into());
        };
        let Some(Value::Array(list)) = fields.remove(&c.items_field) else {
            return Err(ClientError::Shape { url: path.to_string(), reason: format!("no '{}' list in the response", c.items_field) }.into());
        };
        let mut seen = HashSet::with_capacity(list.len());
        let mut items = Vec::with_capacity(list.len());
        for (index, data) in list.into_iter().enumerate() {
            let bad = |reason: String| WindowError::Item { url: path.to_string(), index, reason };
            let key = match data.get(&c.id_field) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Err(bad(format!("no '{}' (a non-empty string or a number)", c.id_field))),
            };
            let day = match data.get(&c.time_field).and_then(Value::as_str).and_then(|t| item_day(t, self.tz)) {
                Some(day) => day_text(day),
                None => return Err(bad(format!("item '{key}': '{}' is not a time (RFC 3339 or YYYY-MM-DD)", c.time_field))),
            };
            if !seen.insert(key.clone()) {
                tracing::warn!(source = %c.name, item = %key, "the window lists an item twice; the later one counts");
                items.retain(|i: &Item| i.key != key);
            }
            let fingerprint = fingerprint(&data);
            items.push(Item { key, day, fingerprint, data });
        }
        Ok(items)
    }
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
    fn fingerprints_follow_the_content() {
        let a = serde_json::json!({"id": "shf_1", "notes": "a"});
        let b = serde_json::json!({"id": "shf_1", "notes": "b"});
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 32);
    }
}
