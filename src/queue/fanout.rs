//! The fan-out: one reader of the change log (owned by one process at a
//! time) that adds every change to the queues subscribed to it. It writes a
//! reference per (queue, change) and its own cursor in one transaction, so a
//! crash neither loses nor repeats an event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::delivery::SinkStatus;
use crate::store::queues::{Entry, FANOUT_READER, PLATFORM, Subscription};
use crate::store::{Change, ChangeCursor, Store, StoreError};

/// Changes read per round.
const BATCH: usize = 1_000;
/// Poll when no commit was announced: picks up `"from":"earliest"`
/// subscriptions while the change log is quiet, and covers a lost NOTIFY.
const SAFETY_POLL: Duration = Duration::from_secs(1);

/// Which queues each change goes to: per change, every queue with a
/// matching subscription, once.
pub fn entries(subscriptions: &[Subscription], changes: &[Change]) -> Vec<Entry> {
    let mut by_account: HashMap<&str, Vec<&Subscription>> = HashMap::new();
    for s in subscriptions {
        by_account.entry(s.account.as_str()).or_default().push(s);
    }
    let mut out = Vec::new();
    for change in changes {
        let Some(candidates) = by_account.get(change.account.as_deref().unwrap_or(PLATFORM)) else { continue };
        let mut queues = HashSet::new();
        for s in candidates.iter().filter(|s| s.matches(change)) {
            if queues.insert(s.queue_id) {
                out.push(Entry { queue_id: s.queue_id, change_seq: change.seq, committed_at: change.committed_at.clone() });
            }
        }
    }
    out
}

/// Run the fan-out until the store fails (the supervisor restarts it from
/// its stored cursor).
pub async fn run(store: Arc<dyn Store>, status: Arc<SinkStatus>) -> Result<(), StoreError> {
    let mut cursor = store.sink_cursor(FANOUT_READER).await?.unwrap_or(ChangeCursor::START);
    status.set_cursor(cursor);
    let mut commits = store.commits();
    loop {
        commits.borrow_and_update();
        // the page first, then the subscriptions: a subscription created
        // before a change committed is then always seen with it
        let page = store.changes_after(cursor, BATCH).await?;
        let subscriptions = store.all_subscriptions().await?;
        let replays: Vec<Subscription> = subscriptions.iter().filter(|s| s.replay).cloned().collect();
        if page.changes.is_empty() && replays.is_empty() {
            tokio::select! {
                _ = commits.changed() => {}
                _ = tokio::time::sleep(SAFETY_POLL) => {}
            }
            continue;
        }
        let entries = entries(&subscriptions, &page.changes);
        store.fan_out(&replays, cursor, &entries, page.next).await?;
        for s in &replays {
            tracing::info!(kind = "queue_replayed", subscription = %s.code, since = %s.start_at, "history copied into the queue");
        }
        cursor = page.next;
        status.set_cursor(cursor);
        status.add_delivered(entries.len() as u64);
    }
}
