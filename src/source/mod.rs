//! Sources pull data in from upstream APIs. Each source runs one task per
//! scope (the platform and every connected account) and reports its progress
//! in a [`SourceStatus`] that the API, the demo and `/wait` read.
//!
//! - `stripe`: Stripe-compatible lists plus `/v1/events`
//! - `window`: an API queried by date window, polled for what changed
//! - `event_queue`: an upstream pull queue, acknowledged batch by batch
//! - `http`: the request budget and retry policy every kind shares
//! - `declarative`: auth, paginators and selectors declared as data, which
//!   the `window` and `event_queue` kinds stand on

pub mod declarative;
pub mod drift;
pub mod event_queue;
pub mod http;
pub mod rest;
pub mod stripe;
pub mod window;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::{Notify, watch};

/// Longest gap between two polls that `/wait` callers start early: the
/// window and event queue kinds use it, the stripe kind its
/// `poll_interval_ms` when that is shorter.
pub const EARLY_POLL_GAP: Duration = Duration::from_secs(1);

/// The rounds of a polled source (`window`, `rest`), until it stops: each
/// `round` does one run, logs its own figures and answers the pause before
/// the next (counted from the end of the run; `/wait` cuts it short). A
/// failed run is logged as `{kind}_failed` and retried with backoff; one
/// that no retry can cure (`permanent` names its client error) stops the
/// source until a restart.
pub async fn poll_rounds<E, Fut>(
    status: &SourceStatus,
    scope: &ScopeStatus,
    name: &str,
    kind: &str,
    max_backoff: Duration,
    permanent: fn(&E) -> Option<&http::ClientError>,
    mut round: impl FnMut() -> Fut,
) where
    E: std::error::Error + 'static,
    Fut: std::future::Future<Output = Result<Duration, E>>,
{
    let name = name.to_string();
    let mut failures = 0;
    loop {
        let (id, started) = scope.begin_round();
        let pause = match round().await {
            Ok(pause) => {
                failures = 0;
                status.store_health.ok();
                scope.set_phase(Phase::Live);
                scope.finish_round(id, started);
                status.set_error(None);
                metrics::counter!("tributary_sync_runs_total", "source" => name.clone()).increment(1);
                metrics::histogram!("tributary_sync_run_seconds", "source" => name.clone()).record(started.elapsed().as_secs_f64());
                pause
            }
            Err(ref e) if let Some(client) = permanent(e) => {
                tracing::error!(kind = "source_stopped", source = %name, error = %e, error_kind = client.kind(),
                    "the source stopped; it will not be retried until restart");
                status.set_error(Some(format!("stopped: {e}")));
                return;
            }
            Err(e) => {
                failures += 1;
                status.store_health.failed_if_store(&e);
                let pause = crate::retry::backoff(failures, max_backoff);
                tracing::error!(kind = %format!("{kind}_failed"), source = %name, error = %e, retry_in_ms = pause.as_millis() as u64,
                    "a run failed; retrying");
                metrics::counter!("tributary_sync_failures_total", "source" => name.clone()).increment(1);
                status.set_error(Some(e.to_string()));
                pause
            }
        };
        scope.pause(pause, EARLY_POLL_GAP).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Backfilling,
    CatchingUp,
    Live,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ResourceProgress {
    /// Objects fetched so far (across restarts).
    pub fetched: u64,
    pub done: bool,
    /// Objects per second since this process took the resource up; null
    /// once done (Stripe's lists give no total, so progress is a count and
    /// a rate).
    pub objects_per_sec: Option<f64>,
    /// Why this resource is not mirrored (the key may not read it).
    pub skipped: Option<String>,
    /// When this process took the resource up, and its count then.
    #[serde(skip)]
    #[schema(ignore)]
    started: Option<(Instant, u64)>,
}

/// How one resource is kept current once backfilled, and how current it is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FollowView {
    /// `events` (the events tail), `events+relist` (the tail, and a
    /// periodic re-list for what events miss), `created` (immutable: listed
    /// from the newest object seen), `relist` (listed again periodically),
    /// `parent` (a child list: with its parent's events, and re-listed).
    pub strategy: &'static str,
    /// Everything the upstream held at this time is in the mirror (RFC
    /// 3339): the start of the newest applied events poll, or of the last
    /// complete listing. Null until live.
    pub fresh_at: Option<String>,
    /// When it is listed next; null for resources followed by events only.
    pub next_at: Option<String>,
    /// Changes the last listing recorded.
    pub last_changes: Option<u64>,
}

#[derive(Debug, Clone)]
struct Follow {
    strategy: &'static str,
    by_events: bool,
    listed_at: Option<i64>,
    next_at: Option<i64>,
    last_changes: Option<u64>,
}

fn rfc3339(unix_secs: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(unix_secs, 0).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

#[derive(Debug, Clone)]
struct ScopeState {
    phase: Phase,
    cursor: Option<String>,
    resources: BTreeMap<String, ResourceProgress>,
    follow: BTreeMap<String, Follow>,
    /// Start of the newest poll whose events are all applied: everything the
    /// upstream had before this instant is in the mirror.
    fresh_as_of: Option<Instant>,
    reconcile: Option<ReconcileView>,
}

/// A scope's reconcile as `/v1/sources` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReconcileView {
    /// Whether one is under way.
    pub running: bool,
    /// When the next one is due (RFC 3339); null when only run on request.
    pub next_at: Option<String>,
    /// What the last complete one found and repaired.
    pub last: Option<drift::Tally>,
}

/// One account's sync: phase, backfill progress, cursor, and the poll rounds
/// that `/wait` waits on.
pub struct ScopeStatus {
    /// `None` for the platform.
    pub account: Option<String>,
    state: RwLock<ScopeState>,
    rounds_started: AtomicU64,
    rounds_applied: watch::Sender<u64>,
    /// Wakes the poll loop before its interval is up (`/wait`).
    poll_now: Notify,
    /// When the next early poll may start: however many `/wait` callers
    /// there are, they add at most one poll per interval.
    next_early_poll: parking_lot::Mutex<Option<tokio::time::Instant>>,
    /// This scope's last error, until it recovers (another scope's success
    /// does not clear it).
    last_error: RwLock<Option<String>>,
}

impl ScopeStatus {
    fn new(account: Option<String>) -> Self {
        ScopeStatus {
            account,
            state: RwLock::new(ScopeState {
                phase: Phase::Backfilling,
                cursor: None,
                resources: BTreeMap::new(),
                follow: BTreeMap::new(),
                fresh_as_of: None,
                reconcile: None,
            }),
            rounds_started: AtomicU64::new(0),
            rounds_applied: watch::Sender::new(0),
            poll_now: Notify::new(),
            next_early_poll: parking_lot::Mutex::new(None),
            last_error: RwLock::new(None),
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.state.write().phase = phase;
    }

    /// Whether a reconcile runs, when the next is due, the last one's tally
    /// (kept when `None`).
    pub fn set_reconcile(&self, running: bool, next_at: Option<i64>, last: Option<drift::Tally>) {
        let mut state = self.state.write();
        let last = last.or_else(|| state.reconcile.as_ref().and_then(|r| r.last));
        state.reconcile = Some(ReconcileView { running, next_at: next_at.and_then(rfc3339), last });
    }

    /// Set or (with `None`, after a success) clear this scope's error; a
    /// clear that finds none takes no write lock (it runs every poll).
    pub fn set_error(&self, error: Option<String>) {
        if error.is_none() && self.last_error.read().is_none() {
            return;
        }
        *self.last_error.write() = error;
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().clone()
    }

    pub fn phase(&self) -> Phase {
        self.state.read().phase
    }

    pub fn set_cursor(&self, cursor: Option<String>) {
        self.state.write().cursor = cursor;
    }

    /// The key may not read this resource: it is skipped, for `reason`.
    pub fn skip(&self, object: &str, reason: String) {
        let mut state = self.state.write();
        let progress = state.resources.entry(object.to_string()).or_default();
        progress.skipped = Some(reason);
        progress.done = true;
        progress.objects_per_sec = None;
    }

    /// Whether `object` was skipped.
    pub fn skipped(&self, object: &str) -> bool {
        self.state.read().resources.get(object).is_some_and(|p| p.skipped.is_some())
    }

    /// A resource's backfill reached `fetched` objects (`done`: all of them).
    pub fn set_progress(&self, object: &str, fetched: u64, done: bool) {
        let mut state = self.state.write();
        let progress = state.resources.entry(object.to_string()).or_default();
        let (since, from) = *progress.started.get_or_insert((Instant::now(), fetched));
        let elapsed = since.elapsed().as_secs_f64();
        progress.objects_per_sec =
            (!done && elapsed > 0.0).then(|| ((fetched.saturating_sub(from)) as f64 / elapsed * 10.0).round() / 10.0);
        progress.fetched = fetched;
        progress.done = done;
    }

    /// How `resource` is followed (`by_events`: the tail keeps it fresh).
    pub fn set_strategy(&self, resource: &str, strategy: &'static str, by_events: bool) {
        let mut state = self.state.write();
        state.follow.entry(resource.to_string()).or_insert(Follow {
            strategy,
            by_events,
            listed_at: None,
            next_at: None,
            last_changes: None,
        });
    }

    /// A listing of `resource` that began at `listed_at` completed with
    /// `changes` (`None`: none yet since start); the next is due `next_at`
    /// (unix seconds).
    pub fn set_listed(&self, resource: &str, listed_at: Option<i64>, next_at: i64, changes: Option<u64>) {
        let mut state = self.state.write();
        if let Some(follow) = state.follow.get_mut(resource) {
            follow.listed_at = listed_at.or(follow.listed_at);
            follow.next_at = Some(next_at);
            follow.last_changes = changes.or(follow.last_changes);
        }
    }

    pub fn resources(&self) -> BTreeMap<String, ResourceProgress> {
        self.state.read().resources.clone()
    }

    /// Mark the start of a poll of the upstream; returns its round number.
    pub fn begin_round(&self) -> (u64, Instant) {
        (self.rounds_started.fetch_add(1, Ordering::SeqCst) + 1, Instant::now())
    }

    /// Everything the poll `round` (started at `started`) found is applied.
    pub fn finish_round(&self, round: u64, started: Instant) {
        self.state.write().fresh_as_of = Some(started);
        self.rounds_applied.send_if_modified(|applied| {
            let advanced = round > *applied;
            *applied = (*applied).max(round);
            advanced
        });
    }

    /// The pause between two polls: `pause`, or less when a `/wait` caller
    /// needs a poll. Early polls start at most once per `early_gap`, so any
    /// number of callers share them instead of each buying its own.
    pub async fn pause(&self, pause: Duration, early_gap: Duration) {
        let deadline = tokio::time::Instant::now() + pause;
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = self.poll_now.notified() => {}
        }
        let now = tokio::time::Instant::now();
        let early = {
            let mut next = self.next_early_poll.lock();
            let at = next.map_or(now, |t| t.max(now));
            // past the deadline the scheduled poll serves the caller anyway
            if at < deadline {
                *next = Some(at + early_gap);
            }
            at.min(deadline)
        };
        tokio::time::sleep_until(early).await;
    }

    /// Wait until a poll that starts after this call has been applied.
    pub async fn wait_for_next_round(&self) {
        let target = self.rounds_started.load(Ordering::SeqCst) + 1;
        self.poll_now.notify_one();
        let mut applied = self.rounds_applied.subscribe();
        let _ = applied.wait_for(|round| *round >= target).await;
    }

    pub fn lag(&self) -> Option<Duration> {
        Self::lag_of(&self.state.read())
    }

    /// Age of the newest fully applied poll; `None` until live.
    fn lag_of(state: &ScopeState) -> Option<Duration> {
        if state.phase != Phase::Live {
            return None;
        }
        state.fresh_as_of.map(|t| t.elapsed())
    }

    pub fn snapshot(&self) -> ScopeView {
        let state = self.state.read();
        ScopeView {
            account: self.account.clone(),
            phase: state.phase,
            cursor: state.cursor.clone(),
            lag_ms: Self::lag_of(&state).map(|l| l.as_millis() as u64),
            backfill: state.resources.clone(),
            follow: Self::follow_of(&state),
            reconcile: state.reconcile.clone(),
            last_error: self.last_error(),
        }
    }

    fn follow_of(state: &ScopeState) -> BTreeMap<String, FollowView> {
        let tail_fresh = Self::lag_of(state).map(|lag| (chrono::Utc::now() - lag).to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let live = state.phase == Phase::Live;
        state
            .follow
            .iter()
            .map(|(name, f)| {
                let fresh_at = if f.by_events { tail_fresh.clone() } else { f.listed_at.filter(|_| live).and_then(rfc3339) };
                let view = FollowView {
                    strategy: f.strategy,
                    fresh_at,
                    next_at: f.next_at.filter(|_| live).and_then(rfc3339),
                    last_changes: f.last_changes,
                };
                (name.clone(), view)
            })
            .collect()
    }
}

/// One scope of a source as `/v1/sources` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScopeView {
    /// The connected account; null for the platform (or a source without
    /// accounts).
    pub account: Option<String>,
    pub phase: Phase,
    /// Where the tail reads next (an event id for stripe).
    pub cursor: Option<String>,
    /// Age of the newest fully applied poll; null until live.
    pub lag_ms: Option<u64>,
    /// Per resource list (and pass): how far its backfill got.
    pub backfill: BTreeMap<String, ResourceProgress>,
    /// Per resource: how it is kept current, and how current it is.
    pub follow: BTreeMap<String, FollowView>,
    /// Its reconcile; null for kinds without one.
    pub reconcile: Option<ReconcileView>,
    pub last_error: Option<String>,
}

/// A running source as the API shows it.
pub struct SourceStatus {
    pub name: String,
    pub kind: &'static str,
    scopes: RwLock<Vec<Arc<ScopeStatus>>>,
    /// True once every scope is known (connected accounts listed).
    scopes_ready: watch::Sender<bool>,
    /// Whether this process runs the source (with several processes on one
    /// database, the others stand by).
    owner: std::sync::atomic::AtomicBool,
    last_error: RwLock<Option<String>>,
    /// A store error the source is stuck on (`/health`).
    pub store_health: crate::store::StoreHealth,
    /// Counts reconciles asked for in this process.
    reconcile_asked: watch::Sender<u64>,
}

impl SourceStatus {
    pub fn new(name: &str, kind: &'static str) -> Arc<Self> {
        Arc::new(SourceStatus {
            name: name.to_string(),
            kind,
            scopes: RwLock::new(Vec::new()),
            scopes_ready: watch::Sender::new(false),
            owner: std::sync::atomic::AtomicBool::new(false),
            last_error: RwLock::new(None),
            store_health: Default::default(),
            reconcile_asked: watch::Sender::new(0),
        })
    }

    pub fn add_scope(&self, account: Option<String>) -> Arc<ScopeStatus> {
        let scope = Arc::new(ScopeStatus::new(account));
        self.scopes.write().push(scope.clone());
        scope
    }

    pub fn set_owner(&self, owner: bool) {
        self.owner.store(owner, Ordering::SeqCst);
    }

    pub fn is_owner(&self) -> bool {
        self.owner.load(Ordering::SeqCst)
    }

    /// Forget the runtime's scopes: the source stopped here (ownership lost).
    pub fn reset(&self) {
        self.set_owner(false);
        self.scopes.write().clear();
        self.scopes_ready.send_replace(false);
    }

    /// Wake this process's scopes to look for a reconcile request.
    pub fn ask_reconcile(&self) {
        self.reconcile_asked.send_modify(|n| *n += 1);
    }

    /// Changes when a reconcile is asked for in this process.
    pub fn reconcile_requests(&self) -> watch::Receiver<u64> {
        self.reconcile_asked.subscribe()
    }

    /// Every scope has been added.
    pub fn set_scopes_ready(&self) {
        self.scopes_ready.send_replace(true);
    }

    pub fn scopes(&self) -> Vec<Arc<ScopeStatus>> {
        self.scopes.read().clone()
    }

    pub fn set_error(&self, error: Option<String>) {
        *self.last_error.write() = error;
    }

    /// The source's own error (it cannot run, or list its accounts), else
    /// the first of its scopes'.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().clone().or_else(|| self.scopes().iter().find_map(|s| s.last_error()))
    }

    /// The least advanced phase of any scope.
    pub fn phase(&self) -> Phase {
        self.scopes().iter().map(|s| s.phase()).min().unwrap_or(Phase::Backfilling)
    }

    /// Age of the oldest scope's freshness; `None` until every scope is live.
    pub fn lag(&self) -> Option<Duration> {
        if !*self.scopes_ready.borrow() {
            return None;
        }
        let scopes = self.scopes();
        scopes.iter().map(|s| s.lag()).collect::<Option<Vec<_>>>()?.into_iter().max()
    }

    /// Wait until every scope has applied a poll that started after this call.
    pub async fn wait(&self) {
        let _ = self.scopes_ready.subscribe().wait_for(|ready| *ready).await;
        let scopes = self.scopes();
        futures::future::join_all(scopes.iter().map(|s| s.wait_for_next_round())).await;
    }
}

