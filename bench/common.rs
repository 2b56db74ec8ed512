//! What the benchmarks share: a change log of ~1 KB customer objects, and
//! percentiles.
#![allow(dead_code)] // each benchmark uses a part of this

use std::time::Duration;

// the allocator of the `tributary` binary, so the figures are its own
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use serde_json::json;
use tributary::store::{Batch, ChangeCursor, Mutation, Origin, Store, StoreError, Write};

/// `count` new customers (~1 KB each) numbered from `from`, as backfilled.
pub fn batch(from: usize, count: usize) -> Batch {
    let writes = (from..from + count)
        .map(|i| Write {
            object: "customer".into(),
            id: format!("cus_{i:08}"),
            account: None,
            mutation: Mutation::Upsert(json!({"id": format!("cus_{i:08}"), "object": "customer", "email": format!("user{i}@example.com"),
                "description": "x".repeat(800), "metadata": {"rev": i.to_string()}, "created": 1_700_000_000 + i as i64})),
            origin: Origin::Backfill,
            generation: 1,
        })
        .collect();
    Batch { source: "bench".into(), writes, ..Batch::default() }
}

/// Write `changes` changes (ids from `from`) in commits of 1,000; returns
/// the cursor past the last.
pub async fn fill(store: &dyn Store, from: usize, changes: usize) -> Result<ChangeCursor, StoreError> {
    for start in (from..from + changes).step_by(1000) {
        store.apply(batch(start, 1000.min(from + changes - start))).await?;
    }
    end_of_log(store).await
}

/// The cursor past the newest change.
pub async fn end_of_log(store: &dyn Store) -> Result<ChangeCursor, StoreError> {
    let mut end = ChangeCursor::START;
    loop {
        let page = store.changes_after(end, 10_000).await?;
        if page.changes.is_empty() {
            return Ok(end);
        }
        end = page.next;
    }
}

/// The `p` quantile (0..1) of sorted samples, in ms to 0.1.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let at = sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)];
    (at.as_secs_f64() * 10_000.0).round() / 10.0
}
