//! Retention, one task the engine owns: every `purge_interval_secs`, queue
//! events older than `retention_days` go, acknowledged or not (what a
//! consumer never acknowledged is counted on its queue, reported by its
//! next pull as `dropped`, and logged), then the changes older than that
//! which every reader of the change log (each sink, the queue fan-out) has
//! passed.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{ChangeCursor, Store, StoreError, timestamp};

/// Changes deleted per statement, so a purge never holds long locks.
const PURGE_BATCH: usize = 1_000;

/// Every `every`: delete queue events older than `retention` (consumed or
/// not), then changes older than `retention` that every reader (each sink,
/// the queue fan-out) has passed, in small batches. A reader that has not
/// started yet holds the change log back: it will read from the beginning.
pub async fn run(store: Arc<dyn Store>, readers: Vec<String>, retention: Duration, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = purge_once(store.as_ref(), &readers, retention).await {
            tracing::warn!(kind = "purge_error", error = %e, "purging the change log failed; trying again later");
        }
    }
}

async fn purge_once(store: &dyn Store, readers: &[String], retention: Duration) -> Result<u64, StoreError> {
    let oldest_kept = chrono::Duration::from_std(retention).ok().and_then(|r| chrono::Utc::now().checked_sub_signed(r));
    let cutoff = timestamp(oldest_kept.unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC));
    purge_queue_events(store, &cutoff).await?;
    let mut through = ChangeCursor::END;
    for reader in readers {
        match store.sink_cursor(reader).await? {
            Some(cursor) => through = through.min(cursor),
            None => return Ok(0),
        }
    }
    let mut total = 0;
    loop {
        let deleted = store.purge_changes(&cutoff, through, PURGE_BATCH).await?;
        total += deleted;
        if deleted < PURGE_BATCH as u64 {
            break;
        }
    }
    if total > 0 {
        tracing::info!(kind = "changes_purged", count = total, through = %through, "purged delivered changes past retention");
    }
    Ok(total)
}

/// Queue events deleted per statement.
const QUEUE_BATCH: usize = 5_000;

/// Delete every queue event committed before `cutoff`, in batches; returns
/// how many went.
async fn purge_queue_events(store: &dyn Store, cutoff: &str) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let (deleted, dropped) = store.purge_queue_events(cutoff, QUEUE_BATCH).await?;
        for (queue, count) in dropped {
            metrics::counter!("tributary_queue_events_dropped_total").increment(count.max(0) as u64);
            tracing::warn!(kind = "queue_events_dropped", queue = %queue, count, cutoff,
                "events passed retention before the consumer acknowledged them");
        }
        total += deleted;
        if deleted < QUEUE_BATCH as u64 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::store::{Batch, Mutation, Options, Origin, Write};

    #[tokio::test]
    async fn purge_waits_for_the_slowest_sink() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&Options::url(&format!("sqlite://{}", dir.path().join("t.db").display()))).await.unwrap();
        let writes = (0..5)
            .map(|i| Write {
                object: "charge".into(),
                id: format!("ch_{i}"),
                account: None,
                mutation: Mutation::Upsert(json!({"id": i})),
                origin: Origin::Backfill,
                generation: 1,
            })
            .collect();
        store.apply(Batch { source: "s".into(), writes, ..Batch::default() }).await.unwrap();
        let changes = store.changes_after(ChangeCursor::START, 10).await.unwrap().changes;
        let sinks = vec!["fast".to_string(), "slow".to_string()];
        // a sink that never ran holds everything back
        store.advance_sink("fast", 0, changes[4].cursor, vec![]).await.unwrap();
        assert_eq!(purge_once(store.as_ref(), &sinks, Duration::ZERO).await.unwrap(), 0);
        store.advance_sink("slow", 0, changes[1].cursor, vec![]).await.unwrap();
        assert_eq!(purge_once(store.as_ref(), &sinks, Duration::ZERO).await.unwrap(), 2);
        // nothing is older than a day
        store.advance_sink("slow", 0, changes[4].cursor, vec![]).await.unwrap();
        assert_eq!(purge_once(store.as_ref(), &sinks, Duration::from_secs(86_400)).await.unwrap(), 0);
    }
}
