//! Resources kept current by listing them, alongside the events tail.
//!
//! - `created`: objects that never change once created and have no events
//!   (balance transactions) are listed from the newest creation time seen
//!   (`created[gte]`), every `created_every_secs`.
//! - `relist`, `parent` and `events+relist`: the whole list is read again
//!   every `relist_every_secs`. What differs from the mirror is stored as
//!   an ordinary change (`{object}.created|updated`). An object the mirror
//!   held before the listing began that the listing did not return is gone
//!   upstream, and is deleted (`{object}.deleted`), for object types that
//!   Stripe deletes or that go with their parent (child lists), and that
//!   no other list shows. A top-level object that stays once made is never
//!   judged gone.
//!
//! This is background work: one request at a time per account, within a
//! share of the request budget ([`crate::source::http::BACKGROUND_SHARE`]),
//! so the tail and any backfill keep the rest. A listing that stops half
//! way (a kill, an error) runs again from the top: its checkpoint moves
//! only when it completes.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use super::checkpoint::{FollowCheckpoint, Meta};
use super::sync::{Job, Lane, ScopeSync, SyncError, jobs, list_parts, text};
use crate::source::http::encode;
use crate::store::mirror::ListCursor;
use crate::store::{Mutation, Origin, Write};
use crate::stripe_api::{Ending, Follow, MAX_PAGE, Resource};

/// Deletes committed in one transaction at most.
const MAX_DELETES: usize = 1_000;

/// What one listing did.
#[derive(Debug, Default)]
struct Listed {
    /// Objects the upstream returned.
    checked: u64,
    /// Changes recorded (inserts, updates, deletes).
    changes: u64,
    /// Objects deleted because the listing no longer returned them.
    deleted: u64,
    /// The newest creation time among the objects returned.
    newest: Option<i64>,
}

