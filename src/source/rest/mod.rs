//! The `rest` source: any JSON list API declared as data, the way dlt's
//! `rest_api` source declares one. Each run reads every resource in order,
//! parents before children; a child is read once per row of its parent
//! (its path filled from that row). A resource with an `incremental` cursor
//! asks only for what changed since the greatest value it has seen (less a
//! lookback); every `full_refresh_every_secs` (and always, without a
//! cursor) it is read whole, and what it no longer lists is deleted, with
//! the children of a deleted row.
//!
//! What the source has seen is in the ledger, committed with the rows:
//! each row's key (`{resource}/{id}`) under the group of its list
//! (`{resource}|{parent id}`), so a full read knows what vanished.
//!
//! - `config`: the validated `[[sources]]` entry

pub mod config;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use config::ResourceConfig;
pub use config::RestConfig;

use crate::source::declarative::{self, paginate};
use crate::source::http::{Client, ClientError, encode};
use crate::source::{ScopeStatus, SourceStatus};
use crate::store::ledger::{LedgerEntry, LedgerOp};
use crate::store::{Batch, Checkpoint, Mutation, Origin, Store, StoreError, Write};

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A row of a list that cannot be stored (no id at its path).
    #[error("{url}: row {index}: {reason}")]
    Row { url: String, index: usize, reason: String },
}

impl RestError {
    /// The client error no retry can cure, if this is one.
    pub fn permanent(&self) -> Option<&ClientError> {
        match self {
            RestError::Client(e) if e.is_permanent() => Some(e),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            RestError::Client(e) => e.kind(),
            RestError::Store(_) => "store",
            RestError::Row { .. } => "row_unreadable",
        }
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub fetched: u64,
    pub requests: u64,
    pub changes: u64,
    pub deleted: u64,
    /// Lists read (a child resource's once per parent row).
    pub lists: u64,
    /// Lists read whole (full refresh).
    pub full: u64,
}

pub struct Runner {
    config: RestConfig,
    client: Client,
    store: Arc<dyn Store>,
}

/// Run a rest source until the task is dropped.
pub async fn run(config: RestConfig, store: Arc<dyn Store>, status: Arc<SourceStatus>) -> Result<(), RestError> {
    let runner = Runner::new(config, store)?;
    let scope = status.add_scope(None);
    status.set_scopes_ready();
    runner.run(&status, &scope).await;
    Ok(())
}

/// The ledger group of a list: its resource and its parent row.
fn group(resource: &str, parent: Option<&str>) -> String {
    format!("{resource}|{}", parent.unwrap_or_default())
}

impl Runner {
    pub fn new(config: RestConfig, store: Arc<dyn Store>) -> Result<Runner, RestError> {
        let client = config.connection().client(store.clone(), "rest")?;
        Ok(Runner { config, client, store })
    }

    async fn run(&self, status: &SourceStatus, scope: &ScopeStatus) {
        let name = &self.config.name;
        let max_backoff = Duration::from_millis(self.config.retry_max_backoff_ms);
        crate::source::poll_rounds(status, scope, name, "rest_sync", max_backoff, RestError::permanent, || async {
            let started = std::time::Instant::now();
            let report = self.run_once(Utc::now()).await?;
            tracing::info!(kind = "rest_sync", source = %name, fetched = report.fetched, requests = report.requests,
                changes = report.changes, deleted = report.deleted, lists = report.lists, full = report.full,
                duration_ms = started.elapsed().as_millis() as u64, "lists synced");
            metrics::counter!("tributary_items_fetched_total", "source" => name.clone()).increment(report.fetched);
            metrics::counter!("tributary_items_changed_total", "source" => name.clone()).increment(report.changes);
            Ok(Duration::from_secs(self.config.poll_interval_secs))
        })
        .await
    }

    /// One run over every resource.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<Report, RestError> {
        let c = &self.config;
        let checkpoints = self.store.checkpoints(&c.name).await?;
        let mut report = Report::default();
        for r in &c.resources {
            let full_key = format!("full/{}", r.name);
            let last_full = checkpoints.get(&full_key).and_then(Value::as_i64);
            let full = r.incremental.is_none() || last_full.is_none_or(|at| now.timestamp() - at >= c.full_refresh_every_secs as i64);
            for (parent, vars) in self.scopes(r).await? {
                self.sync_list(r, parent.as_deref(), &vars, full, &checkpoints, &mut report).await?;
            }
            if full && r.incremental.is_some() {
                let done = Checkpoint::unordered(&full_key, json!(now.timestamp()));
                self.store.apply(Batch { source: c.name.clone(), checkpoints: vec![done], ..Batch::default() }).await?;
            }
        }
        Ok(report)
    }

    /// The lists of a resource: one, or one per row of its parent (with the
    /// values of its path's placeholders).
    async fn scopes(&self, r: &ResourceConfig) -> Result<Vec<(Option<String>, BTreeMap<String, String>)>, RestError> {
        let Some(parent) = &r.parent else { return Ok(vec![(None, BTreeMap::new())]) };
        let c = &self.config;
        let ids: Vec<String> = self.store.mirror_keys(&c.name, parent, None).await?.into_iter().map(|(id, _)| id).collect();
        let rows = self.store.mirror_objects(&c.name, parent, None, &ids).await?;
        let mut scopes = Vec::with_capacity(rows.len());
        for (id, row) in rows {
            let mut vars = BTreeMap::new();
            for (name, path) in &r.params {
                match path.text(&row) {
                    Some(value) => {
                        vars.insert(name.clone(), value);
                    }
                    None => {
                        tracing::warn!(source = %c.name, resource = %r.name, parent = %parent, id = %id, param = %name,
                            "a parent row has no value at '{path}'; its list is not read");
                    }
                }
            }
            if vars.len() == r.params.len() {
                scopes.push((Some(id), vars));
            }
        }
        scopes.sort();
        Ok(scopes)
    }

