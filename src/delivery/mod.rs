//! Delivery: the transactional outbox's reader. Each sink has its own cursor
//! into the change log, stored in the database and advanced only after the
//! sink confirmed a batch. Changes go out in commit order; a failing sink
//! retries with capped backoff (never blocking other sinks) and, past
//! `max_attempts`, parks what keeps failing as dead letters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;

use tokio::sync::watch;

use crate::control::Controls;
use crate::sink::{self, Message, Sink, SinkConfig, SinkError};
use crate::store::controls::{Redriven, StoredDeadLetter};
use crate::store::{ChangeCursor, DeadLetter, Role, Store, StoreError};

/// Poll of the change log when no commit notification came (a safety net:
/// a notification can be lost while a connection is down).
const SAFETY_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("sink disabled: {0}")]
    Disabled(String),
}

/// What this process knows of a sink, as `/v1/sinks` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SinkSnapshot {
    pub name: String,
    /// `webhook`, `redis`, `nats`, `kafka`, or `queues` for the fan-out.
    pub kind: &'static str,
    pub role: Role,
    /// Set once the sink failed in a way retrying cannot fix (until restart).
    pub disabled: bool,
    /// The last change delivered (an opaque position in commit order).
    pub cursor: Option<String>,
    /// Changes delivered by this process since it started.
    pub delivered: u64,
    /// Changes this process parked as dead letters since it started.
    pub dead_lettered_here: u64,
    pub last_error: Option<String>,
}

/// A sink as the API shows it.
pub struct SinkStatus {
    pub name: String,
    pub kind: &'static str,
    cursor: RwLock<Option<ChangeCursor>>,
    delivered: AtomicU64,
    dead_lettered: AtomicU64,
    last_error: RwLock<Option<String>>,
    owner: AtomicBool,
    disabled: AtomicBool,
    /// A store error delivery is stuck on (`/health`).
    pub store_health: crate::store::StoreHealth,
}

impl SinkStatus {
    pub fn new(name: &str, kind: &'static str) -> Arc<Self> {
        Arc::new(SinkStatus {
            name: name.to_string(),
            kind,
            cursor: RwLock::new(None),
            delivered: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            last_error: RwLock::new(None),
            owner: AtomicBool::new(false),
            disabled: AtomicBool::new(false),
            store_health: Default::default(),
        })
    }

    pub fn set_owner(&self, owner: bool) {
        self.owner.store(owner, Ordering::SeqCst);
    }

    pub fn set_error(&self, error: Option<String>) {
        *self.last_error.write() = error;
    }

    pub fn set_cursor(&self, cursor: ChangeCursor) {
        *self.cursor.write() = Some(cursor);
    }

    pub fn add_delivered(&self, count: u64) {
        self.delivered.fetch_add(count, Ordering::Relaxed);
    }

    pub fn cursor(&self) -> Option<ChangeCursor> {
        *self.cursor.read()
    }

    pub fn snapshot(&self) -> SinkSnapshot {
        SinkSnapshot {
            name: self.name.clone(),
            kind: self.kind,
            role: Role::of(self.owner.load(Ordering::SeqCst)),
            disabled: self.disabled.load(Ordering::SeqCst),
            cursor: self.cursor().map(|c| c.to_string()),
            delivered: self.delivered.load(Ordering::Relaxed),
            dead_lettered_here: self.dead_lettered.load(Ordering::Relaxed),
            last_error: self.last_error.read().clone(),
        }
    }
}

/// Dead letters redriven per read of the requested ones.
const REDRIVE_PAGE: usize = 100;

/// Deliver to one sink until an unrecoverable error (store trouble is
/// returned so the supervisor restarts from the stored cursor). Between
/// batches it redrives the dead letters an operator asked for.
pub async fn run(
    config: SinkConfig,
    store: Arc<dyn Store>,
    status: Arc<SinkStatus>,
    controls: watch::Receiver<Arc<Controls>>,
) -> Result<(), DeliveryError> {
    match deliver_forever(&config, store, &status, controls).await {
        // disabled stays disabled until the process restarts: not retried
        Err(DeliveryError::Disabled(_)) => std::future::pending().await,
        other => other,
    }
}

