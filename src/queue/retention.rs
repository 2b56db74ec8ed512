//! Retention of queue events: older than `retention_days`, they go whether
//! acknowledged or not. What a consumer never acknowledged is counted on its
//! queue (reported by its next pull as `dropped`) and logged here.

use crate::store::{Store, StoreError};

/// Queue events deleted per statement.
const BATCH: usize = 5_000;

/// Delete every queue event committed before `cutoff`, in batches; returns
/// how many went.
pub async fn purge(store: &dyn Store, cutoff: &str) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let (deleted, dropped) = store.purge_queue_events(cutoff, BATCH).await?;
        for (queue, count) in dropped {
            metrics::counter!("tributary_queue_events_dropped_total").increment(count.max(0) as u64);
            tracing::warn!(kind = "queue_events_dropped", queue = %queue, count, cutoff,
                "events passed retention before the consumer acknowledged them");
        }
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
    }
}
