//! What the store keeps for the built-in pull queues: apps (a hash of their
//! token, never the token), the accounts that granted them access, their
//! queues and subscriptions, and per-queue positions into the change log.
//!
//! A queue never copies a change's payload: the fan-out writes one small row
//! per (queue, change) that references the change log, in commit order, and
//! a pull joins it back. The acknowledgement rules live here, once, so both
//! backends decide the same way.

use serde::{Deserialize, Serialize};

use super::{Change, ChangeCursor, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// Any account may grant it access.
    Public,
    /// Bound to its one account.
    Inhouse,
}

impl AppKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::Public => "public",
            AppKind::Inhouse => "inhouse",
        }
    }

    pub fn parse(text: &str) -> Option<AppKind> {
        match text {
            "public" => Some(AppKind::Public),
            "inhouse" => Some(AppKind::Inhouse),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct App {
    pub id: String,
    pub name: String,
    pub kind: AppKind,
    /// An in-house app's account.
    pub account: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Queue {
    pub code: String,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Subscription {
    pub code: String,
    /// The queue it feeds.
    #[serde(skip)]
    pub queue_id: i64,
    pub event_type: String,
    pub account: String,
    /// Changes committed at or after this instant (RFC 3339) match.
    #[serde(skip)]
    pub start_at: String,
    /// History since `start_at` is still to be copied in (`"from":"earliest"`).
    #[serde(skip)]
    pub replay: bool,
    pub created_at: String,
}

impl Subscription {
    /// Does a change belong in this subscription's queue? A change without an
    /// account is the platform's (`"platform"`).
    pub fn matches(&self, change: &Change) -> bool {
        let account = change.account.as_deref().unwrap_or(PLATFORM);
        account == self.account && type_matches(&self.event_type, &change.kind) && change.committed_at >= self.start_at
    }

    /// The type filter as SQL parameters: (prefix, exact). A pattern ending
    /// in `*` gives its prefix and no exact type; otherwise the exact type
    /// and an empty prefix.
    pub fn type_filter(&self) -> (&str, Option<&str>) {
        match self.event_type.strip_suffix('*') {
            Some(prefix) => (prefix, None),
            None => ("", Some(self.event_type.as_str())),
        }
    }
}

/// The account name of changes that have none.
pub const PLATFORM: &str = "platform";

/// `order.*` matches `order.created`; `*` matches everything; otherwise equal.
pub fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// One change a fan-out adds to a queue.
#[derive(Debug, Clone)]
pub struct Entry {
    pub queue_id: i64,
    pub change_seq: i64,
    pub committed_at: String,
}

/// An acknowledgement as the queue layer parsed it from an `ack_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub batch: i64,
    pub nonce: String,
}

/// Where a queue's consumer stands.
#[derive(Debug, Clone, Default)]
pub struct QueueState {
    pub id: i64,
    /// Every event up to this queue position is acknowledged.
    pub acked_through: i64,
    /// Batches handed out so far.
    pub batches: i64,
    /// The batch handed out last and not acknowledged: (ack, last position).
    pub pending: Option<(Ack, i64)>,
    /// The batch acknowledged last (a retried pull may send it again).
    pub acked: Option<Ack>,
    /// Events deleted by retention before they were acknowledged, not yet
    /// reported to the consumer.
    pub dropped: i64,
}

#[derive(Debug, Clone)]
pub enum PullOutcome {
    Pulled(Pulled),
    /// An `ack_id` of this queue that a later pull superseded.
    StaleAck,
    /// An `ack_id` this queue never handed out.
    UnknownAck,
    /// No such queue for this app.
    NoQueue,
}

#[derive(Debug, Clone)]
pub struct Pulled {
    /// (queue position, change), in commit order.
    pub events: Vec<(i64, Change)>,
    /// The acknowledgement of this batch; `None` when it is empty.
    pub ack: Option<Ack>,
    /// Events retention deleted unacknowledged since the last pull.
    pub dropped: i64,
}

impl QueueState {
    /// Apply the acknowledgement a pull carries.
    pub fn acknowledge(&mut self, ack: Option<&Ack>) -> Result<(), PullOutcome> {
        let Some(ack) = ack else { return Ok(()) };
        if let Some((pending, through)) = &self.pending
            && pending == ack
        {
            self.acked_through = self.acked_through.max(*through);
            self.acked = Some(pending.clone());
            self.pending = None;
            return Ok(());
        }
        if self.acked.as_ref() == Some(ack) {
            // acknowledged already: the client retried its pull
            return Ok(());
        }
        let known_batch = |b: Option<&Ack>| b.is_some_and(|b| b.batch == ack.batch);
        if known_batch(self.pending.as_ref().map(|(p, _)| p)) || known_batch(self.acked.as_ref()) {
            // the batch number is current, the nonce is not: never handed out
            return Err(PullOutcome::UnknownAck);
        }
        if ack.batch >= 1 && ack.batch <= self.batches { Err(PullOutcome::StaleAck) } else { Err(PullOutcome::UnknownAck) }
    }

    /// Record the batch about to be handed out; returns its acknowledgement.
    pub fn hand_out(&mut self, events: &[(i64, Change)], nonce: String) -> Option<Ack> {
        let (last, _) = events.last()?;
        self.batches += 1;
        let ack = Ack { batch: self.batches, nonce };
        self.pending = Some((ack.clone(), *last));
        Some(ack)
    }
}

/// A queue as its operators see it: how far behind its consumer is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct QueueDepth {
    #[serde(skip)]
    pub id: i64,
    pub app_id: String,
    pub code: String,
    pub name: String,
    pub created_at: String,
    /// Events not acknowledged yet (counted up to 100,000).
    pub depth: u64,
    /// RFC 3339: when the oldest unacknowledged event was committed.
    pub oldest_unacked_at: Option<String>,
    /// Events retention deleted before they were acknowledged, not yet
    /// reported to the consumer.
    pub dropped: i64,
}

/// Events counted at most per queue's depth.
pub const DEPTH_COUNT_MAX: i64 = 100_000;

/// The queue side of the store (both backends).
#[async_trait::async_trait]
pub trait QueueStore: Send + Sync {
    /// Create an app; `token_hash` is the SHA-256 of its bearer token.
    async fn create_app(&self, app: &App, token_hash: &str) -> Result<(), StoreError>;
    async fn apps(&self) -> Result<Vec<App>, StoreError>;
    /// The live (not revoked) app holding this token.
    async fn app_by_token(&self, token_hash: &str) -> Result<Option<App>, StoreError>;
    /// `false` if there is no such app.
    async fn revoke_app(&self, id: &str) -> Result<bool, StoreError>;
    /// `false` if there is no such app.
    async fn grant(&self, app_id: &str, account: &str) -> Result<bool, StoreError>;
    async fn granted(&self, app_id: &str, account: &str) -> Result<bool, StoreError>;

    /// `None` when the app already has `max` queues.
    async fn create_queue(&self, app_id: &str, code: &str, name: &str, max: usize) -> Result<Option<Queue>, StoreError>;
    async fn queues(&self, app_id: &str) -> Result<Vec<Queue>, StoreError>;
    /// Deletes its subscriptions and events; `false` if the app has no such queue.
    async fn delete_queue(&self, app_id: &str, code: &str) -> Result<bool, StoreError>;
    /// `None` if the app has no such queue.
    async fn subscribe(&self, app_id: &str, queue: &str, subscription: &Subscription) -> Result<Option<Subscription>, StoreError>;
    async fn subscriptions(&self, app_id: &str, queue: &str) -> Result<Option<Vec<Subscription>>, StoreError>;
    async fn unsubscribe(&self, app_id: &str, queue: &str, code: &str) -> Result<bool, StoreError>;
    /// Every subscription of every queue (the fan-out's view).
    async fn all_subscriptions(&self) -> Result<Vec<Subscription>, StoreError>;
    /// Every queue with its consumer's backlog, by app.
    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError>;
    /// Every grant: (app id, account).
    async fn all_grants(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// In one transaction: copy the history of `replays` up to `through`
    /// (changes the fan-out already passed) into their queues, add
    /// `entries`, and move the fan-out's cursor to `cursor`. A change is in
    /// a queue at most once.
    async fn fan_out(
        &self,
        replays: &[Subscription],
        through: ChangeCursor,
        entries: &[Entry],
        cursor: ChangeCursor,
    ) -> Result<(), StoreError>;
    /// Acknowledge (if `ack`), then hand out up to `limit` unacknowledged
    /// events; `nonce` makes the new batch's `ack_id` unguessable.
    async fn pull(&self, app_id: &str, queue: &str, ack: Option<Ack>, limit: usize, nonce: String) -> Result<PullOutcome, StoreError>;
    /// Delete up to `limit` queue events committed before `cutoff`, counting
    /// unacknowledged ones as dropped; returns (deleted, dropped per queue code).
    async fn purge_queue_events(&self, cutoff: &str, limit: usize) -> Result<(u64, Vec<(String, i64)>), StoreError>;
    /// Bumped after every fan-out that added events (on Postgres, also in
    /// other processes): long polls wake on it.
    fn queue_events(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// The fan-out's reader name among the change log's readers (it holds the
/// change log's purge back like a sink).
pub const FANOUT_READER: &str = "queue:fanout";

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(batch: i64) -> Ack {
        Ack { batch, nonce: format!("n{batch}") }
    }

    #[test]
    fn acknowledgements_move_forward_only_for_the_batch_handed_out() {
        let mut state = QueueState::default();
        let event = |seq| (seq, crate::store::tests::change_at(seq));
        let first = state.hand_out(&[event(1), event(2)], "n1".into()).unwrap();
        assert_eq!(first, ack(1));
        // pulled again without acknowledging: batch 2 supersedes batch 1
        let second = state.hand_out(&[event(1), event(2), event(3)], "n2".into()).unwrap();
        assert!(matches!(state.acknowledge(Some(&first)), Err(PullOutcome::StaleAck)));
        assert!(matches!(state.acknowledge(Some(&ack(7))), Err(PullOutcome::UnknownAck)));
        assert!(matches!(state.acknowledge(Some(&Ack { batch: 2, nonce: "forged".into() })), Err(PullOutcome::UnknownAck)));
        assert_eq!(state.acked_through, 0);
        state.acknowledge(Some(&second)).unwrap();
        assert_eq!(state.acked_through, 3);
        // the same acknowledgement again (a retried pull) changes nothing
        state.acknowledge(Some(&second)).unwrap();
        assert_eq!(state.acked_through, 3);
        assert!(state.hand_out(&[], "n3".into()).is_none());
    }

    #[test]
    fn event_type_patterns() {
        assert!(type_matches("*", "order.created"));
        assert!(type_matches("order.*", "order.created"));
        assert!(!type_matches("order.*", "orders.created"));
        assert!(type_matches("order.created", "order.created"));
        assert!(!type_matches("order.created", "order.created.v2"));
    }
}