async fn deliver_forever(
    config: &SinkConfig,
    store: Arc<dyn Store>,
    status: &Arc<SinkStatus>,
    mut controls: watch::Receiver<Arc<Controls>>,
) -> Result<(), DeliveryError> {
    let max_backoff = Duration::from_millis(config.retry_max_backoff_ms);
    let mut sink = connect(config, status, max_backoff).await?;
    let position = store.sink_position(&config.name).await?;
    let (mut cursor, epoch) = (position.cursor, position.epoch);
    status.set_cursor(cursor);
    let mut commits = store.commits();
    // every redrive asked for before this start is still marked: do them
    let mut redrives_done = None;
    loop {
        commits.borrow_and_update();
        let redrives = controls.borrow_and_update().redrives(&config.name);
        if redrives_done != Some(redrives) {
            redrive(&mut sink, store.as_ref(), config, status, max_backoff).await?;
            redrives_done = Some(redrives);
        }
        let page = store.changes_after(cursor, config.batch_size).await?;
        if page.changes.is_empty() {
            // nothing left to write: not stuck
            status.store_health.ok();
            tokio::select! {
                _ = commits.changed() => {}
                _ = controls.changed() => {}
                _ = tokio::time::sleep(SAFETY_POLL) => {}
            }
            continue;
        }
        let batch: Vec<Message> = page.changes.iter().filter(|c| config.filter.matches(c)).map(Message::from_change).collect();
        let dead = if batch.is_empty() { Vec::new() } else { deliver(&mut sink, &batch, config, status, max_backoff).await? };
        let dead_count = dead.len() as u64;
        store.advance_sink(&config.name, epoch, page.next, dead).await?;
        status.store_health.ok();
        cursor = page.next;
        status.set_cursor(cursor);
        status.add_delivered(batch.len() as u64 - dead_count);
        metrics::counter!("tributary_changes_delivered_total", "sink" => config.name.clone()).increment(batch.len() as u64 - dead_count);
    }
}

/// Build the sink's runtime, retrying while its destination is unreachable.
async fn connect(config: &SinkConfig, status: &SinkStatus, max_backoff: Duration) -> Result<Box<dyn Sink>, DeliveryError> {
    let mut attempt = 0;
    loop {
        match sink::build(config).await {
            Ok(sink) => return Ok(sink),
            Err(SinkError::Retryable(e)) => {
                attempt += 1;
                tracing::warn!(kind = "sink_error", sink = %config.name, attempt, error = %e, "cannot reach the sink; retrying");
                status.set_error(Some(e));
                tokio::time::sleep(crate::retry::backoff(attempt, max_backoff)).await;
            }
            Err(e) => {
                tracing::error!(kind = "sink_disabled", sink = %config.name, reason = %e, "the sink cannot be built; disabled until restart");
                status.disabled.store(true, Ordering::SeqCst);
                status.set_error(Some(e.to_string()));
                return Err(DeliveryError::Disabled(e.to_string()));
            }
        }
    }
}

/// Send a batch until it is confirmed; returns the dead letters (changes
/// given up on after `max_attempts`, sent one by one).
async fn deliver(
    sink: &mut Box<dyn Sink>,
    batch: &[Message],
    config: &SinkConfig,
    status: &SinkStatus,
    max_backoff: Duration,
) -> Result<Vec<DeadLetter>, DeliveryError> {
    match send_with_retries(sink, batch, config, status, max_backoff).await? {
        None => Ok(Vec::new()),
        Some(failed) if batch.len() == 1 => Ok(vec![park(&batch[0], failed, config, status)]),
        Some(_) => {
            // find which changes fail: each alone gets its own attempts
            let mut dead = Vec::new();
            for message in batch {
                if let Some(failed) = send_with_retries(sink, std::slice::from_ref(message), config, status, max_backoff).await? {
                    dead.push(park(message, failed, config, status));
                }
            }
            Ok(dead)
        }
    }
}

