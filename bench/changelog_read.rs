//! Change-log read throughput through the reader API (`changes_after`), in
//! pages of 1,000, from the first change to the last. Prints one JSON line.
//!
//!     changelog_read DATABASE_URL [SCHEMA]

use std::time::Instant;

use tributary::store::{self, ChangeCursor, Options};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or_else(|| anyhow::anyhow!("usage: changelog_read DATABASE_URL [SCHEMA]"))?;
    let schema = args.next().unwrap_or_else(|| "public".into());
    let store = store::open(&Options { url: url.clone(), schema, pool_size: 2 }).await?;
    let started = Instant::now();
    let (mut cursor, mut changes, mut pages) = (ChangeCursor::START, 0usize, 0usize);
    loop {
        let page = store.changes_after(cursor, 1000).await?;
        if page.changes.is_empty() {
            break;
        }
        pages += 1;
        changes += page.changes.len();
        cursor = page.next;
    }
    let seconds = started.elapsed().as_secs_f64();
    let backend = if store::is_postgres(&url) { "postgres" } else { "sqlite" };
    println!(
        "{}",
        serde_json::json!({"bench": "changelog_read", "backend": backend, "changes": changes, "pages": pages, "seconds": (seconds * 100.0).round() / 100.0,
            "changes_per_sec": (changes as f64 / seconds).round(), "target_changes_per_sec": 100000})
    );
    Ok(())
}
