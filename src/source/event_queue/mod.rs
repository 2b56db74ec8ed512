//! The `event_queue` source: an upstream pull queue with acknowledgement
//! (the marketplace "Open Platform" case). A batch is committed to the
//! store together with its ack id and the ids of its events, then
//! acknowledged (by the next pull, or by an ack request of its own), so:
//!
//! - a crash after the commit acknowledges the batch when the next process
//!   starts (the ack id is in the checkpoint);
//! - a batch that comes again anyway (a crash before the commit, an ack the
//!   upstream lost or refused) is recognised by its event ids and skipped;
//! - an event that cannot be stored (no id at its path, an object that
//!   cannot be fetched) is parked with its reason and body in the same
//!   transaction, and the queue flows on; `tributary parked --redrive`
//!   stores the parked events again once the config is fixed.
//!
//! - `config`: the validated `[[sources]]` entry
//! - `setup`: find or make the queue, subscribe it once
//! - `parse`: a pull's answer read at the config's paths
//! - `enrich`: whole objects fetched for thin events

pub mod config;
mod enrich;
pub mod parse;
mod setup;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use config::EventQueueConfig;
pub use parse::{Event, Pulled, parse_page};

use crate::source::declarative;
use crate::source::http::{Client, ClientError, encode};
use crate::source::{Phase, ScopeStatus, SourceStatus};
use crate::store::ledger::{LedgerEntry, LedgerOp, Parked};
use crate::store::{Applied, Batch, Checkpoint, Mutation, Origin, Store, StoreError, Write};

/// Checkpoint keys: the ack id of the last batch committed, and the queue
/// with the subscriptions made for it.
const ACK_KEY: &str = "ack_id";
const QUEUE_KEY: &str = "queue";
/// Pause between prunes of remembered event ids.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);
/// Parked events stored again per transaction by a redrive.
const REDRIVE_BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum QueueSourceError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Why an event cannot be stored (it is parked, the queue flows on).
    #[error("{url}: event {index}{}: {reason}", id.as_ref().map(|id| format!(" ({id})")).unwrap_or_default())]
    Event { url: String, index: usize, id: Option<String>, reason: String },
}

impl QueueSourceError {
    pub fn kind(&self) -> &'static str {
        match self {
            QueueSourceError::Client(e) => e.kind(),
            QueueSourceError::Store(_) => "store",
            QueueSourceError::Event { .. } => "event_unreadable",
        }
    }
}

/// A source's clients and store.
pub struct Runner {
    config: EventQueueConfig,
    /// With the source's own token (the app's): queues, pulls, acks.
    client: Client,
    /// Each seller's client, by the id its events carry.
    sellers: BTreeMap<String, Client>,
    store: Arc<dyn Store>,
}

/// Run an event queue source until the task is dropped.
pub async fn run(config: EventQueueConfig, store: Arc<dyn Store>, status: Arc<SourceStatus>) -> Result<(), QueueSourceError> {
    let scope = status.add_scope(None);
    status.set_scopes_ready();
    let runner = Runner::new(config, store)?;
    let code = runner.setup().await?;
    runner.pull_forever(&code, &status, &scope).await
}

/// What a redrive did with one parked event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Redriven {
    pub key: String,
    /// `stored`, `already_stored` (its id was stored since), or `parked`.
    pub outcome: &'static str,
    /// Why it is still parked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a batch of checked events did to the store.
struct Stored {
    applied: Applied,
    /// Events already stored by an earlier batch, or twice in this one.
    duplicates: usize,
    parked: usize,
}

impl Runner {
    pub fn new(config: EventQueueConfig, store: Arc<dyn Store>) -> Result<Runner, QueueSourceError> {
        let connection = config.connection();
        let client = connection.client(store.clone(), "queue")?;
        let options = connection.client_options();
        let mut sellers = BTreeMap::new();
        for (sid, auth) in config.seller_auths().map_err(ClientError::Build)? {
            let client = declarative::client(&options, &Some(auth), &config.api_key_env, store.clone(), &format!("seller/{sid}"))?;
            sellers.insert(sid, client);
        }
        Ok(Runner { config, client, sellers, store })
    }

