//! One scope's sync (the platform, or one connected account): a state machine
//! driven by its checkpoint.
//!
//! ```text
//! new ──► backfilling ──► catching_up ──► live (poll /v1/events forever)
//!  ▲                                        │
//!  └──────────── cursor expired ◄───────────┘
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::try_join_all;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use super::checkpoint::{Meta, MetaPhase, Range, ResourceCheckpoint};
use super::is_list;
use super::lookback::{self, Recent};
use super::raw::{self, Head};
use crate::source::http::{Client, ClientError, encode};
use crate::source::{Phase, ScopeStatus, SourceStatus};
use crate::store::mirror::{ListCursor, MirrorPage};
use crate::store::{Applied, Batch, Checkpoint, Mutation, Origin, Store, StoreError, Sweep, Write};
use crate::stripe_api::{Ending, Follow, MAX_PAGE, Resource};

/// Creation-time ranges of one resource paged at once, at most.
const MAX_RANGES: usize = 32;

/// The most ranges one page's rest is split into (while the backfill ramps
/// up, with requests to spare).
const MAX_SPLIT: usize = 4;

/// Objects committed in one backfill transaction at most (pages that wait
/// for the store are committed together up to this).
const MAX_BATCH_WRITES: usize = 1_000;

/// Fetched pages that may wait for the store beyond those in flight: one
/// transaction's worth.
pub const STORE_QUEUE_PAGES: usize = MAX_BATCH_WRITES / MAX_PAGE;

/// Pages of parents whose children are read and committed at once, for
/// every child list of every scope. A page's child lists give back their
/// page permits once read, and wait for the store holding what they read:
/// unbounded, the full catalogue's 200 walks (50 child lists, 4 scopes)
/// each held a page of parents' children while Postgres committed four
/// batches at a time (peak RSS 268 MB). Eight pages of parents keep up to
/// 800 child requests to be sent, far more than the budget lets out.
pub const CHILD_WALKS: usize = 8;

/// A page of a range: the range, its writes, where it ended when more
/// follow, and its place among the pages held in memory.
/// A page as fetched: its range, its objects as text (with what the
/// backfill reads of each), its path, where it ended when more follow, and
/// its place among the pages in flight.
type FetchedPage = (Range, Vec<(Head, Box<RawValue>)>, String, Option<More>, OwnedSemaphorePermit);

/// Where a page that has more ended: its oldest object and creation time,
/// and its newest object's (the density of the range).
struct More {
    last: String,
    at: i64,
    newest: i64,
    /// Whether every object of the page has a creation time: only then
    /// can the range be split by it (invoice items have none).
    dated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("event cursor {cursor} has expired upstream")]
    CursorExpired { cursor: String },
    #[error("corrupt checkpoint {key}: {reason}")]
    Checkpoint { key: String, reason: String },
}

impl SyncError {
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::Client(e) => e.kind(),
            SyncError::Store(_) => "store",
            SyncError::CursorExpired { .. } => "cursor_expired",
            SyncError::Checkpoint { .. } => "checkpoint",
        }
    }

    /// No retry can cure it (see [`ClientError::is_permanent`]).
    pub fn is_permanent(&self) -> bool {
        matches!(self, SyncError::Client(e) if e.is_permanent())
    }
}

/// What every scope of one source shares: the request budget and the store.
pub struct Shared {
    pub name: String,
    /// The pinned API version (`Stripe-Version` of every request).
    pub api_version: String,
    /// Event versions other than the pinned one, logged once each.
    pub versions_seen: parking_lot::Mutex<std::collections::HashSet<String>>,
    pub resources: Vec<&'static Resource>,
    /// Child lists backfilled from their parents' pages, expanded.
    pub expanded: Vec<&'static Resource>,
    pub poll_interval: Duration,
    /// How often resources followed by `created` are listed.
    pub created_every: Duration,
    /// How often re-listed resources are listed.
    pub relist_every: Duration,
    pub event_retention: Duration,
    /// Seconds of events each poll reads again (0: none).
    pub lookback_secs: i64,
    /// How often a reconcile runs (`None`: only when asked).
    pub reconcile_every: Option<Duration>,
    /// The share of the budget reconcile takes.
    pub reconcile_share: crate::source::http::Share,
    pub client: Client,
    pub store: Arc<dyn Store>,
    pub status: Arc<SourceStatus>,
    /// Backfill pages fetched or being fetched and not yet committed, for
    /// every scope and resource together: bounds what backfill holds in
    /// memory while the store is slower than the upstream.
    pub pages: Arc<tokio::sync::Semaphore>,
    /// The permits `pages` was made with.
    pub page_slots: usize,
    /// Pages of parents whose child lists are read or committed now, in
    /// every scope ([`CHILD_WALKS`]).
    pub walks: tokio::sync::Semaphore,
    /// Resources paging by creation-time ranges now, in every scope: each
    /// splits into no more ranges than its share of `page_slots`.
    pub ranged: AtomicUsize,
}

/// Counts a resource in [`Shared::ranged`] while it pages.
struct Ranged<'a>(&'a AtomicUsize);

impl<'a> Ranged<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Ranged(count)
    }
}

impl Drop for Ranged<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct ScopeSync {
    pub(super) shared: Arc<Shared>,
    pub(super) account: Option<String>,
    /// Checkpoint prefix: `platform` or the account id.
    pub(super) key: String,
    pub(super) status: Arc<ScopeStatus>,
}

/// Which share of the request budget a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Backfill and the events tail.
    Live,
    /// Following resources by listing: a share of the budget only.
    Background,
    /// Reconcile: its own share of the budget.
    Reconcile,
}

/// Split a list response into its items and `has_more`.
pub fn list_parts(page: Value, url: &str) -> Result<(Vec<Value>, bool), ClientError> {
    let shape = |reason: &str| ClientError::Shape { url: url.to_string(), reason: reason.to_string() };
    if !is_list(&page) {
        return Err(shape("expected a list object"));
    }
    let has_more = page["has_more"].as_bool().ok_or_else(|| shape("list without has_more"))?;
    let Value::Object(mut fields) = page else { return Err(shape("expected a list object")) };
    let Some(Value::Array(items)) = fields.remove("data") else { return Err(shape("list without data")) };
    Ok((items, has_more))
}

pub(super) fn text<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value.get(field).and_then(Value::as_str)
}

impl ScopeSync {
    pub fn new(shared: Arc<Shared>, account: Option<String>) -> Self {
        let status = shared.status.add_scope(account.clone());
        let key = account.clone().unwrap_or_else(|| "platform".into());
        ScopeSync { shared, account, key, status }
    }

    pub(super) fn account_label(&self) -> &str {
        self.account.as_deref().unwrap_or("platform")
    }

