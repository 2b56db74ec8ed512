//! Reconcile and verify: list every resource again, compare each object
//! with the mirror, and repair (reconcile) or report (`tributary verify`)
//! what differs.
//!
//! - *Missing* (listed, not in the mirror) is inserted, *differing* is
//!   updated, *extra* (in the mirror, not listed) is deleted, each as a
//!   change typed `{object}.reconciled`. An object is judged extra only
//!   for object types that end with a tombstone or go with their parent
//!   (child lists), and that no other configured list shows: a listing
//!   does not prove that an object that stays is gone.
//! - *Not against the tail*: the change log's head is noted before a page
//!   is read; after the comparison, the tail is given one poll (reconcile)
//!   or a moment (verify) to apply what is in flight, and an object with a
//!   change after that head is left to it. A repair is applied only while
//!   the mirror still holds the state it was compared with
//!   ([`Origin::Reconcile`]), so a write racing the commit wins.
//! - *Extras by range*: a single-pass top-level list comes newest first, so
//!   once a page ends at creation time `lo`, every object created after
//!   `lo` (and before the listing began) has been listed: mirror rows in
//!   that span that were not are extra. Other lists (several passes, child
//!   lists walked from their parents) judge extras when they are complete,
//!   if they ran in one go.
//! - *Checkpointed*: the position (resource, pass, last id, judged span)
//!   is committed with each page's repairs, so a killed reconcile resumes
//!   at the next page and repairs nothing twice (a repaired object matches
//!   the next time it is compared anyway).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sync::{Job, Lane, ScopeSync, SyncError, jobs, list_parts, text};
use crate::source::drift::{Drifted, ResourceDrift, Tally, differing_fields};
use crate::source::http::{ClientError, encode};
use crate::store::{Checkpoint, Mutation, Origin, Write};
use crate::stripe_api::{Ending, MAX_PAGE, Resource};

/// Upstream clocks and ours may differ by this much: objects created this
/// close to the start of a listing are not judged extra by it.
const CLOCK_MARGIN_SECS: i64 = 2;
/// How long a reconcile page waits for the tail to apply what is in flight.
const TAIL_SETTLE: Duration = Duration::from_secs(30);
/// How long `verify` gives a running engine to apply what is in flight.
const VERIFY_SETTLE: Duration = Duration::from_secs(2);
/// Parents whose children are compared together.
const PARENTS_PER_STEP: usize = 100;

/// Repair what differs, or only report it.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Repair,
    Report { limit_ids: usize },
}

/// Where the reconcile under way stands within one resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct At {
    resource: String,
    pass: usize,
    /// The last object (top-level lists) or parent (child lists) done.
    after: Option<String>,
    /// Top-level lists: every object created after this was listed (and
    /// extras judged up to it).
    judged_down_to: Option<i64>,
}

/// A scope's reconcile, as its checkpoint (`{scope}/reconcile`) keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ReconcileCheckpoint {
    /// When the last complete reconcile finished (unix seconds).
    pub finished_at: Option<i64>,
    /// When the one under way started; `None` when none is.
    pub started_at: Option<i64>,
    /// Resources the one under way has done.
    done: Vec<String>,
    at: Option<At>,
    /// What the one under way found so far (the last one's, once done).
    pub tally: Tally,
}

/// One candidate repair: a listed object (or `None`, an extra) and the
/// mirror state it was compared with.
struct Candidate {
    object: String,
    id: String,
    listed: Option<Value>,
    held: Option<Value>,
}

/// A comparison's progress over one resource.
struct Pass<'a> {
    mode: Mode,
    tally: &'a mut Tally,
    sample: &'a mut Vec<Drifted>,
    /// Report: what differed, settled once at the end (the change log's
    /// head before the first of them was read).
    deferred: Vec<Candidate>,
    deferred_head: Option<i64>,
}