    /// Read one list (every page), store its rows page by page, move its
    /// cursor, and after a full read delete what it no longer lists.
    async fn sync_list(
        &self,
        r: &ResourceConfig,
        parent: Option<&str>,
        vars: &BTreeMap<String, String>,
        full: bool,
        checkpoints: &BTreeMap<String, Value>,
        report: &mut Report,
    ) -> Result<(), RestError> {
        let c = &self.config;
        let group = group(&r.name, parent);
        let mut path = r.path.clone();
        for (name, value) in vars {
            path = path.replace(&format!("{{{name}}}"), &encode(value));
        }
        for (name, value) in &r.query {
            path = paginate::with_param(&path, name, value);
        }
        let cursor_key = format!("cursor/{group}");
        let cursor: Option<DateTime<Utc>> =
            checkpoints.get(&cursor_key).and_then(Value::as_str).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc());
        if let (Some(inc), Some(at), false) = (&r.incremental, cursor, full) {
            let from = at - chrono::Duration::seconds(inc.lookback_secs as i64);
            let format = inc.param_format.as_ref().unwrap_or(&inc.format);
            path = paginate::with_param(&path, &inc.param, &format.format(from.with_timezone(&chrono_tz::UTC)));
        }
        let paginator = r.paginator.as_ref().unwrap_or(&c.paginator);
        let mut seen: HashSet<String> = HashSet::new();
        let mut greatest = cursor;
        let mut pending: Vec<Batch> = Vec::new();
        let seen_at = Utc::now().timestamp();
        let requests = declarative::each_page(&self.client, paginator, &path, |url, answer| {
            let Some(Value::Array(rows)) = r.data_path.take(answer) else {
                let reason = format!("no list at '{}' in the answer", r.data_path);
                return Err(RestError::Client(ClientError::Shape { url: url.to_string(), reason }));
            };
            let count = rows.len();
            let mut batch = Batch { source: c.name.clone(), ..Batch::default() };
            for (index, row) in rows.into_iter().enumerate() {
                let Some(id) = r.id_path.text(&row) else {
                    let reason = format!("no id at '{}' (a non-empty string or a number)", r.id_path);
                    return Err(RestError::Row { url: url.to_string(), index, reason });
                };
                if let Some(inc) = &r.incremental
                    && let Some(at) = inc.field.get(&row).and_then(|v| inc.format.parse(v, chrono_tz::UTC))
                {
                    let at = at.to_utc();
                    greatest = Some(greatest.map_or(at, |g| g.max(at)));
                }
                batch.ledger.push(LedgerOp::Put(LedgerEntry {
                    key: format!("{}/{id}", r.name),
                    fingerprint: None,
                    day: group.clone(),
                    seen_at,
                }));
                batch.writes.push(write(&r.name, &id, Mutation::Upsert(row)));
                seen.insert(id);
            }
            pending.push(batch);
            Ok(count)
        })
        .await?;
        report.requests += requests;
        report.lists += 1;
        report.full += u64::from(full);
        for batch in pending {
            report.fetched += batch.writes.len() as u64;
            report.changes += self.store.apply(batch).await?.changes;
        }
        let mut last = Batch { source: c.name.clone(), ..Batch::default() };
        if let Some(at) = greatest.filter(|at| Some(*at) != cursor) {
            last.checkpoints.push(Checkpoint::unordered(&cursor_key, json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))));
        }
        if full {
            let prefix = format!("{}/", r.name);
            let gone: Vec<String> = self
                .store
                .ledger_range(&c.name, &group, &group)
                .await?
                .into_iter()
                .filter_map(|e| e.key.strip_prefix(&prefix).map(String::from))
                .filter(|id| !seen.contains(id))
                .collect();
            self.delete(r, &gone, &mut last).await?;
            report.deleted += gone.len() as u64;
        }
        if !last.checkpoints.is_empty() || !last.writes.is_empty() || !last.ledger.is_empty() {
            report.changes += self.store.apply(last).await?.changes;
        }
        Ok(())
    }

    /// Delete rows of `r` (into `batch`), and the rows listed under them by
    /// child resources, down the tree.
    async fn delete(&self, r: &ResourceConfig, ids: &[String], batch: &mut Batch) -> Result<(), RestError> {
        let c = &self.config;
        let mut work: Vec<(&ResourceConfig, String)> = ids.iter().map(|id| (r, id.clone())).collect();
        while let Some((resource, id)) = work.pop() {
            batch.writes.push(write(&resource.name, &id, Mutation::Delete));
            batch.ledger.push(LedgerOp::Remove(format!("{}/{id}", resource.name)));
            for child in c.resources.iter().filter(|child| child.parent.as_deref() == Some(resource.name.as_str())) {
                let group = group(&child.name, Some(&id));
                let prefix = format!("{}/", child.name);
                for entry in self.store.ledger_range(&c.name, &group, &group).await? {
                    if let Some(child_id) = entry.key.strip_prefix(&prefix) {
                        work.push((child, child_id.to_string()));
                    }
                }
            }
        }
        Ok(())
    }
}

fn write(object: &str, id: &str, mutation: Mutation) -> Write {
    Write { object: object.to_string(), id: id.to_string(), account: None, mutation, origin: Origin::Poll { resend: false }, generation: 0 }
}