    /// Run forever: on error, log it and start again from the checkpoint.
    pub async fn run(self) {
        loop {
            let Err(error) = self.run_phases().await;
            if error.is_permanent() {
                self.stop(&error);
                return;
            }
            match error {
                SyncError::CursorExpired { cursor } => {
                    tracing::warn!(kind = "cursor_expired", source = %self.shared.name, account = self.account_label(), cursor = %cursor,
                        "event cursor is older than the upstream's event retention; re-backfilling");
                    if let Err(e) = self.request_rebackfill().await {
                        self.report(&e).await;
                    }
                }
                other => self.report(&other).await,
            }
        }
    }

    /// A permanent error: no retry can cure it, so this scope stops until
    /// the process restarts (with the error in `/v1/sources` and the log).
    fn stop(&self, error: &SyncError) {
        tracing::error!(kind = "source_stopped", source = %self.shared.name, account = self.account_label(), error = %error,
            error_kind = error.kind(), "sync stopped; it will not be retried until restart");
        self.status.set_error(Some(format!("{}: stopped: {error}", self.account_label())));
    }

    async fn report(&self, error: &SyncError) {
        let pause = self.shared.client.max_backoff();
        tracing::error!(kind = "source_error", source = %self.shared.name, account = self.account_label(), error = %error,
            retry_in_ms = pause.as_millis() as u64, "sync stopped; restarting from the checkpoint");
        self.status.set_error(Some(format!("{}: {error}", self.account_label())));
        tokio::time::sleep(pause).await;
    }