impl<'a> Pass<'a> {
    fn new(mode: Mode, tally: &'a mut Tally, sample: &'a mut Vec<Drifted>) -> Self {
        Pass { mode, tally, sample, deferred: Vec::new(), deferred_head: None }
    }
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl ScopeSync {
    fn reconcile_key(&self) -> String {
        format!("{}/reconcile", self.key)
    }

    fn reconcile_value(&self, state: &ReconcileCheckpoint) -> Result<Value, SyncError> {
        serde_json::to_value(state).map_err(|e| SyncError::Checkpoint { key: self.reconcile_key(), reason: e.to_string() })
    }

    /// Object types `resource`'s listing may judge gone.
    fn judged(&self, resource: &Resource) -> Vec<&'static str> {
        if resource.ending != Ending::Tombstone && resource.scope.parent.is_none() {
            return vec![];
        }
        resource.objects.iter().copied().filter(|o| self.shared.resources.iter().filter(|r| r.holds(o)).count() == 1).collect()
    }

    /// Run reconciles forever: when one is due (`reconcile_every`), asked
    /// for (`POST /v1/sources/{name}/reconcile`), or under way at start.
    pub(super) async fn reconcile_forever(&self, backfilled_at: Option<i64>) -> Result<std::convert::Infallible, SyncError> {
        let mut asked = self.shared.status.reconcile_requests();
        let first_seen = unix_now();
        loop {
            let checkpoints = self.shared.store.checkpoints(&self.shared.name).await?;
            let state: ReconcileCheckpoint = match checkpoints.get(&self.reconcile_key()) {
                Some(value) => serde_json::from_value(value.clone())
                    .map_err(|e| SyncError::Checkpoint { key: self.reconcile_key(), reason: e.to_string() })?,
                None => ReconcileCheckpoint::default(),
            };
            let requested = checkpoints.get("reconcile/requested").and_then(|v| v["at"].as_i64());
            let last = state.finished_at.or(backfilled_at).unwrap_or(first_seen);
            let due = self.shared.reconcile_every.map(|every| last + every.as_secs() as i64);
            self.status.set_reconcile(state.started_at.is_some(), due, state.finished_at.map(|_| state.tally));
            let asked_since = requested.is_some_and(|at| at > state.started_at.or(state.finished_at).unwrap_or(i64::MIN));
            if state.started_at.is_some() || asked_since || due.is_some_and(|due| due <= unix_now()) {
                // a failing reconcile waits and resumes from its checkpoint;
                // the tail beside it goes on
                if let Err(error) = self.reconcile(state).await {
                    let pause = self.shared.client.max_backoff();
                    tracing::error!(kind = "reconcile_error", source = %self.shared.name, account = self.account_label(), error = %error,
                        error_kind = error.kind(), retry_in_ms = pause.as_millis() as u64, "reconcile stopped; resuming from its checkpoint");
                    self.status.set_reconcile(true, None, None);
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
            // asked here, or on another instance (seen at the next look)
            let wait = due.map_or(Duration::from_secs(30), |due| Duration::from_secs((due - unix_now()).clamp(0, 30) as u64));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = asked.changed() => {}
            }
        }
    }

    /// Run (or resume) one reconcile to its end.
    async fn reconcile(&self, mut state: ReconcileCheckpoint) -> Result<(), SyncError> {
        let clock = std::time::Instant::now();
        let started_at = match state.started_at {
            Some(at) => {
                tracing::info!(kind = "reconcile_resumed", source = %self.shared.name, account = self.account_label(),
                    done = state.done.len(), "resuming the reconcile under way");
                at
            }
            None => {
                let now = unix_now();
                state = ReconcileCheckpoint { finished_at: state.finished_at, started_at: Some(now), ..Default::default() };
                self.commit(vec![], vec![], vec![Checkpoint::unordered(self.reconcile_key(), self.reconcile_value(&state)?)]).await?;
                tracing::info!(kind = "reconcile_started", source = %self.shared.name, account = self.account_label(),
                    resources = self.shared.resources.len(), "comparing every resource with the upstream");
                now
            }
        };
        self.status.set_reconcile(true, None, None);
        for resource in super::sync::waves(&self.shared.resources).into_iter().flatten() {
            if state.done.iter().any(|done| done == resource.path) {
                continue;
            }
            let at = state.at.take().filter(|at| at.resource == resource.path);
            let mut tally = Tally::default();
            let mut sample = Vec::new();
            let mut pass = Pass::new(Mode::Repair, &mut tally, &mut sample);
            let result = self.compare_resource(resource, at, started_at, &mut pass, &mut state).await;
            match result {
                Err(SyncError::Client(e)) if e.skips_resource() => self.skipped(resource.path, &e.to_string()),
                other => other?,
            }
            state.done.push(resource.path.to_string());
            state.at = None;
            self.commit(vec![], vec![], vec![Checkpoint::unordered(self.reconcile_key(), self.reconcile_value(&state)?)]).await?;
        }
        let finished = ReconcileCheckpoint { finished_at: Some(unix_now()), started_at: None, done: vec![], at: None, tally: state.tally };
        self.commit(vec![], vec![], vec![Checkpoint::unordered(self.reconcile_key(), self.reconcile_value(&finished)?)]).await?;
        let t = finished.tally;
        let duration_ms = clock.elapsed().as_millis() as u64;
        let source = self.shared.name.clone();
        for (outcome, count) in
            [("checked", t.checked), ("missing", t.missing), ("extra", t.extra), ("differed", t.differed), ("repaired", t.repaired)]
        {
            metrics::counter!("tributary_reconcile_objects_total", "source" => source.clone(), "outcome" => outcome).increment(count);
        }
        metrics::counter!("tributary_reconciles_total", "source" => source.clone()).increment(1);
        metrics::gauge!("tributary_reconcile_last_drift", "source" => source.clone()).set(t.drift() as f64);
        tracing::info!(kind = "reconcile_complete", source = %source, account = self.account_label(), checked = t.checked,
            missing = t.missing, extra = t.extra, differed = t.differed, repaired = t.repaired, left_to_tail = t.left_to_tail,
            requests = t.requests, duration_ms, "reconciled {} objects: {} missing, {} extra, {} differed, {} repaired",
            t.checked, t.missing, t.extra, t.differed, t.repaired);
        let due = self.shared.reconcile_every.map(|every| unix_now() + every.as_secs() as i64);
        self.status.set_reconcile(false, due, Some(t));
        Ok(())
    }

    /// Compare one resource of this scope with the upstream, writing
    /// nothing; `resource` names it by path.
    pub(super) async fn verify_resource(&self, resource: &'static Resource, limit_ids: usize) -> Result<ResourceDrift, SyncError> {
        let mut tally = Tally::default();
        let mut sample = Vec::new();
        let mut pass = Pass::new(Mode::Report { limit_ids }, &mut tally, &mut sample);
        let mut state = ReconcileCheckpoint::default();
        self.compare_resource(resource, None, unix_now(), &mut pass, &mut state).await?;
        // what differed is judged once, after a running engine had a moment
        // to apply what was in flight
        if let Some(head) = pass.deferred_head {
            tokio::time::sleep(VERIFY_SETTLE).await;
            let candidates = std::mem::take(&mut pass.deferred);
            self.count_and_repair(candidates, head, &mut pass, &mut state, None).await?;
        }
        Ok(ResourceDrift { resource: resource.path.to_string(), account: self.account.clone(), tally, sample })
    }

    /// Compare every pass of a resource, from `at` when resuming.
    async fn compare_resource(
        &self,
        resource: &'static Resource,
        at: Option<At>,
        started_at: i64,
        pass: &mut Pass<'_>,
        state: &mut ReconcileCheckpoint,
    ) -> Result<(), SyncError> {
        let judged = self.judged(resource);
        let ranged = resource.scope.parent.is_none() && resource.passes.len() == 1;
        // every object this listing returned, for extras judged at its end
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let resumed = at.is_some();
        let head = self.shared.store.change_head().await?;
        // the mirror's rows of the judged types, newest first
        let mut keys: Vec<(i64, String, String)> = Vec::new();
        for object in &judged {
            let rows = self.shared.store.mirror_keys(&self.shared.name, object, self.account.as_deref()).await?;
            keys.extend(rows.into_iter().map(|(id, created)| (created.unwrap_or(i64::MIN), object.to_string(), id)));
        }
        keys.sort_unstable_by(|a, b| b.cmp(a));
        for job in jobs(&[resource]) {
            if at.as_ref().is_some_and(|at| job.pass < at.pass) {
                continue;
            }
            if self.status.skipped(&job.name()) {
                return Ok(());
            }
            let at = at.clone().filter(|at| at.pass == job.pass).unwrap_or_default();
            match resource.scope.parent {
                None => self.compare_top(&job, at, started_at, ranged, &keys, &mut seen, pass, state).await?,
                Some(parent) => self.compare_children(&job, parent, at, &mut seen, pass, state).await?,
            }
        }
        if ranged || resumed || judged.is_empty() {
            return Ok(());
        }
        // a whole listing in one go: what it did not return is extra,
        // unless it was created after the listing began
        let floor = started_at - CLOCK_MARGIN_SECS;
        let extra: Vec<(String, String)> = keys
            .iter()
            .filter(|(created, object, id)| *created < floor && !seen.contains(&(object.clone(), id.clone())))
            .map(|(_, object, id)| (object.clone(), id.clone()))
            .collect();
        for chunk in extra.chunks(MAX_PAGE) {
            let candidates = self.extras(chunk).await?;
            self.settle_and_repair(candidates, head, pass, state, None).await?;
        }
        Ok(())
    }

    /// Page a top-level list from `at`, comparing each page.
    #[allow(clippy::too_many_arguments)]
    async fn compare_top(
        &self,
        job: &Job,
        at: At,
        started_at: i64,
        ranged: bool,
        keys: &[(i64, String, String)],
        seen: &mut HashSet<(String, String)>,
        pass: &mut Pass<'_>,
        state: &mut ReconcileCheckpoint,
    ) -> Result<(), SyncError> {
        let resource = job.resource;
        let base = resource.list_path(None).unwrap_or_default();
        let resumed = at.after.is_some();
        let mut after = at.after;
        // objects created this close to the start are not judged: the
        // listing may have begun before they were made
        let mut judged_down_to = at.judged_down_to.unwrap_or(started_at - CLOCK_MARGIN_SECS);
        // after a resume, objects created in the second the last page ended
        // may have been listed before the stop: not judged this time
        let mut boundary_open = resumed;
        loop {
            let head = self.shared.store.change_head().await?;
            let query: Vec<String> = after.iter().map(|a| format!("starting_after={}", encode(a))).collect();
            let path = job.page_path(base.clone(), &query);
            let page = self.get(&path, Lane::Reconcile).await?;
            pass.tally.requests += 1;
            let (mut items, has_more) = list_parts(page, &path)?;
            for item in items.iter_mut() {
                pass.tally.requests += self.complete_nested(item).await?;
            }
            after = items.last().and_then(|i| text(i, "id")).map(String::from);
            let lowest = items.iter().filter_map(|i| i["created"].as_i64()).min();
            let last_page = !has_more || !resource.paged || after.is_none();
            seen.extend(
                items.iter().filter_map(|i| Some((text(i, "object").unwrap_or(resource.object).to_string(), text(i, "id")?.to_string()))),
            );
            let mut candidates = self.differing(items, resource, &path, pass).await?;
            if ranged {
                // every object created in (lowest, judged_down_to] is listed by now
                let down_to = if last_page { i64::MIN } else { lowest.unwrap_or(judged_down_to) };
                let extra: Vec<(String, String)> = keys
                    .iter()
                    .filter(|(created, _, _)| {
                        *created > down_to && (*created < judged_down_to || (*created == judged_down_to && !boundary_open))
                    })
                    .filter(|(_, object, id)| !seen.contains(&(object.clone(), id.clone())))
                    .map(|(_, object, id)| (object.clone(), id.clone()))
                    .collect();
                candidates.extend(self.extras(&extra).await?);
                if down_to < judged_down_to {
                    judged_down_to = down_to;
                    boundary_open = false;
                }
            }
            let position =
                At { resource: resource.path.to_string(), pass: job.pass, after: after.clone(), judged_down_to: Some(judged_down_to) };
            self.settle_and_repair(candidates, head, pass, state, Some(position)).await?;
            if last_page {
                return Ok(());
            }
        }
    }

    /// Walk a child list from its parents' mirror rows, in id order, from
    /// the parent after `at.after`.
    async fn compare_children(
        &self,
        job: &Job,
        parent: &str,
        at: At,
        seen: &mut HashSet<(String, String)>,
        pass: &mut Pass<'_>,
        state: &mut ReconcileCheckpoint,
    ) -> Result<(), SyncError> {
        let account = self.account.as_deref();
        let mut parents: Vec<String> =
            self.shared.store.mirror_keys(&self.shared.name, parent, account).await?.into_iter().map(|(id, _)| id).collect();
        parents.sort_unstable();
        if let Some(after) = &at.after {
            parents.retain(|id| id > after);
        }
        for step in parents.chunks(PARENTS_PER_STEP) {
            let head = self.shared.store.change_head().await?;
            let rows = self.shared.store.mirror_objects(&self.shared.name, parent, account, step).await?;
            let mut candidates = Vec::new();
            for id in step {
                // a parent deleted since the walk began has no children
                let Some(row) = rows.get(id) else { continue };
                let (items, url) = self.fetch_children(job, row, Lane::Reconcile).await?;
                // children embedded complete in the parent row cost no request
                if !url.is_empty() && super::sync::embedded_children(row, &url).is_none() {
                    pass.tally.requests += 1;
                }
                seen.extend(
                    items
                        .iter()
                        .filter_map(|i| Some((text(i, "object").unwrap_or(job.resource.object).to_string(), text(i, "id")?.to_string()))),
                );
                candidates.extend(self.differing(items, job.resource, &url, pass).await?);
            }
            let position =
                At { resource: job.resource.path.to_string(), pass: job.pass, after: step.last().cloned(), judged_down_to: None };
            self.settle_and_repair(candidates, head, pass, state, Some(position)).await?;
        }
        Ok(())
    }

    /// The listed objects that the mirror lacks or holds otherwise.
    async fn differing(&self, items: Vec<Value>, resource: &Resource, url: &str, pass: &mut Pass<'_>) -> Result<Vec<Candidate>, SyncError> {
        pass.tally.checked += items.len() as u64;
        let mut by_object: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for item in items {
            let object = text(&item, "object").unwrap_or(resource.object).to_string();
            by_object.entry(object).or_default().push(item);
        }
        let mut candidates = Vec::new();
        for (object, items) in by_object {
            let mut ids = Vec::with_capacity(items.len());
            for item in &items {
                let id = text(item, "id").ok_or_else(|| ClientError::Shape { url: url.to_string(), reason: "object without id".into() })?;
                ids.push(id.to_string());
            }
            let mut held = self.shared.store.mirror_objects(&self.shared.name, &object, self.account.as_deref(), &ids).await?;
            for (item, id) in items.into_iter().zip(ids) {
                let held = held.remove(&id);
                if held.as_ref() != Some(&item) {
                    candidates.push(Candidate { object: object.clone(), id, listed: Some(item), held });
                }
            }
        }
        Ok(candidates)
    }

    /// Mirror rows the listing did not return, with their states.
    async fn extras(&self, keys: &[(String, String)]) -> Result<Vec<Candidate>, SyncError> {
        let mut by_object: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (object, id) in keys {
            by_object.entry(object).or_default().push(id.clone());
        }
        let mut candidates = Vec::new();
        for (object, ids) in by_object {
            let held = self.shared.store.mirror_objects(&self.shared.name, object, self.account.as_deref(), &ids).await?;
            candidates.extend(held.into_iter().map(|(id, row)| Candidate {
                object: object.to_string(),
                id,
                listed: None,
                held: Some(row),
            }));
        }
        Ok(candidates)
    }

    /// Give the tail its chance at what differs (verify: at the end), then
    /// count and repair what is left.
    async fn settle_and_repair(
        &self,
        candidates: Vec<Candidate>,
        head: i64,
        pass: &mut Pass<'_>,
        state: &mut ReconcileCheckpoint,
        position: Option<At>,
    ) -> Result<(), SyncError> {
        if candidates.is_empty() {
            return self.count_and_repair(candidates, head, pass, state, position).await;
        }
        if let Mode::Report { .. } = pass.mode {
            pass.deferred_head = Some(pass.deferred_head.map_or(head, |h| h.min(head)));
            pass.deferred.extend(candidates);
            return Ok(());
        }
        // a poll of the tail that starts now applies what was in flight
        let _ = tokio::time::timeout(TAIL_SETTLE, self.status.wait_for_next_round()).await;
        self.count_and_repair(candidates, head, pass, state, position).await
    }

    /// Leave to the tail what it changed after `head`, count the rest, and
    /// repair it (with the position reached, committed together).
    async fn count_and_repair(
        &self,
        mut candidates: Vec<Candidate>,
        head: i64,
        pass: &mut Pass<'_>,
        state: &mut ReconcileCheckpoint,
        position: Option<At>,
    ) -> Result<(), SyncError> {
        if !candidates.is_empty() {
            let changed = self.shared.store.changed_after(&self.shared.name, head).await?;
            let before = candidates.len();
            candidates.retain(|c| !changed.contains(&(c.object.clone(), c.id.clone())));
            pass.tally.left_to_tail += (before - candidates.len()) as u64;
        }
        let mut writes = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            let (how, fields) = match (&candidate.listed, &candidate.held) {
                (Some(_), None) => ("missing", vec![]),
                (None, _) => ("extra", vec![]),
                (Some(listed), Some(held)) => ("differs", differing_fields(held, listed)),
            };
            match how {
                "missing" => pass.tally.missing += 1,
                "extra" => pass.tally.extra += 1,
                _ => pass.tally.differed += 1,
            }
            match pass.mode {
                Mode::Report { limit_ids } => {
                    if pass.sample.len() < limit_ids {
                        pass.sample.push(Drifted { object: candidate.object, id: candidate.id, how, fields });
                    }
                }
                Mode::Repair => {
                    let mutation = match &candidate.listed {
                        Some(listed) => Mutation::serialized(listed).map_err(|e| ClientError::Shape {
                            url: format!("{} {}", candidate.object, candidate.id),
                            reason: e.to_string(),
                        })?,
                        None => Mutation::Delete,
                    };
                    let expected = candidate.held.as_ref().map(Value::to_string);
                    writes.push(Write {
                        object: candidate.object,
                        id: candidate.id,
                        account: self.account.clone(),
                        mutation,
                        origin: Origin::Reconcile { expected },
                        generation: 0,
                    });
                }
            }
        }
        if matches!(pass.mode, Mode::Report { .. }) {
            return Ok(());
        }
        // the position and the tally as of these repairs, committed with them
        let mut next = state.clone();
        if let Some(position) = position {
            next.at = Some(position);
        }
        next.tally.add(&Tally { repaired: writes.len() as u64, ..*pass.tally });
        let changes =
            self.commit(writes, vec![], vec![Checkpoint::unordered(self.reconcile_key(), self.reconcile_value(&next)?)]).await?.changes;
        next.tally.repaired = state.tally.repaired + changes;
        *state = next;
        // counted into the state: the next page's tally starts afresh
        *pass.tally = Tally::default();
        Ok(())
    }
}