/// Every source of this process.
#[derive(Default)]
pub struct Registry {
    sources: RwLock<Vec<Arc<SourceStatus>>>,
}

impl Registry {
    pub fn add(&self, status: Arc<SourceStatus>) {
        self.sources.write().push(status);
    }

    pub fn get(&self, name: &str) -> Option<Arc<SourceStatus>> {
        self.sources.read().iter().find(|s| s.name == name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<SourceStatus>> {
        self.sources.read().clone()
    }

    /// Set the `tributary_source_lag_ms` gauge of every live source.
    pub fn record_lag(&self) {
        for source in self.all() {
            if let Some(lag) = source.lag() {
                metrics::gauge!("tributary_source_lag_ms", "source" => source.name.clone()).set(lag.as_millis() as f64);
            }
        }
    }
}

/// Keep the lag gauges current between scrapes (a push to StatsD reads
/// them), once a second.
pub async fn record_lag_forever(registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        registry.record_lag();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls a loop makes in `span` of (paused) time while `waiters` keep
    /// asking for early polls.
    async fn polls_in(span: Duration, waiters: bool) -> u32 {
        let scope = Arc::new(ScopeStatus::new(None));
        let interval = Duration::from_millis(500);
        let looping = scope.clone();
        let poller = tokio::spawn(async move {
            let until = tokio::time::Instant::now() + span;
            let mut polls = 0u32;
            while tokio::time::Instant::now() < until {
                polls += 1;
                let (round, started) = looping.begin_round();
                looping.finish_round(round, started);
                looping.pause(interval, interval).await;
            }
            polls
        });
        if waiters {
            let asking = scope.clone();
            tokio::spawn(async move {
                loop {
                    asking.poll_now.notify_one();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        }
        poller.await.unwrap()
    }

    /// However many `/wait` callers there are, they add at most one poll
    /// per interval to the scheduled one (a clock under test control, no
    /// real waiting).
    #[tokio::test(start_paused = true)]
    async fn waiters_add_at_most_one_early_poll_per_interval() {
        let span = Duration::from_secs(10);
        let alone = polls_in(span, false).await;
        let asked = polls_in(span, true).await;
        assert!((19..=21).contains(&alone), "{alone} scheduled polls in 10 s at 500 ms");
        assert!(asked > alone, "waiters got no early poll: {asked}");
        assert!(asked <= 2 * alone + 1, "{asked} polls with waiters, {alone} without");
    }

    /// A poll that started after the call serves every caller waiting.
    #[tokio::test(start_paused = true)]
    async fn one_poll_serves_every_waiter() {
        let scope = Arc::new(ScopeStatus::new(None));
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let scope = scope.clone();
                tokio::spawn(async move { scope.wait_for_next_round().await })
            })
            .collect();
        tokio::task::yield_now().await;
        let (round, started) = scope.begin_round();
        scope.finish_round(round, started);
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("served by the one poll").unwrap();
        }
    }
}