    pub(super) async fn checkpoints(&self) -> Result<BTreeMap<String, Value>, SyncError> {
        let prefix = format!("{}/", self.key);
        Ok(self
            .shared
            .store
            .checkpoints(&self.shared.name)
            .await?
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|rest| (rest.to_string(), v)))
            .collect())
    }

    pub(super) fn parse<T: serde::de::DeserializeOwned + Default>(
        checkpoints: &BTreeMap<String, Value>,
        key: &str,
    ) -> Result<T, SyncError> {
        match checkpoints.get(key) {
            None => Ok(T::default()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| SyncError::Checkpoint { key: key.to_string(), reason: e.to_string() }),
        }
    }

    pub(super) async fn commit(&self, writes: Vec<Write>, sweeps: Vec<Sweep>, checkpoints: Vec<Checkpoint>) -> Result<Applied, SyncError> {
        let batch = Batch { source: self.shared.name.clone(), writes, sweeps, checkpoints, ..Batch::default() };
        let applied = match self.shared.store.apply(batch).await {
            Ok(applied) => applied,
            Err(e) => {
                self.shared.status.store_health.failed(&e);
                return Err(e.into());
            }
        };
        self.shared.status.store_health.ok();
        metrics::counter!("tributary_changes_written_total", "source" => self.shared.name.clone()).increment(applied.changes);
        Ok(applied)
    }

    fn meta_entry(&self, meta: &Meta) -> Checkpoint {
        meta.checkpoint(&self.key)
    }

    async fn run_phases(&self) -> Result<Infallible, SyncError> {
        let mut checkpoints = self.checkpoints().await?;
        let mut meta: Meta = Self::parse(&checkpoints, "meta")?;
        self.status.set_cursor(meta.cursor.clone());
        if meta.phase == MetaPhase::New {
            meta = self.start_backfill(meta.generation + 1).await?;
            // a fresh backfill starts every resource from the top
            checkpoints.clear();
        }
        if meta.phase == MetaPhase::Backfilling {
            self.backfill(&mut meta, &checkpoints).await?;
        } else {
            self.backfill_added(&meta, &checkpoints).await?;
        }
        if meta.phase == MetaPhase::CatchingUp {
            self.catch_up(&mut meta).await?;
        }
        // resources without events are followed by listing, alongside
        let follow = self.follow(meta.clone());
        let reconcile = self.reconcile_forever(meta.backfill_started_at);
        tokio::select! {
            tailed = self.tail(meta) => tailed,
            followed = follow => followed,
            reconciled = reconcile => reconciled,
        }
    }

    /// Resources added to the config after this scope's backfill: they are
    /// backfilled now, before the tail goes on (their events since are
    /// applied by it); nothing is swept.
    async fn backfill_added(&self, meta: &Meta, checkpoints: &BTreeMap<String, Value>) -> Result<(), SyncError> {
        let added: Vec<&'static Resource> = self
            .shared
            .resources
            .iter()
            .copied()
            .filter(|r| jobs(&[*r]).iter().any(|job| !self.has_checkpoint(checkpoints, job)))
            .collect();
        if added.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = jobs(&added).iter().filter(|job| !self.has_checkpoint(checkpoints, job)).map(Job::name).collect();
        tracing::info!(kind = "backfill_started", source = %self.shared.name, account = self.account_label(), generation = meta.generation,
            resources = %names.join(","), "backfilling {} resource lists added since the last backfill", names.len());
        let phase = self.status.phase();
        self.status.set_phase(Phase::Backfilling);
        let (row_count, _) = self.backfill_waves(&added, checkpoints, meta.generation).await?;
        self.status.set_phase(phase);
        tracing::info!(kind = "backfill_complete", source = %self.shared.name, account = self.account_label(), row_count,
            resources = %names.join(","), "added resources backfilled");
        Ok(())
    }

    fn has_checkpoint(&self, checkpoints: &BTreeMap<String, Value>, job: &Job) -> bool {
        checkpoints.contains_key(&Self::checkpoint_key(checkpoints, job))
    }

    /// Keep the generation, forget the cursor: the next run re-backfills.
    async fn request_rebackfill(&self) -> Result<(), SyncError> {
        let checkpoints = self.checkpoints().await?;
        let old: Meta = Self::parse(&checkpoints, "meta")?;
        let meta = Meta { generation: old.generation, ..Meta::default() };
        self.commit(vec![], vec![], vec![self.meta_entry(&meta)]).await?;
        Ok(())
    }

    async fn start_backfill(&self, generation: i64) -> Result<Meta, SyncError> {
        self.status.set_phase(Phase::Backfilling);
        let newest = self.shared.client.get("/v1/events?limit=1", self.account.as_deref()).await?;
        let (events, _) = list_parts(newest, "/v1/events?limit=1")?;
        let last_event = events.first().and_then(|e| text(e, "id")).map(String::from);
        let meta = Meta {
            generation,
            phase: MetaPhase::Backfilling,
            last_event_before_backfill: last_event.clone(),
            last_event_before_backfill_created: events.first().and_then(|e| e["created"].as_i64()),
            cursor: last_event.clone(),
            polled_at_ms: Some(chrono::Utc::now().timestamp_millis()),
            backfill_started_at: Some(chrono::Utc::now().timestamp()),
        };
        let mut checkpoints = vec![self.meta_entry(&meta)];
        for job in jobs(&self.shared.resources) {
            checkpoints.push(ResourceCheckpoint::default().checkpoint(&self.key, &job.name(), generation));
        }
        self.commit(vec![], vec![], checkpoints).await?;
        tracing::info!(kind = "backfill_started", source = %self.shared.name, account = self.account_label(), generation,
            last_event_before_backfill = last_event.as_deref().unwrap_or(""), "backfill started");
        Ok(meta)
    }

    async fn backfill(&self, meta: &mut Meta, checkpoints: &BTreeMap<String, Value>) -> Result<(), SyncError> {
        self.status.set_phase(Phase::Backfilling);
        let (row_count, skipped) = self.backfill_waves(&self.shared.resources, checkpoints, meta.generation).await?;
        // rows this generation did not see are gone upstream, unless a
        // resource that lists them was refused (its rows are kept)
        let objects: BTreeSet<&str> = self.shared.resources.iter().flat_map(|r| r.objects.iter().copied()).collect();
        let sweeps = objects
            .into_iter()
            .filter(|o| !skipped.contains(o))
            .map(|object| Sweep {
                object: object.to_string(),
                account: self.account.clone(),
                below_generation: meta.generation,
                created_before: meta.backfill_started_at,
            })
            .collect();
        meta.phase = MetaPhase::CatchingUp;
        self.commit(vec![], sweeps, vec![self.meta_entry(meta)]).await?;
        tracing::info!(kind = "backfill_complete", source = %self.shared.name, account = self.account_label(), row_count,
            last_event_before_backfill = meta.last_event_before_backfill.as_deref().unwrap_or(""), "backfill complete");
        Ok(())
    }

    /// Backfill `resources` from their checkpoints; returns the objects
    /// stored and the object types of lists the key was refused.
    async fn backfill_waves(
        &self,
        resources: &[&'static Resource],
        checkpoints: &BTreeMap<String, Value>,
        generation: i64,
    ) -> Result<(u64, BTreeSet<&'static str>), SyncError> {
        let mut row_count = 0;
        let mut skipped: BTreeSet<&'static str> = BTreeSet::new();
        // a child list is walked from its parents' rows, so it starts once
        // every resource that lists its parents is done
        for wave in waves(resources) {
            let mut runs = Vec::new();
            for job in wave.iter().flat_map(|r| jobs(&[*r])) {
                let checkpoint = self.resource_checkpoint(checkpoints, &job)?;
                runs.push(async move { self.backfill_job(job, checkpoint, generation).await.map(|r| (job, r)) });
            }
            for (job, (fetched, was_skipped)) in try_join_all(runs).await? {
                row_count += fetched;
                if was_skipped {
                    skipped.extend(job.resource.objects.iter().copied());
                }
            }
        }
        Ok((row_count, skipped))
    }

    /// A job's checkpoint; a resource listed in one pass under its object's
    /// name by earlier releases resumes from that.
    fn resource_checkpoint(&self, checkpoints: &BTreeMap<String, Value>, job: &Job) -> Result<ResourceCheckpoint, SyncError> {
        Self::parse(checkpoints, &Self::checkpoint_key(checkpoints, job))
    }

    /// The key a job's checkpoint is read from: its own, or for the first
    /// pass, when only that exists, the one earlier releases wrote under
    /// the object's name.
    fn checkpoint_key(checkpoints: &BTreeMap<String, Value>, job: &Job) -> String {
        let key = format!("backfill/{}", job.name());
        let legacy = format!("backfill/{}", job.resource.object);
        match !checkpoints.contains_key(&key) && job.pass == 0 && checkpoints.contains_key(&legacy) {
            true => legacy,
            false => key,
        }
    }

    /// Backfill one job; returns the objects it stored and whether the key
    /// was refused the resource.
    async fn backfill_job(&self, job: Job, checkpoint: ResourceCheckpoint, generation: i64) -> Result<(u64, bool), SyncError> {
        let name = job.name();
        if let Some(reason) = &checkpoint.skipped {
            self.status.skip(&name, reason.clone());
            return Ok((0, true));
        }
        self.status.set_progress(&name, checkpoint.fetched, checkpoint.done);
        if checkpoint.done {
            return Ok((checkpoint.fetched, false));
        }
        let result = if job.resource.scope.parent.is_some() {
            self.backfill_children(&job, checkpoint, generation).await
        } else {
            self.backfill_resource(&job, checkpoint, generation).await
        };
        result.map(|fetched| (fetched, self.status.skipped(&name)))
    }

    /// Page one resource from its checkpoint to the end; returns objects
    /// stored. Its creation-time ranges are paged concurrently (a range
    /// with more splits off its older half, up to [`MAX_RANGES`]); pages
    /// commit one at a time, each with the ranges left, while the other
    /// requests are in flight.
    async fn backfill_resource(&self, job: &Job, mut checkpoint: ResourceCheckpoint, generation: i64) -> Result<u64, SyncError> {
        let name = job.name();
        let resource = job.resource;
        // everything created before now; what is created later, the events bring
        let mut open = checkpoint
            .ranges
            .take()
            .unwrap_or_else(|| vec![Range { gte: 0, lt: chrono::Utc::now().timestamp() + 1, after: checkpoint.after.clone() }]);
        checkpoint.after = None;
        let _ranged = Ranged::enter(&self.shared.ranged);
        let (pages_tx, mut pages_rx) = tokio::sync::mpsc::channel::<(Vec<Write>, ResourceCheckpoint, Option<OwnedSemaphorePermit>)>(8);
        let fetching = async move {
            let mut pages: FuturesUnordered<_> = open.iter().map(|range| self.fetch_page(job, range.clone())).collect();
            // a page's nested lists are completed while the next pages of
            // its range are fetched; pages go to the store in the order they
            // were fetched, so each checkpoint covers every page before it
            let mut completing = FuturesOrdered::new();
            loop {
                tokio::select! {
                    Some(page) = pages.next() => {
                        let (range, items, path, more, permit) = match page {
                            // a restricted key without this permission: the
                            // other resources go on, this one is done without
                            // its objects (pages read before are kept)
                            Err(SyncError::Client(e)) if e.skips_resource() => {
                                while let Some(done) = completing.next().await {
                                    let (writes, read, permit) = done?;
                                    let _ = pages_tx.send((writes, read, Some(permit))).await;
                                }
                                let skipped =
                                    ResourceCheckpoint { skipped: Some(e.to_string()), done: true, ranges: Some(vec![]), ..checkpoint };
                                let _ = pages_tx.send((vec![], skipped, None)).await;
                                return Ok(0);
                            }
                            other => other?,
                        };
                        open.retain(|r| *r != range);
                        if let Some(More { last, at, newest, dated }) = more {
                            // only a list that filters on `created`, of objects
                            // that have one, can be split by it; and only up to
                            // its share of the pages in flight: each range ends
                            // on a short page, so more ranges cost requests and
                            // gain nothing, while a resource with fewer would
                            // wait behind the others' (as resources finish, the
                            // rest get more)
                            let share = self.shared.page_slots / self.shared.ranged.load(Ordering::Relaxed).max(1);
                            let parts = match resource.created_filter && dated {
                                true => share.min(MAX_RANGES).saturating_sub(open.len()).clamp(1, MAX_SPLIT),
                                false => 1,
                            };
                            let next = range.next(&last, at, newest, parts);
                            pages.extend(next.iter().map(|r| self.fetch_page(job, r.clone())));
                            open.extend(next);
                        }
                        checkpoint.fetched += items.len() as u64;
                        checkpoint.done = open.is_empty();
                        checkpoint.ranges = Some(open.clone());
                        let read = checkpoint.clone();
                        completing.push_back(async move {
                            self.page_writes(job, items, &path, generation).await.map(|writes| (writes, read, permit))
                        });
                    }
                    Some(done) = completing.next() => {
                        let (writes, read, permit) = done?;
                        if pages_tx.send((writes, read, Some(permit))).await.is_err() {
                            break; // the commit failed: its error is the one returned
                        }
                    }
                    else => break,
                }
            }
            Ok::<_, SyncError>(checkpoint.fetched)
        };
        let committing = async {
            // a page's permit is given back once it is committed; pages
            // waiting together commit in one transaction, with the newest
            // checkpoint (it covers the ones before it)
            while let Some((mut writes, mut next, permit)) = pages_rx.recv().await {
                let mut permits = vec![permit];
                while next.skipped.is_none() && writes.len() < MAX_BATCH_WRITES {
                    let Ok((more, later, permit)) = pages_rx.try_recv() else { break };
                    writes.extend(more);
                    next = later;
                    permits.push(permit);
                }
                if let Some(reason) = &next.skipped {
                    // pages read before the refusal are kept
                    self.commit(writes, vec![], vec![next.checkpoint(&self.key, &name, generation)]).await?;
                    self.skipped(&name, reason);
                    continue;
                }
                self.commit(writes, vec![], vec![next.checkpoint(&self.key, &name, generation)]).await?;
                self.status.set_progress(&name, next.fetched, next.done);
                drop(permits);
            }
            Ok::<_, SyncError>(())
        };
        let (fetched, committed) = tokio::join!(fetching, committing);
        committed?;
        fetched
    }

    /// Fetch the next page of `range`: its objects as text, each with what
    /// the backfill reads of it, and, when more follow, where it ended.
    async fn fetch_page(&self, job: &Job, range: Range) -> Result<FetchedPage, SyncError> {
        let permit = self.shared.pages.clone().acquire_owned().await.expect("the page semaphore is never closed");
        let resource = job.resource;
        // no include[]=total_count: since API version 2025-03-31.basil Stripe
        // refuses it (400), and progress is a count and a rate instead
        let mut query = Vec::new();
        if resource.created_filter {
            query.push(format!("created[gte]={}&created[lt]={}", range.gte, range.lt));
        }
        if let Some(after) = &range.after {
            query.push(format!("starting_after={}", encode(after)));
        }
        let path = job.page_path(resource.list_path(None).unwrap_or_default(), &query);
        let page = self.shared.client.get_raw(&path, self.account.as_deref()).await?;
        let (items, has_more) = raw::list_parts(&page, &path)?;
        drop(page);
        let has_more = has_more && resource.paged;
        let shape = |e: serde_json::Error| ClientError::Shape { url: path.clone(), reason: e.to_string() };
        let items = items.into_iter().map(|item| Ok((serde_json::from_str::<Head>(item.get()).map_err(shape)?, item)));
        let items: Vec<(Head, Box<RawValue>)> = items.collect::<Result<_, ClientError>>()?;
        // an object without a creation time keeps the range whole
        let created = |head: &Head| head.created().unwrap_or(range.lt - 1);
        let more = match (items.first(), items.last()) {
            (Some((first, _)), Some((last, _))) if has_more => {
                let dated = items.iter().all(|(head, _)| head.created().is_some());
                last.id().map(|id| More { last: id.to_string(), at: created(last), newest: created(first), dated })
            }
            _ => None,
        };
        Ok((range, items, path, more, permit))
    }

    /// A fetched page's writes, its nested lists completed.
    async fn page_writes(
        &self,
        job: &Job,
        items: Vec<(Head, Box<RawValue>)>,
        path: &str,
        generation: i64,
    ) -> Result<Vec<Write>, SyncError> {
        let objects = try_join_all(items.into_iter().map(|(head, item)| self.backfilled(head, item, path))).await?;
        let mut writes = Vec::with_capacity(objects.len());
        for (head, mutation) in objects {
            let id = head.id().ok_or_else(|| ClientError::Shape { url: path.to_string(), reason: "object without id".into() })?;
            writes.push(self.write(head.object().unwrap_or(job.resource.object), id, mutation, &Origin::Backfill, generation));
        }
        self.count_synced(writes.len());
        Ok(writes)
    }

    /// One object of a backfill page, as the store will take it: its text
    /// compacted, or, when a nested list of it is cut short, parsed,
    /// completed and serialized again.
    async fn backfilled(&self, head: Head, item: Box<RawValue>, url: &str) -> Result<(Head, Mutation), SyncError> {
        let shape = |e: serde_json::Error| ClientError::Shape { url: url.to_string(), reason: e.to_string() };
        if raw::may_hold_truncated_list(item.get()) {
            let mut object: Value = serde_json::from_str(item.get()).map_err(shape)?;
            self.complete_nested(&mut object).await?;
            return Ok((head, Mutation::serialized(&object).map_err(shape)?));
        }
        let created = head.created();
        Ok((head, Mutation::UpsertText { text: raw::compact(item.get()).map_err(shape)?, created }))
    }

    /// The mirror writes of listed objects.
    pub(super) fn writes(
        &self,
        items: Vec<Value>,
        resource: &Resource,
        url: &str,
        origin: &Origin,
        generation: i64,
    ) -> Result<Vec<Write>, SyncError> {
        let mut writes = Vec::with_capacity(items.len());
        for item in items {
            let id = text(&item, "id").ok_or_else(|| ClientError::Shape { url: url.to_string(), reason: "object without id".into() })?;
            // held as text until the store takes it: pages waiting for a
            // commit are most of what a backfill holds in memory
            let mutation =
                Mutation::serialized(&item).map_err(|e| ClientError::Shape { url: url.to_string(), reason: format!("{id}: {e}") })?;
            writes.push(self.write(text(&item, "object").unwrap_or(resource.object), id, mutation, origin, generation));
        }
        self.count_synced(writes.len());
        Ok(writes)
    }

    fn write(&self, object: &str, id: &str, mutation: Mutation, origin: &Origin, generation: i64) -> Write {
        Write {
            object: object.to_string(),
            id: id.to_string(),
            account: self.account.clone(),
            mutation,
            origin: origin.clone(),
            generation,
        }
    }

    fn count_synced(&self, objects: usize) {
        metrics::counter!("tributary_objects_synced_total", "source" => self.shared.name.clone()).increment(objects as u64);
    }

    pub(super) fn skipped(&self, name: &str, reason: &str) {
        tracing::warn!(kind = "resource_skipped", source = %self.shared.name, account = self.account_label(), resource = name,
            reason = %reason, "the API key may not read this resource; it is not mirrored (asked again at the next backfill)");
        self.status.skip(name, reason.to_string());
    }

    /// Walk a child list from its parents' mirror rows, a page of parents
    /// at a time, each page committed with the last parent done.
    async fn backfill_children(&self, job: &Job, mut checkpoint: ResourceCheckpoint, generation: i64) -> Result<u64, SyncError> {
        let name = job.name();
        let mut expanded = job.resource.expandable_from().filter(|_| self.shared.expanded.contains(&job.resource));
        loop {
            // from reading a page of parents to committing their children
            let _walk = self.shared.walks.acquire().await.expect("the walk semaphore is never closed");
            let page = match self.parents_page(job, checkpoint.parent_after.as_deref(), expanded).await {
                Ok(Some(page)) => page,
                // the upstream will not expand this list: read it per parent
                Err(SyncError::Client(e @ ClientError::Api { status: 400, .. })) if expanded.is_some() => {
                    tracing::warn!(kind = "expand_refused", source = %self.shared.name, account = self.account_label(), resource = %name,
                        error = %e, "the upstream refused to expand this child list on its parents; reading it per parent");
                    expanded = None;
                    continue;
                }
                Err(e) => return Err(e),
                // the last parent done is gone since: walk again from the
                // top (children already stored are written again, unchanged)
                Ok(None) => {
                    checkpoint.parent_after = None;
                    continue;
                }
            };
            let results = try_join_all(page.data.iter().map(|parent| self.fetch_children(job, parent, Lane::Live))).await;
            let writes: Vec<Write> = match results {
                Ok(lists) => {
                    let mut writes = Vec::new();
                    for (items, url) in lists {
                        writes.extend(self.writes(items, job.resource, &url, &Origin::Backfill, generation)?);
                    }
                    writes
                }
                Err(SyncError::Client(e)) if e.skips_resource() => {
                    let reason = e.to_string();
                    let skipped = ResourceCheckpoint { skipped: Some(reason.clone()), done: true, ..checkpoint };
                    self.commit(vec![], vec![], vec![skipped.checkpoint(&self.key, &name, generation)]).await?;
                    self.skipped(&name, &reason);
                    return Ok(skipped.fetched);
                }
                Err(e) => return Err(e),
            };
            checkpoint.fetched += writes.len() as u64;
            checkpoint.parent_after = page.data.last().and_then(|p| text(p, "id")).map(String::from);
            checkpoint.done = !page.has_more || page.data.is_empty();
            self.commit(writes, vec![], vec![checkpoint.checkpoint(&self.key, &name, generation)]).await?;
            self.status.set_progress(&name, checkpoint.fetched, checkpoint.done);
            if checkpoint.done {
                return Ok(checkpoint.fetched);
            }
        }
    }

    /// A page of a child list's parents, newest first after `after`: from
    /// the mirror, or, `expanded`, from the parents' own list with the
    /// child list expanded on each (`fetch_children` then finds it there).
    /// `None`: the parent to go on after is gone.
    async fn parents_page(
        &self,
        job: &Job,
        after: Option<&str>,
        expanded: Option<(&'static Resource, &'static str)>,
    ) -> Result<Option<MirrorPage>, SyncError> {
        let Some((parents, field)) = expanded else {
            let parent_type = job.resource.scope.parent.unwrap_or_default();
            let cursor = after.map_or(ListCursor::Start, |a| ListCursor::After(a.to_string()));
            return Ok(self.shared.store.mirror_list(&self.shared.name, parent_type, self.account.as_deref(), &cursor, MAX_PAGE).await?);
        };
        let mut query = vec![format!("expand%5B%5D=data.{field}")];
        query.extend(after.map(|a| format!("starting_after={}", encode(a))));
        let base = parents.list_path(None).unwrap_or_default();
        let path = Job { resource: parents, pass: 0 }.page_path(base, &query);
        let _permit = self.shared.pages.clone().acquire_owned().await.expect("the page semaphore is never closed");
        match self.get(&path, Lane::Live).await {
            Err(e) if e.is_resource_missing() && after.is_some() => Ok(None),
            Err(e) => Err(e.into()),
            Ok(page) => {
                let (data, has_more) = list_parts(page, &path)?;
                Ok(Some(MirrorPage { data, has_more }))
            }
        }
    }

    /// One parent's children, with the list's path: from the list the
    /// parent row embeds when it holds it complete (invoice lines,
    /// subscription items: no request), else paged from the upstream.
    pub(super) async fn fetch_children(&self, job: &Job, parent: &Value, lane: Lane) -> Result<(Vec<Value>, String), SyncError> {
        let resource = job.resource;
        // a parent without the field a filter needs has no children yet
        let Some(base) = resource.list_path(Some(parent)) else { return Ok((vec![], String::new())) };
        if let Some((_, items)) = embedded_children(parent, &base) {
            return Ok((items, base));
        }
        let _permit = self.shared.pages.clone().acquire_owned().await.expect("the page semaphore is never closed");
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let query: Vec<String> = after.iter().map(|a| format!("starting_after={}", encode(a))).collect();
            let path = job.page_path(base.clone(), &query);
            let page = match self.get(&path, lane).await {
                // the parent is gone upstream: its delete event follows
                Err(e) if e.is_resource_missing() => return Ok((vec![], base)),
                other => other?,
            };
            let (mut page_items, has_more) = list_parts(page, &path)?;
            try_join_all(page_items.iter_mut().map(|item| self.complete_nested(item))).await?;
            after = page_items.last().and_then(|i| text(i, "id")).map(String::from);
            items.extend(page_items);
            if !has_more || !resource.paged || after.is_none() {
                return Ok((items, base));
            }
        }
    }

    /// GET a path as this scope, on `lane`'s share of the budget.
    pub(super) async fn get(&self, path: &str, lane: Lane) -> Result<Value, ClientError> {
        match lane {
            Lane::Live => self.shared.client.get(path, self.account.as_deref()).await,
            Lane::Background => self.shared.client.get_background(path, self.account.as_deref()).await,
            Lane::Reconcile => self.shared.client.get_within(&self.shared.reconcile_share, path, self.account.as_deref()).await,
        }
    }

    /// Complete every truncated nested list of `object` (see
    /// [`super::complete_nested`]); answers the requests it made.
    pub(super) async fn complete_nested(&self, object: &mut Value) -> Result<u64, SyncError> {
        Ok(super::complete_nested(&self.shared.client, self.account.as_deref(), object).await?)
    }

    /// Every event newer than `cursor`, oldest first. `None`: every event
    /// the upstream still lists.
    async fn events_after(&self, cursor: Option<&str>) -> Result<Vec<Value>, SyncError> {
        let account = self.account.as_deref();
        let mut events = Vec::new();
        match cursor {
            Some(cursor) => {
                let mut before = cursor.to_string();
                loop {
                    let path = format!("/v1/events?limit={MAX_PAGE}&ending_before={}", encode(&before));
                    let page = match self.shared.client.get(&path, account).await {
                        Err(e) if e.is_resource_missing() => return Err(SyncError::CursorExpired { cursor: cursor.to_string() }),
                        other => other?,
                    };
                    let (mut page_events, has_more) = list_parts(page, &path)?;
                    let Some(newest) = page_events.first().and_then(|e| text(e, "id")).map(String::from) else { break };
                    before = newest;
                    page_events.reverse();
                    events.extend(page_events);
                    if !has_more {
                        break;
                    }
                }
            }
            None => {
                let mut after: Option<String> = None;
                loop {
                    let path = match &after {
                        Some(a) => format!("/v1/events?limit={MAX_PAGE}&starting_after={}", encode(a)),
                        None => format!("/v1/events?limit={MAX_PAGE}"),
                    };
                    let page = self.shared.client.get(&path, account).await?;
                    let (page_events, has_more) = list_parts(page, &path)?;
                    after = page_events.last().and_then(|e| text(e, "id")).map(String::from);
                    events.extend(page_events);
                    if !has_more || after.is_none() {
                        break;
                    }
                }
                events.reverse();
            }
        }
        Ok(events)
    }

    /// The mirror writes an event asks for: its object's, and the children
    /// it embeds complete of lists followed by their parent (an invoice's
    /// lines). None for events about types this source does not follow by
    /// events.
    async fn event_writes(&self, event: &Value, generation: i64) -> Result<Vec<Write>, SyncError> {
        let event_id = text(event, "id").unwrap_or_default();
        let kind = text(event, "type").unwrap_or_default();
        let snapshot = &event["data"]["object"];
        let (Some(object), Some(id)) = (text(snapshot, "object"), text(snapshot, "id")) else {
            tracing::warn!(source = %self.shared.name, event = event_id, "event without data.object id; nothing to apply");
            return Ok(vec![]);
        };
        let holding: Vec<&Resource> = self.shared.resources.iter().copied().filter(|r| r.holds(object) && r.follow.by_events()).collect();
        // every resource that lists it was refused: its events are not applied either
        if holding.is_empty() || holding.iter().all(|r| jobs(&[*r]).iter().all(|j| self.status.skipped(&j.name()))) {
            return Ok(vec![]);
        }
        // a tombstone ends the object; a canceled subscription's delete
        // event carries the object, which stays (decided per resource)
        let ends = holding.iter().any(|r| r.ending == Ending::Tombstone) && kind.ends_with(".deleted");
        let origin = Origin::Event {
            id: event_id.to_string(),
            kind: kind.to_string(),
            previous_attributes: event["data"].get("previous_attributes").cloned(),
        };
        let write = |object: &str, id: &str, mutation: Mutation, origin: Origin| Write {
            object: object.to_string(),
            id: id.to_string(),
            account: self.account.clone(),
            mutation,
            origin,
            generation,
        };
        if ends || snapshot["deleted"] == true {
            return Ok(vec![write(object, id, Mutation::Delete, origin)]);
        }
        // an event rendered at another version does not have the pinned
        // version's shape: the object is read again at the pinned version
        let mut data = match text(event, "api_version").filter(|v| *v != self.shared.api_version) {
            Some(version) => match self.refetch_at_pinned(snapshot, &holding, version).await? {
                Some(fresh) => fresh,
                // gone upstream since: its delete event follows
                None => return Ok(vec![]),
            },
            None => snapshot.clone(),
        };
        self.complete_nested(&mut data).await?;
        let mut writes = Vec::new();
        let child_origin = || Origin::Event { id: event_id.to_string(), kind: kind.to_string(), previous_attributes: None };
        for child in self.shared.resources.iter().filter(|r| r.follow == Follow::Parent && r.scope.parent == Some(object)) {
            let Some(path) = child.list_path(Some(&data)) else { continue };
            let Some((field, items)) = embedded_children(&data, &path) else { continue };
            let mut kept = HashSet::new();
            for item in items {
                if let (Some(child_object), Some(child_id)) = (text(&item, "object"), text(&item, "id")) {
                    let (child_object, child_id) = (child_object.to_string(), child_id.to_string());
                    kept.insert(child_id.clone());
                    writes.push(write(&child_object, &child_id, Mutation::Upsert(item), child_origin()));
                }
            }
            // a child the list held before this event (its previous
            // attributes show it) and no longer holds is gone from the parent
            let before = event["data"]["previous_attributes"][field.as_str()]["data"].as_array().into_iter().flatten();
            for item in before {
                if let (Some(child_object), Some(child_id)) = (text(item, "object"), text(item, "id"))
                    && !kept.contains(child_id)
                {
                    writes.push(write(child_object, child_id, Mutation::Delete, child_origin()));
                }
            }
        }
        writes.insert(0, write(object, id, Mutation::Upsert(data), origin));
        Ok(writes)
    }

    async fn refetch_at_pinned(&self, snapshot: &Value, holding: &[&Resource], version: &str) -> Result<Option<Value>, SyncError> {
        if self.shared.versions_seen.lock().insert(version.to_string()) {
            tracing::warn!(kind = "event_version_differs", source = %self.shared.name, account = self.account_label(),
                event_api_version = version, api_version = %self.shared.api_version,
                "events rendered at {version} are read again at the pinned {} before they are stored", self.shared.api_version);
        }
        self.refetch(snapshot, holding).await
    }

    /// An object read at the pinned version, for an event rendered at
    /// `version`; `None` when it is gone. Objects only reachable under a
    /// parent keep the event's snapshot.
    async fn refetch(&self, snapshot: &Value, holding: &[&Resource]) -> Result<Option<Value>, SyncError> {
        let (object, id) = (text(snapshot, "object").unwrap_or_default(), text(snapshot, "id").unwrap_or_default());
        let Some(resource) = holding.iter().find(|r| r.scope.parent.is_none()) else {
            tracing::debug!(source = %self.shared.name, object, id, "no top-level list to read it from; the event's snapshot is kept");
            return Ok(Some(snapshot.clone()));
        };
        let path = format!("/v1/{}/{}", resource.path, encode(id));
        match self.shared.client.get(&path, self.account.as_deref()).await {
            Ok(fresh) if text(&fresh, "id") == Some(id) => Ok(Some(fresh)),
            Ok(_) => Err(ClientError::Shape { url: path, reason: format!("not the {object} {id}") }.into()),
            Err(e) if e.is_resource_missing() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every event since the checkpoint, oldest first. Without a cursor
    /// (the upstream had no events yet), a gap longer than the upstream's
    /// retention may hide expired events: that counts as an expired cursor.
    async fn new_events(&self, meta: &Meta) -> Result<Vec<Value>, SyncError> {
        if meta.cursor.is_none() {
            let retention_ms = self.shared.event_retention.as_millis() as i64;
            let since = meta.polled_at_ms.unwrap_or(0);
            if chrono::Utc::now().timestamp_millis() - since > retention_ms {
                return Err(SyncError::CursorExpired { cursor: format!("(none; last poll at {since} ms)") });
            }
        }
        self.events_after(meta.cursor.as_deref()).await
    }

    /// Apply events in order, committing the cursor with each chunk. Without
    /// a cursor, the poll time is committed instead. `last` goes with the
    /// last commit: the writes of objects read again, the cursor when it is
    /// an event not applied now, and what the lookback remembers.
    async fn apply_events(&self, events: &[Value], meta: &mut Meta, started_ms: i64, last: Last) -> Result<u64, SyncError> {
        if events.is_empty() && meta.cursor.is_none() && last.cursor.is_none() {
            meta.polled_at_ms = Some(started_ms);
            let mut checkpoints = vec![self.meta_entry(meta)];
            checkpoints.extend(last.recent.map(|r| r.checkpoint(&self.key)));
            self.commit(last.writes, vec![], checkpoints).await?;
            return Ok(0);
        }
        let mut changes = 0;
        let chunks: Vec<&[Value]> = match events.is_empty() {
            true => vec![&[]],
            false => events.chunks(MAX_PAGE).collect(),
        };
        let count = chunks.len();
        let mut last = Some(last);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut writes: Vec<Write> =
                try_join_all(chunk.iter().map(|e| self.event_writes(e, meta.generation))).await?.into_iter().flatten().collect();
            if let Some(newest) = chunk.last().and_then(|e| text(e, "id")) {
                meta.cursor = Some(newest.to_string());
            }
            let mut recent = None;
            if i + 1 == count
                && let Some(last) = last.take()
            {
                writes.extend(last.writes);
                meta.cursor = last.cursor.or(meta.cursor.take());
                recent = last.recent;
            }
            let mut checkpoints = vec![self.meta_entry(meta)];
            checkpoints.extend(recent.map(|r| r.checkpoint(&self.key)));
            changes += self.commit(writes, vec![], checkpoints).await?.changes;
        }
        self.status.set_cursor(meta.cursor.clone());
        Ok(changes)
    }

    /// Apply every event since `last_event_before_backfill`, collapsed to
    /// the newest per object (its snapshot is at least as new as backfill's).
    async fn catch_up(&self, meta: &mut Meta) -> Result<(), SyncError> {
        self.status.set_phase(Phase::CatchingUp);
        let (round, started) = self.status.begin_round();
        let started_ms = chrono::Utc::now().timestamp_millis();
        let events = self.new_events(meta).await?;
        let seen = events.len();
        // every event read counts as applied for the lookback: the newest
        // per object covers the ones before it
        let mut recent: Recent = Self::parse(&self.checkpoints().await?, "recent")?;
        recent.floor = meta.last_event_before_backfill_created.or(meta.backfill_started_at);
        recent.remember(&events);
        recent.prune(self.shared.lookback_secs);
        let newest = collapse(events);
        // the newest event overall is always kept, so the cursor ends on it
        let changes = self.apply_events(&newest, meta, started_ms, Last::default()).await?;
        meta.phase = MetaPhase::Live;
        let mut checkpoints = vec![self.meta_entry(meta)];
        if self.shared.lookback_secs > 0 {
            checkpoints.push(recent.checkpoint(&self.key));
        }
        self.commit(vec![], vec![], checkpoints).await?;
        self.status.set_phase(Phase::Live);
        self.status.finish_round(round, started);
        self.status.set_error(None);
        tracing::info!(kind = "caught_up", source = %self.shared.name, account = self.account_label(), events = seen,
            applied = newest.len(), changes, cursor = meta.cursor.as_deref().unwrap_or(""), "caught up; tailing events");
        Ok(())
    }

    async fn tail(&self, mut meta: Meta) -> Result<Infallible, SyncError> {
        self.status.set_phase(Phase::Live);
        let lookback = self.shared.lookback_secs;
        let mut recent: Recent = Self::parse(&self.checkpoints().await?, "recent")?;
        // the whole span is read on the first poll, then every third of it
        let mut swept: Option<std::time::Instant> = None;
        loop {
            let (round, started) = self.status.begin_round();
            let started_ms = chrono::Utc::now().timestamp_millis();
            if lookback == 0 {
                let events = self.new_events(&meta).await?;
                self.apply_events(&events, &mut meta, started_ms, Last::default()).await?;
            } else {
                let sweep_every = Duration::from_secs((lookback as u64 / lookback::SWEEPS_PER_SPAN).max(1));
                let sweep = swept.is_none_or(|at| at.elapsed() >= sweep_every);
                let span = if sweep { lookback } else { lookback.min(lookback::NEAR_SECS) };
                self.poll_with_lookback(&mut meta, &mut recent, span, started_ms).await?;
                if sweep {
                    swept = Some(std::time::Instant::now());
                }
            }
            self.status.finish_round(round, started);
            self.status.set_error(None);
            if let Some(lag) = self.shared.status.lag() {
                metrics::gauge!("tributary_source_lag_ms", "source" => self.shared.name.clone()).set(lag.as_millis() as f64);
            }
            // `/wait` callers may add one poll per interval, or per second
            // when the interval is longer (so a long interval still answers)
            let early_gap = self.shared.poll_interval.min(crate::source::EARLY_POLL_GAP);
            self.status.pause(self.shared.poll_interval, early_gap).await;
        }
    }

    /// One poll: the events of the last `span` seconds (which hold the new
    /// ones while the cursor is within it), or those after the cursor; each
    /// applied once, late ones for objects already past them read again.
    async fn poll_with_lookback(&self, meta: &mut Meta, recent: &mut Recent, span: i64, started_ms: i64) -> Result<(), SyncError> {
        let lookback = self.shared.lookback_secs;
        let listed = match (recent.since(span), meta.cursor.as_deref()) {
            (Some(since), Some(cursor)) => self.events_since(since, cursor).await?,
            _ => None,
        };
        let events = match listed {
            Some(events) => events,
            // no event applied yet, or the cursor is older than the span
            None => self.new_events(meta).await?,
        };
        let cursor = events.last().and_then(|e| text(e, "id")).map(String::from);
        let mut next = recent.clone();
        // a scope live before the lookback remembered anything: what came
        // before its first events was applied already
        if next.floor.is_none() && next.newest.is_none() {
            next.floor = events.first().and_then(|e| e["created"].as_i64()).map(|at| at - 1);
        }
        let triage = next.triage(events);
        next.prune(lookback);
        if !triage.refetch.is_empty() {
            tracing::info!(kind = "late_events", source = %self.shared.name, account = self.account_label(), count = triage.refetch.len(),
                "{} events showed after their objects had moved on; reading those objects again", triage.refetch.len());
        }
        let read_at = chrono::Utc::now().timestamp() + lookback::CLOCK_MARGIN_SECS;
        let writes = try_join_all(triage.refetch.iter().map(|e| self.reread(e, meta.generation))).await?.into_iter().flatten().collect();
        for event in &triage.refetch {
            next.read_at(event, read_at);
        }
        let changed = next != *recent;
        let last = Last { writes, cursor, recent: changed.then(|| next.clone()) };
        self.apply_events(&triage.apply, meta, started_ms, last).await?;
        *recent = next;
        Ok(())
    }

    /// Every event created at or after `since` (newest first as listed,
    /// returned oldest first), or `None` when `cursor` is not among them
    /// (it is older than the span: the events after it are read instead).
    async fn events_since(&self, since: i64, cursor: &str) -> Result<Option<Vec<Value>>, SyncError> {
        let mut events = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/events?limit={MAX_PAGE}&created[gte]={since}");
            if let Some(a) = &after {
                path.push_str(&format!("&starting_after={}", encode(a)));
            }
            let page = self.shared.client.get(&path, self.account.as_deref()).await?;
            let (page_events, has_more) = list_parts(page, &path)?;
            after = page_events.last().and_then(|e| text(e, "id")).map(String::from);
            events.extend(page_events);
            if !has_more || after.is_none() {
                break;
            }
        }
        if !events.iter().any(|e| text(e, "id") == Some(cursor)) {
            return Ok(None);
        }
        events.reverse();
        Ok(Some(events))
    }

    /// The writes of an event's object read again at the pinned version,
    /// recorded as that event's change only if it differs from the mirror;
    /// none when it is gone (its delete event follows) or only reachable
    /// under a parent (its next parent event brings it).
    async fn reread(&self, event: &Value, generation: i64) -> Result<Vec<Write>, SyncError> {
        let snapshot = &event["data"]["object"];
        let (Some(object), Some(id)) = (text(snapshot, "object"), text(snapshot, "id")) else { return Ok(vec![]) };
        let holding: Vec<&Resource> = self.shared.resources.iter().copied().filter(|r| r.holds(object) && r.follow.by_events()).collect();
        // every resource that lists it was refused: not applied either
        if holding.is_empty() || holding.iter().all(|r| jobs(&[*r]).iter().all(|j| self.status.skipped(&j.name()))) {
            return Ok(vec![]);
        }
        let ends = holding.iter().any(|r| r.ending == Ending::Tombstone) && text(event, "type").is_some_and(|t| t.ends_with(".deleted"));
        // a deletion is final: no later state to lose
        if ends || snapshot["deleted"] == true {
            return self.event_writes(event, generation).await;
        }
        if !holding.iter().any(|r| r.scope.parent.is_none()) {
            return Ok(vec![]);
        }
        let Some(fresh) = self.refetch(snapshot, &holding).await? else {
            // gone upstream: whatever its events say, it is not there
            let origin = Origin::Event {
                id: text(event, "id").unwrap_or_default().into(),
                kind: text(event, "type").unwrap_or_default().into(),
                previous_attributes: None,
            };
            return Ok(vec![Write {
                object: object.into(),
                id: id.into(),
                account: self.account.clone(),
                mutation: Mutation::Delete,
                origin,
                generation,
            }]);
        };
        let mut event = event.clone();
        event["data"]["object"] = fresh;
        event["api_version"] = json!(self.shared.api_version);
        self.event_writes(&event, generation).await
    }
}