    async fn pull_forever(&self, code: &str, status: &SourceStatus, scope: &ScopeStatus) -> Result<(), QueueSourceError> {
        let c = &self.config;
        let path = format!("{}/queues/{}/events/pull", c.path_prefix, encode(code));
        let mut ack: Option<String> = self.store.checkpoints(&c.name).await?.get(ACK_KEY).and_then(Value::as_str).map(String::from);
        let mut pruned_at: Option<Instant> = None;
        loop {
            let (round, started) = scope.begin_round();
            if c.ack_path.is_some() {
                // a batch committed but not acknowledged (by the last process, or a failed ack)
                if let Some(pending) = ack.take() {
                    self.acknowledge(code, &pending).await?;
                }
            }
            let mut body = json!({"ack_id": ack});
            if let Some(limit) = c.batch_size {
                body["limit"] = json!(limit);
            }
            let page = match self.client.post_json(&path, &body).await {
                Ok(page) => page,
                Err(e) if ack.is_some() && matches!(e.status(), Some(400 | 409 | 410 | 422)) => {
                    // the upstream hands the batch out again; its events are
                    // known and will be skipped
                    tracing::warn!(kind = "ack_refused", source = %c.name, ack_id = ack.as_deref().unwrap_or(""), reason = %e,
                        "the upstream refused the acknowledgement; pulling again without it");
                    ack = None;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let (pulled_events, next_ack) = parse_page(page, &path, c)?;
            let pulled = pulled_events.len();
            let ack_checkpoint = Checkpoint::unordered(ACK_KEY, next_ack.clone().map_or(Value::Null, Value::String));
            let stored = self.store_pulled(pulled_events, vec![ack_checkpoint], Vec::new()).await?;
            status.store_health.ok();
            ack = next_ack;
            if c.ack_path.is_some()
                && let Some(done) = ack.take()
            {
                self.acknowledge(code, &done).await?;
            }
            scope.set_phase(Phase::Live);
            scope.finish_round(round, started);
            status.set_error(None);
            metrics::counter!("tributary_sync_runs_total", "source" => c.name.clone()).increment(1);
            metrics::counter!("tributary_items_fetched_total", "source" => c.name.clone()).increment(pulled as u64);
            metrics::counter!("tributary_items_changed_total", "source" => c.name.clone()).increment(stored.applied.changes);
            if pulled > 0 {
                tracing::info!(kind = "queue_batch", source = %c.name, events = pulled, duplicates = stored.duplicates, parked = stored.parked,
                    changes = stored.applied.changes, "stored a batch; it is acknowledged with the next pull");
            }
            if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                self.prune().await;
                pruned_at = Some(Instant::now());
            }
            // a full batch (or, without a batch size, any) means more may wait
            if pulled > 0 && c.batch_size.is_none_or(|size| pulled >= size) {
                continue;
            }
            scope.pause(Duration::from_secs(c.poll_interval_secs), crate::source::EARLY_POLL_GAP).await;
        }
    }

    /// Acknowledge a committed batch by its own request. A refusal (the
    /// upstream forgot the ack id, or it was acknowledged already) is
    /// logged: the batch may come again and is then skipped.
    async fn acknowledge(&self, code: &str, ack: &str) -> Result<(), QueueSourceError> {
        let c = &self.config;
        let Some(template) = &c.ack_path else { return Ok(()) };
        let path = format!("{}{}", c.path_prefix, template.replace("{code}", &encode(code)));
        match self.client.post_json(&path, &json!({"ack_id": ack})).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.status(), Some(400 | 404 | 409 | 410 | 422)) => {
                tracing::warn!(kind = "ack_refused", source = %c.name, ack_id = ack, reason = %e,
                    "the upstream refused the acknowledgement; the batch may come again, and is then skipped");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Store checked events (those not stored before; their objects
    /// fetched where a rule says), park the rest, with `checkpoints` and
    /// `ledger` in the same transaction.
    async fn store_pulled(
        &self,
        pulled: Vec<Pulled>,
        checkpoints: Vec<Checkpoint>,
        ledger: Vec<LedgerOp>,
    ) -> Result<Stored, QueueSourceError> {
        let c = &self.config;
        let total = pulled.len();
        let mut events = Vec::with_capacity(total);
        let mut parked: Vec<Parked> = Vec::new();
        for item in pulled {
            match item {
                Pulled::Event(event) => events.push(event),
                Pulled::Parked(p) => {
                    tracing::warn!(kind = "event_parked", source = %c.name, event_id = p.event_id.as_deref().unwrap_or(""),
                        event_type = p.event_type.as_deref().unwrap_or(""), reason = %p.reason,
                        "an event cannot be stored; it is parked with its body, and the queue goes on");
                    parked.push(p);
                }
            }
        }
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let known: HashSet<String> = self.store.ledger_known(&c.name, &ids).await?.into_iter().collect();
        let mut fresh = HashSet::new();
        // known from an earlier commit, or twice in this batch
        events.retain(|e| !known.contains(&e.id) && fresh.insert(e.id.clone()));
        let duplicates = total - events.len() - parked.len();
        let (events, unfetched) = self.enrich(events).await;
        parked.extend(unfetched);
        let parked_count = parked.len();
        let applied = self.store.apply(self.batch_of(events, parked, checkpoints, ledger)).await?;
        metrics::counter!("tributary_events_parked_total", "source" => c.name.clone()).increment(parked_count as u64);
        Ok(Stored { applied, duplicates, parked: parked_count })
    }

    /// One transaction: the events' writes and ids, the parked events,
    /// and the rest of the bookkeeping.
    fn batch_of(&self, events: Vec<Event>, parked: Vec<Parked>, checkpoints: Vec<Checkpoint>, ledger: Vec<LedgerOp>) -> Batch {
        let seen_at = chrono::Utc::now().timestamp();
        let mut batch = Batch { source: self.config.name.clone(), checkpoints, ledger, ..Batch::default() };
        batch.ledger.extend(parked.into_iter().map(LedgerOp::Park));
        for event in events {
            batch.ledger.push(LedgerOp::Put(LedgerEntry { key: event.id.clone(), fingerprint: None, day: event.day, seen_at }));
            let mutation = if event.kind.ends_with(".deleted") { Mutation::Delete } else { Mutation::Upsert(event.payload) };
            batch.writes.push(Write {
                object: event.object,
                id: event.object_id,
                account: event.account,
                mutation,
                origin: Origin::Event { id: event.id, kind: event.kind, previous_attributes: None },
                generation: 0,
            });
        }
        batch
    }

    /// Forget event ids older than the retention: the upstream cannot hand
    /// them out again.
    async fn prune(&self) {
        let c = &self.config;
        let cutoff = chrono::Utc::now().date_naive() - chrono::Duration::days(c.retention_days as i64);
        match self.store.prune_ledger(&c.name, &cutoff.format("%Y-%m-%d").to_string()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(kind = "ledger_pruned", source = %c.name, forgotten = n, "forgot old event ids"),
            Err(e) => tracing::warn!(source = %c.name, error = %e, "cannot prune remembered event ids; retrying later"),
        }
    }

    /// Store the parked events again with the config as it is now: each
    /// one read at its paths and its object fetched again; one that now
    /// stores leaves the parked table in the same transaction, one whose id
    /// was stored since just leaves it, one that still cannot be stored
    /// stays (with its first reason). Returns what became of each.
    pub async fn redrive(&self) -> Result<Vec<Redriven>, QueueSourceError> {
        let c = &self.config;
        let parked = self.store.parked(&c.name).await?;
        let mut report = Vec::with_capacity(parked.len());
        let now = chrono::Utc::now();
        for chunk in parked.chunks(REDRIVE_BATCH) {
            let mut events: Vec<(String, Event)> = Vec::new();
            for p in chunk {
                let read = serde_json::from_str::<Value>(&p.body)
                    .map_err(|e| format!("its body is not JSON: {e}"))
                    .and_then(|raw| parse::parse_event(&raw, c, now));
                match read {
                    Ok(event) => events.push((p.key.clone(), event)),
                    Err(reason) => report.push(Redriven { key: p.key.clone(), outcome: "parked", reason: Some(reason) }),
                }
            }
            let ids: Vec<String> = events.iter().map(|(_, e)| e.id.clone()).collect();
            let known: HashSet<String> = self.store.ledger_known(&c.name, &ids).await?.into_iter().collect();
            // an event whose object still cannot be fetched stays parked
            let (fetchable, still): (Vec<Event>, Vec<Parked>) =
                self.enrich(events.iter().filter(|(_, e)| !known.contains(&e.id)).map(|(_, e)| e.clone()).collect()).await;
            let stored_ids: HashSet<&str> = fetchable.iter().map(|e| e.id.as_str()).collect();
            let mut unpark = Vec::new();
            for (key, event) in &events {
                if known.contains(&event.id) {
                    report.push(Redriven { key: key.clone(), outcome: "already_stored", reason: None });
                    unpark.push(LedgerOp::Unpark(key.clone()));
                } else if stored_ids.contains(event.id.as_str()) {
                    report.push(Redriven { key: key.clone(), outcome: "stored", reason: None });
                    unpark.push(LedgerOp::Unpark(key.clone()));
                } else {
                    let reason = still.iter().find(|p| p.event_id.as_deref() == Some(&event.id)).map(|p| p.reason.clone());
                    report.push(Redriven { key: key.clone(), outcome: "parked", reason });
                }
            }
            let fresh: Vec<Event> = fetchable.into_iter().filter(|e| !known.contains(&e.id)).collect();
            self.store.apply(self.batch_of(fresh, Vec::new(), Vec::new(), unpark)).await?;
        }
        Ok(report)
    }
}