/// Deliver the dead letters an operator asked to redrive, one by one, each
/// with the sink's usual attempts: a delivered one leaves the dead letters,
/// one that fails again stays with its new error and attempts.
async fn redrive(
    sink: &mut Box<dyn Sink>,
    store: &dyn Store,
    config: &SinkConfig,
    status: &SinkStatus,
    max_backoff: Duration,
) -> Result<(), DeliveryError> {
    loop {
        let letters = store.redrive_requested(&config.name, REDRIVE_PAGE).await?;
        if letters.is_empty() {
            return Ok(());
        }
        for letter in letters {
            let outcome = match Message::from_envelope(&letter.envelope) {
                Err(reason) => Redriven::Failed { error: format!("the stored envelope cannot be read: {reason}"), attempts: 0 },
                Ok(message) => match send_with_retries(sink, std::slice::from_ref(&message), config, status, max_backoff).await? {
                    None => Redriven::Delivered,
                    Some(Failed { error, attempts }) => Redriven::Failed { error, attempts: attempts.into() },
                },
            };
            log_redriven(config, &letter, &outcome);
            if outcome == Redriven::Delivered {
                status.add_delivered(1);
            }
            store.finish_redrive(&config.name, letter.row, outcome).await?;
        }
    }
}

fn log_redriven(config: &SinkConfig, letter: &StoredDeadLetter, outcome: &Redriven) {
    match outcome {
        Redriven::Delivered => {
            tracing::info!(kind = "dead_letter_redriven", sink = %config.name, dead_letter = %letter.id, change = %letter.change_id,
                "dead letter delivered")
        }
        Redriven::Failed { error, .. } => {
            tracing::warn!(kind = "dead_letter_redrive_failed", sink = %config.name, dead_letter = %letter.id,
                change = %letter.change_id, error = %error, "dead letter failed again; it stays")
        }
    }
}

/// A message given up on: the last error, after how many tries.
struct Failed {
    error: String,
    attempts: u32,
}

/// `None` once delivered; `Some` after `max_attempts` failures, or at once
/// when the error is permanent.
/// Each retry goes through a freshly built sink: a restarted broker may have
/// lost its topics or streams, or left the old producer in a fatal state.
async fn send_with_retries(
    sink: &mut Box<dyn Sink>,
    batch: &[Message],
    config: &SinkConfig,
    status: &SinkStatus,
    max_backoff: Duration,
) -> Result<Option<Failed>, DeliveryError> {
    let mut attempt: u32 = 0;
    loop {
        match sink.send(batch).await {
            Ok(()) => {
                status.set_error(None);
                return Ok(None);
            }
            Err(SinkError::Disabled(reason)) => {
                tracing::error!(kind = "sink_disabled", sink = %config.name, reason = %reason, "the endpoint asked not to be called again; sink disabled until restart");
                status.disabled.store(true, Ordering::SeqCst);
                status.set_error(Some(reason.clone()));
                return Err(DeliveryError::Disabled(reason));
            }
            Err(e) => {
                attempt += 1;
                let error = e.to_string();
                status.set_error(Some(error.clone()));
                metrics::counter!("tributary_delivery_errors_total", "sink" => config.name.clone()).increment(1);
                // a message refused for good is not retried; past
                // max_attempts, neither is anything else
                if e.is_permanent() || config.max_attempts.is_some_and(|max| attempt >= max) {
                    return Ok(Some(Failed { error, attempts: attempt }));
                }
                let pause = crate::retry::backoff(attempt, max_backoff);
                tracing::warn!(kind = "delivery_retry", sink = %config.name, attempt, retry_in_ms = pause.as_millis() as u64, error = %error,
                    "delivery failed; retrying");
                tokio::time::sleep(pause).await;
                *sink = connect(config, status, max_backoff).await?;
            }
        }
    }
}

fn park(message: &Message, failed: Failed, config: &SinkConfig, status: &SinkStatus) -> DeadLetter {
    let Failed { error, attempts } = failed;
    tracing::error!(kind = "dead_lettered", sink = %config.name, change = %message.id, attempts, error = %error,
        "change parked as a dead letter");
    metrics::counter!("tributary_dead_letters_total", "sink" => config.name.clone()).increment(1);
    status.dead_lettered.fetch_add(1, Ordering::Relaxed);
    DeadLetter { change_id: message.id.clone(), error, envelope: message.body.clone(), attempts: attempts.into() }
}