/// What goes with the last commit of a poll.
#[derive(Default)]
struct Last {
    writes: Vec<Write>,
    cursor: Option<String>,
    recent: Option<Recent>,
}

/// One list walk of a resource: one of its passes (`prices` lists active
/// and archived prices in two).
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub resource: &'static Resource,
    pub pass: usize,
}

impl Job {
    /// Its name in progress and checkpoints: the resource's path, with the
    /// pass when it has several (`prices?active=false`).
    pub fn name(&self) -> String {
        match self.resource.passes.as_slice() {
            [_, _, ..] => format!("{}?{}", self.resource.path, self.resource.passes[self.pass]),
            _ => self.resource.path.to_string(),
        }
    }

    /// A page's path: the list's path (with its scope's query), the page
    /// size where it pages, the pass's query and `extra`.
    pub(super) fn page_path(&self, base: String, extra: &[String]) -> String {
        let mut query: Vec<&str> = Vec::new();
        let limit = format!("limit={MAX_PAGE}");
        if self.resource.paged {
            query.push(&limit);
        }
        let pass = &self.resource.passes[self.pass];
        if !pass.is_empty() {
            query.push(pass);
        }
        query.extend(extra.iter().map(String::as_str));
        if query.is_empty() {
            return base;
        }
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}{}", query.join("&"))
    }
}

