//! The background work of writes, in every process: the enqueuer hands
//! staged jobs on to the change log once their transaction committed (as
//! `write.completed` changes every sink and queue sees); the completer
//! finishes keyed requests abandoned mid-way; the reaper deletes keys past
//! `idempotency_ttl`. Two processes doing the same work at once is safe:
//! a key is taken by one request at a time, and a hand-off of jobs another
//! process already handed on writes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Writes, now};
use crate::store::writes::Handoff;
use crate::store::{Batch, StoreError, timestamp};

/// Staged jobs handed on per transaction.
const JOBS_PER_BATCH: usize = 500;
/// Abandoned keys taken per round.
const KEYS_PER_ROUND: usize = 100;

/// Run until the process stops; failures are logged and tried again. A
/// finished write wakes the enqueuer alone; the completer and the reaper
/// keep their own pace.
pub async fn run(writes: Arc<Writes>, ttl: Duration) {
    let every = (writes.grace / 2).clamp(Duration::from_millis(500), Duration::from_secs(30));
    let mut rounds = tokio::time::interval(every);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let round = tokio::select! {
            _ = writes.staged.notified() => false,
            _ = rounds.tick() => true,
        };
        if let Err(e) = enqueue(&writes).await {
            tracing::warn!(kind = "staged_jobs_error", error = %e, "staged jobs not handed on; trying again");
        }
        if !round {
            continue;
        }
        match writes.complete_abandoned(KEYS_PER_ROUND).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(kind = "writes_completed", count = n, "abandoned writes finished"),
            Err(e) => tracing::warn!(kind = "completer_error", error = %e, "abandoned writes not finished; trying again"),
        }
        if let Err(e) = reap(&writes, ttl).await {
            tracing::warn!(kind = "reaper_error", error = %e, "expired keys not deleted; trying again");
        }
    }
}

/// Hand every staged job on to the change log, a source at a time.
pub async fn enqueue(writes: &Writes) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let jobs = writes.store.staged_jobs(JOBS_PER_BATCH).await?;
        if jobs.is_empty() {
            return Ok(total);
        }
        let mut by_source: BTreeMap<String, Handoff> = BTreeMap::new();
        for (id, job) in jobs {
            let source = job.payload["source"].as_str().unwrap_or("tributary").to_string();
            let handoff = by_source.entry(source).or_default();
            handoff.jobs.push(id);
            handoff.notices.push(job);
        }
        for (source, handoff) in by_source {
            let count = handoff.jobs.len();
            match writes.store.apply(Batch { source, handoff: Some(handoff), ..Batch::default() }).await {
                Ok(_) => total += count,
                // another process handed them on: read again
                Err(StoreError::Raced(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

async fn reap(writes: &Writes, ttl: Duration) -> Result<(), StoreError> {
    let at = now();
    let before = at - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let (deleted, unfinished) = writes.store.reap_keys(&timestamp(before), &timestamp(at)).await?;
    if deleted > 0 {
        tracing::info!(kind = "keys_reaped", count = deleted, unfinished, "idempotency keys past their ttl deleted");
    }
    Ok(())
}