/// (object type, id) of a mirror row.
type Key = (String, String);

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl ScopeSync {
    /// How often `resource` is listed once live; `None`: by events only.
    fn every(&self, resource: &Resource) -> Option<Duration> {
        match resource.follow {
            Follow::Created => Some(self.shared.created_every),
            follow if follow.relisted() => Some(self.shared.relist_every),
            _ => None,
        }
    }

    /// List every resource followed by listing when it is due, forever.
    pub(super) async fn follow(&self, meta: Meta) -> Result<Infallible, SyncError> {
        let now = unix_now();
        let checkpoints = self.checkpoints().await?;
        let mut schedule: Vec<(i64, &'static Resource, FollowCheckpoint)> = Vec::new();
        for &resource in &self.shared.resources {
            self.status.set_strategy(resource.path, resource.follow.name(), resource.follow.by_events());
            let Some(every) = self.every(resource) else { continue };
            // a list the key may not read is asked again at the next backfill
            if jobs(&[resource]).iter().all(|job| self.status.skipped(&job.name())) {
                continue;
            }
            let key = format!("follow/{}", resource.path);
            let checkpoint = match checkpoints.contains_key(&key) {
                true => Self::parse::<FollowCheckpoint>(&checkpoints, &key)?,
                // not listed since the backfill: what it read is as fresh as its start
                false => FollowCheckpoint { listed_at: meta.backfill_started_at.unwrap_or(now), created_gte: meta.backfill_started_at },
            };
            let due = checkpoint.listed_at + every.as_secs() as i64;
            self.status.set_listed(resource.path, Some(checkpoint.listed_at), due, None);
            schedule.push((due, resource, checkpoint));
        }
        if schedule.is_empty() {
            return std::future::pending().await;
        }
        loop {
            schedule.sort_by_key(|(due, resource, _)| (*due, resource.path));
            let (due, resource, checkpoint) = schedule[0].clone();
            tokio::time::sleep(Duration::from_secs((due - unix_now()).max(0) as u64)).await;
            let started = unix_now();
            let clock = std::time::Instant::now();
            let listed = match resource.follow {
                Follow::Created if resource.scope.parent.is_none() => {
                    self.list_created(resource, checkpoint.created_gte, meta.generation).await?
                }
                _ => self.relist(resource, meta.generation).await?,
            };
            let next = FollowCheckpoint { listed_at: started, created_gte: listed.newest.or(checkpoint.created_gte) };
            self.commit(vec![], vec![], vec![next.checkpoint(&self.key, resource.path, meta.generation)]).await?;
            let every = self.every(resource).unwrap_or_default().as_secs() as i64;
            self.status.set_listed(resource.path, Some(started), started + every, Some(listed.changes));
            let duration_ms = clock.elapsed().as_millis() as u64;
            // a listing that found something says so; quiet ones only at debug
            if listed.changes > 0 {
                tracing::info!(kind = "resource_relisted", source = %self.shared.name, account = self.account_label(), resource = resource.path,
                    strategy = resource.follow.name(), checked = listed.checked, changes = listed.changes, deleted = listed.deleted, duration_ms,
                    "listed again: {} objects, {} changes", listed.checked, listed.changes);
            } else {
                tracing::debug!(kind = "resource_relisted", source = %self.shared.name, account = self.account_label(), resource = resource.path,
                    strategy = resource.follow.name(), checked = listed.checked, duration_ms, "listed again: no changes");
            }
            schedule[0] = (started + every, resource, next);
        }
    }

    /// The objects created since `gte` (all of them without it).
    async fn list_created(&self, resource: &'static Resource, gte: Option<i64>, generation: i64) -> Result<Listed, SyncError> {
        let mut listed = Listed { newest: gte, ..Listed::default() };
        let since: Vec<String> = gte.filter(|_| resource.created_filter).map(|gte| format!("created[gte]={gte}")).into_iter().collect();
        for job in jobs(&[resource]) {
            match self.list_pages(&job, &since, generation, &mut listed, None).await {
                Err(SyncError::Client(e)) if e.skips_resource() => self.skipped(&job.name(), &e.to_string()),
                other => other?,
            }
        }
        Ok(listed)
    }

    /// Page a top-level list with `query`, storing what differs.
    async fn list_pages(
        &self,
        job: &Job,
        query: &[String],
        generation: i64,
        listed: &mut Listed,
        mut seen: Option<&mut HashSet<Key>>,
    ) -> Result<(), SyncError> {
        let resource = job.resource;
        let base = resource.list_path(None).unwrap_or_default();
        let mut after: Option<String> = None;
        loop {
            let mut query = query.to_vec();
            query.extend(after.iter().map(|a| format!("starting_after={}", encode(a))));
            let path = job.page_path(base.clone(), &query);
            let page = self.get(&path, Lane::Background).await?;
            let (mut items, has_more) = list_parts(page, &path)?;
            for item in items.iter_mut() {
                self.complete_nested(item).await?;
            }
            after = items.last().and_then(|i| text(i, "id")).map(String::from);
            self.store_listed(items, resource, &path, generation, listed, seen.as_deref_mut()).await?;
            if !has_more || !resource.paged || after.is_none() {
                return Ok(());
            }
        }
    }

    /// Store listed objects as changes where they differ from the mirror.
    async fn store_listed(
        &self,
        items: Vec<serde_json::Value>,
        resource: &Resource,
        url: &str,
        generation: i64,
        listed: &mut Listed,
        seen: Option<&mut HashSet<Key>>,
    ) -> Result<(), SyncError> {
        listed.checked += items.len() as u64;
        listed.newest = listed.newest.max(items.iter().filter_map(|i| i["created"].as_i64()).max());
        let writes = self.writes(items, resource, url, &Origin::Poll { resend: false }, generation)?;
        if let Some(seen) = seen {
            seen.extend(writes.iter().map(|w| (w.object.clone(), w.id.clone())));
        }
        if !writes.is_empty() {
            listed.changes += self.commit(writes, vec![], vec![]).await?.changes;
        }
        Ok(())
    }

    /// List a resource again completely, and delete what it no longer
    /// returns (for the object types only this resource writes).
    async fn relist(&self, resource: &'static Resource, generation: i64) -> Result<Listed, SyncError> {
        // gone can be: an object Stripe deletes, or one that went with its
        // parent (a child list), unless its events say so; objects of types
        // another list also shows cannot be judged gone by this one
        let judges = resource.ending == Ending::Tombstone || (resource.scope.parent.is_some() && !resource.events.deleted);
        let judged: Vec<&'static str> = match judges {
            false => vec![],
            true => resource.objects.iter().copied().filter(|o| self.shared.resources.iter().filter(|r| r.holds(o)).count() == 1).collect(),
        };
        // what the mirror held before the listing began: an object written
        // since (through a write) is not judged by this listing
        let mut before: HashSet<Key> = HashSet::new();
        for object in &judged {
            before.extend(self.mirror_ids(object).await?.into_iter().map(|id| (object.to_string(), id)));
        }
        let mut seen: HashSet<Key> = HashSet::new();
        let mut listed = Listed::default();
        let mut complete = true;
        for job in jobs(&[resource]) {
            if self.status.skipped(&job.name()) {
                complete = false;
                continue;
            }
            let result = match resource.scope.parent {
                Some(parent) => self.relist_children(&job, parent, generation, &mut listed, &mut seen).await,
                None => self.list_pages(&job, &[], generation, &mut listed, Some(&mut seen)).await,
            };
            match result {
                Err(SyncError::Client(e)) if e.skips_resource() => {
                    self.skipped(&job.name(), &e.to_string());
                    complete = false;
                }
                other => other?,
            }
        }
        if !complete {
            return Ok(listed);
        }
        let gone: Vec<Key> = before.into_iter().filter(|key| !seen.contains(key)).collect();
        for chunk in gone.chunks(MAX_DELETES) {
            let writes: Vec<Write> = chunk
                .iter()
                .map(|(object, id)| Write {
                    object: object.clone(),
                    id: id.clone(),
                    account: self.account.clone(),
                    mutation: Mutation::Delete,
                    origin: Origin::Poll { resend: false },
                    generation,
                })
                .collect();
            let changes = self.commit(writes, vec![], vec![]).await?.changes;
            listed.changes += changes;
            listed.deleted += changes;
        }
        Ok(listed)
    }

    /// A child list again, from every parent row of the mirror.
    async fn relist_children(
        &self,
        job: &Job,
        parent: &str,
        generation: i64,
        listed: &mut Listed,
        seen: &mut HashSet<Key>,
    ) -> Result<(), SyncError> {
        let account = self.account.as_deref();
        let mut cursor = ListCursor::Start;
        loop {
            let Some(page) = self.shared.store.mirror_list(&self.shared.name, parent, account, &cursor, MAX_PAGE).await? else {
                // the last parent done is gone since: walk again from the top
                cursor = ListCursor::Start;
                continue;
            };
            for row in &page.data {
                let (items, url) = self.fetch_children(job, row, Lane::Background).await?;
                self.store_listed(items, job.resource, &url, generation, listed, Some(seen)).await?;
            }
            match page.data.last().and_then(|p| text(p, "id")) {
                Some(last) if page.has_more => cursor = ListCursor::After(last.to_string()),
                _ => return Ok(()),
            }
        }
    }

    /// The ids of this scope's rows of `object` in the mirror.
    async fn mirror_ids(&self, object: &str) -> Result<Vec<String>, SyncError> {
        let account = self.account.as_deref();
        let mut ids = Vec::new();
        let mut cursor = ListCursor::Start;
        loop {
            let Some(page) = self.shared.store.mirror_list(&self.shared.name, object, account, &cursor, MAX_PAGE).await? else {
                // a row deleted under the cursor: read again from the top
                ids.clear();
                cursor = ListCursor::Start;
                continue;
            };
            ids.extend(page.data.iter().filter_map(|row| text(row, "id")).map(String::from));
            match ids.last() {
                Some(last) if page.has_more => cursor = ListCursor::After(last.clone()),
                _ => return Ok(ids),
            }
        }
    }
}
