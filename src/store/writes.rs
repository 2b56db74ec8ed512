//! What the store keeps for idempotent writes through to the upstream: one
//! row per (app, `Idempotency-Key`) with the request's fingerprint, its
//! recovery point (`started` → `upstream_called` → `finished`), who holds it,
//! and the answers. The rules that decide what a request with a known key
//! does live here, once, so both backends decide the same way.

use serde::{Deserialize, Serialize};

use super::StoreError;

/// How far a keyed request got; every step is committed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryPoint {
    /// The key is recorded; the upstream may or may not have been called.
    Started,
    /// The upstream answered; its answer is stored, the mirror not yet written.
    UpstreamCalled,
    /// The mirror, the change log and the response are stored.
    Finished,
}

impl RecoveryPoint {
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryPoint::Started => "started",
            RecoveryPoint::UpstreamCalled => "upstream_called",
            RecoveryPoint::Finished => "finished",
        }
    }

    pub fn parse(text: &str) -> Option<RecoveryPoint> {
        match text {
            "started" => Some(RecoveryPoint::Started),
            "upstream_called" => Some(RecoveryPoint::UpstreamCalled),
            "finished" => Some(RecoveryPoint::Finished),
            _ => None,
        }
    }
}

/// A keyed request as first seen: what a retry must repeat exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRequest {
    pub app_id: String,
    pub key: String,
    pub source: String,
    /// `POST` or `DELETE`.
    pub method: String,
    /// The upstream path (`/v1/customers/cus_1`).
    pub path: String,
    /// The normalised parameters (form-encoded, keys sorted): replayed to
    /// the upstream by whoever finishes the request.
    pub params: String,
    /// SHA-256 of method, path and parameters.
    pub fingerprint: String,
    /// The connected account the write acts for; `None`: the platform.
    pub account: Option<String>,
}

/// A stored answer: HTTP status and body, replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// A key's row.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub request: KeyRequest,
    pub recovery_point: RecoveryPoint,
    /// When the request now working on it took it; `None`: nobody holds it.
    pub locked_at: Option<String>,
    /// The upstream's answer, from `upstream_called` on.
    pub upstream: Option<Answer>,
    /// The client's answer, once `finished`.
    pub response: Option<Answer>,
    pub created_at: String,
    pub updated_at: String,
}

/// What a request that names a key gets to do.
#[derive(Debug, Clone)]
pub enum Begin {
    /// It holds the key now (new, or taken over from its recovery point).
    Proceed(Box<KeyRecord>),
    /// The key is finished: its answer, to send again.
    Replay(Answer),
    /// Another request holds the key (409).
    InFlight,
    /// The key was first used for another request (422).
    Mismatch,
}

/// The decision for a key that exists: `lock_expired` says whether a lock
/// taken at `locked_at` is old enough that its holder is presumed dead.
pub fn decide(existing: &KeyRecord, request: &KeyRequest, lock_expired: impl Fn(&str) -> bool) -> Begin {
    let same = existing.request.method == request.method
        && existing.request.path == request.path
        && existing.request.fingerprint == request.fingerprint
        && existing.request.source == request.source
        && existing.request.account == request.account;
    if !same {
        return Begin::Mismatch;
    }
    if let (RecoveryPoint::Finished, Some(answer)) = (existing.recovery_point, &existing.response) {
        return Begin::Replay(answer.clone());
    }
    match &existing.locked_at {
        Some(at) if !lock_expired(at) => Begin::InFlight,
        _ => Begin::Proceed(Box::new(existing.clone())),
    }
}

/// How long a write holds its object against older upstream states
/// ([`super::plan::Fence`]) if the upstream never echoes it.
pub const FENCE_SECS: i64 = 600;

/// What finishing a request writes besides the mirror and the change log,
/// in the same transaction (carried by [`super::Batch::finish`]).
#[derive(Debug, Clone)]
pub struct Finish {
    pub app_id: String,
    pub key: String,
    pub response: Answer,
    /// Jobs that leave only if this transaction commits.
    pub jobs: Vec<StagedJob>,
}

/// A job written inside a phase's transaction; the enqueuer hands it on
/// after commit.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedJob {
    /// Its event type (`write.completed`).
    pub kind: String,
    /// The event: `id` (stable), `account`, and what happened.
    pub payload: serde_json::Value,
}

/// Staged jobs handed on to the change log as notices, in the transaction
/// that deletes them (carried by [`super::Batch::handoff`]).
#[derive(Debug, Clone, Default)]
pub struct Handoff {
    /// The staged jobs' ids; all of them must still be there.
    pub jobs: Vec<i64>,
    pub notices: Vec<StagedJob>,
}

/// The write side of the store (both backends).
#[async_trait::async_trait]
pub trait WriteStore: Send + Sync {
    /// Phase 1, in one transaction: record a new key and hold it, or decide
    /// what a request with a known key gets ([`decide`]). A lock older than
    /// `lock_expired_before` (RFC 3339) is presumed abandoned.
    async fn begin_write(&self, request: &KeyRequest, now: &str, lock_expired_before: &str) -> Result<Begin, StoreError>;
    /// Phase 2's record: the upstream answered; the key moves to
    /// `upstream_called` with that answer (still held).
    async fn record_upstream(&self, app_id: &str, key: &str, upstream: &Answer, now: &str) -> Result<(), StoreError>;
    /// Let go of a key left at its recovery point (the upstream failed in a
    /// way worth retrying); a retry or the completer takes it from there.
    async fn release_key(&self, app_id: &str, key: &str, now: &str) -> Result<(), StoreError>;
    /// Unfinished keys untouched since before `before`, oldest first: the
    /// completer's work.
    async fn abandoned_keys(&self, before: &str, limit: usize) -> Result<Vec<KeyRecord>, StoreError>;
    /// Delete keys created before `before` and fences expired by `now`;
    /// returns (keys deleted, of which unfinished).
    async fn reap_keys(&self, before: &str, now: &str) -> Result<(u64, u64), StoreError>;
    /// Up to `limit` staged jobs, oldest first, with their ids.
    async fn staged_jobs(&self, limit: usize) -> Result<Vec<(i64, StagedJob)>, StoreError>;
}