/// Every list walk of these resources.
pub fn jobs(resources: &[&'static Resource]) -> Vec<Job> {
    resources.iter().flat_map(|resource| (0..resource.passes.len()).map(|pass| Job { resource, pass })).collect()
}

/// Resources in the order backfill takes them: each wave after the waves
/// that list its parents.
pub(super) fn waves(resources: &[&'static Resource]) -> Vec<Vec<&'static Resource>> {
    let mut pending: Vec<&'static Resource> = resources.to_vec();
    let mut waves = Vec::new();
    while !pending.is_empty() {
        let waits = |r: &Resource| r.scope.parent.is_some_and(|p| pending.iter().any(|q| q.path != r.path && q.holds(p)));
        let (mut ready, later): (Vec<_>, Vec<_>) = pending.iter().partition(|r| !waits(r));
        if ready.is_empty() {
            // parents that wait on each other: not in the catalogue; go on
            ready = later.clone();
        }
        pending = later.into_iter().filter(|r| !ready.contains(r)).collect();
        waves.push(ready);
    }
    waves
}

/// The children a parent row embeds complete under the list's own path
/// (`lines` of an invoice is `/v1/invoices/in_…/lines`), with the field
/// that holds them.
pub(super) fn embedded_children(parent: &Value, list_path: &str) -> Option<(String, Vec<Value>)> {
    let Value::Object(fields) = parent else { return None };
    let (field, list) = fields.iter().find(|(_, v)| is_list(v) && v["url"] == list_path && v["has_more"] == false)?;
    Some((field.clone(), list["data"].as_array()?.clone()))
}

/// Keep only the newest event per object, in their original order.
fn collapse(events: Vec<Value>) -> Vec<Value> {
    let key = |e: &Value| -> (String, String) {
        let object = &e["data"]["object"];
        (text(object, "object").unwrap_or_default().to_string(), text(object, "id").unwrap_or_default().to_string())
    };
    let mut newest: HashMap<(String, String), usize> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        newest.insert(key(event), i);
    }
    events.into_iter().enumerate().filter(|(i, e)| newest.get(&key(e)) == Some(i)).map(|(_, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collapse_keeps_the_newest_event_per_object_in_order() {
        let ev = |id: &str, obj: &str| json!({"id": id, "data": {"object": {"object": "customer", "id": obj}}});
        let out = collapse(vec![ev("e1", "a"), ev("e2", "b"), ev("e3", "a"), ev("e4", "c"), ev("e5", "b")]);
        let ids: Vec<&str> = out.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["e3", "e4", "e5"]);
    }

    #[test]
    fn list_parts_rejects_non_lists() {
        assert!(list_parts(json!({"object": "customer"}), "/v1/x").is_err());
        assert!(list_parts(json!({"object": "list", "data": []}), "/v1/x").is_err());
        let (items, more) = list_parts(json!({"object": "list", "data": [{"id": 1}], "has_more": true}), "/v1/x").unwrap();
        assert_eq!((items.len(), more), (1, true));
    }
}
