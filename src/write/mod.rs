//! Idempotent writes through to the upstream, as atomic phases with
//! recovery points (Stripe's own design for requests that call a foreign
//! API midway and so cannot be rolled back):
//!
//! 1. insert or take the `Idempotency-Key` (`started`); a finished key
//!    replays its answer, a held one is 409, another request's is 422;
//! 2. send the write upstream with a key derived from the client's, so
//!    sending it again never repeats the side effect (its answer is recorded,
//!    `upstream_called`, only when the last phase fails: a stop before that
//!    sends again and gets the same answer back);
//! 3. in one transaction: the returned object into the mirror and the change
//!    log, the staged jobs, the answer (`finished`).
//!
//! A request that stops anywhere leaves its key at a recovery point; a
//! client retry (or the completer) goes on from there.
//!
//! - `upstream`: sending one write to a source's upstream
//! - `maintenance`: the enqueuer of staged jobs, the completer, the reaper

pub mod maintenance;
pub mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::config::{Config, ConfigError, SourceConfig};
use crate::store::writes::{Answer, Begin, Finish, KeyRecord, KeyRequest, RecoveryPoint, StagedJob};
use crate::store::{Batch, Mutation, Origin, Store, StoreError, Write, timestamp};
use crate::stripe_api::Resource;
use upstream::Upstream;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no source named '{0}' takes writes")]
    UnknownSource(String),
    #[error("'{resource}' is not a resource of source '{name}'")]
    UnknownResource { name: String, resource: String },
    /// Stripe has no such write for the resource (prices are never deleted).
    #[error("Stripe does not let you {action} {resource}")]
    NotWritable { resource: String, action: &'static str },
    #[error("this Idempotency-Key was first used for another request; use a new key for a different request")]
    Mismatch,
    #[error("a request with this Idempotency-Key is in progress; retry it later")]
    InFlight,
    #[error("the upstream gave no final answer ({0}); retry with the same Idempotency-Key")]
    Upstream(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the client asked for.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub app_id: String,
    pub key: String,
    pub source: String,
    /// `POST` (create, update) or `DELETE`.
    pub method: &'static str,
    /// The resource's path under `/v1/`, with the object's id to update or
    /// delete (`customers/cus_1`, `customers/cus_1/tax_ids`,
    /// `checkout/sessions`); a list's own path creates.
    pub path: String,
    pub params: Map<String, Value>,
    /// The connected account it acts for; `None`: the platform.
    pub account: Option<String>,
}

/// A write's answer and whether it was replayed from its key.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub answer: Answer,
    pub replayed: bool,
}

/// Writes through to every source that takes them.
pub struct Writes {
    store: Arc<dyn Store>,
    upstreams: HashMap<String, Upstream>,
    /// How long an untouched, unfinished key waits before it is presumed
    /// abandoned (taken over by a retry or the completer).
    grace: Duration,
    /// Woken when a finished write staged a job.
    staged: tokio::sync::Notify,
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn is_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= crate::ids::MAX_TEXT && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Writes {
    pub fn new(store: Arc<dyn Store>, config: &Config) -> Result<Writes, ConfigError> {
        let mut upstreams = HashMap::new();
        for source in &config.sources {
            match source {
                SourceConfig::Stripe(c) => {
                    let upstream = Upstream::new(c, c.api_key()?).map_err(|e| ConfigError::Invalid(format!("source '{}': {e}", c.name)))?;
                    upstreams.insert(c.name.clone(), upstream);
                }
                // read-only upstreams: writes to them answer 404
                SourceConfig::Window(_) | SourceConfig::EventQueue(_) | SourceConfig::Rest(_) => {}
            }
        }
        let grace = Duration::from_secs(config.writes.completer_grace_secs);
        Ok(Writes { store, upstreams, grace, staged: tokio::sync::Notify::new() })
    }

    /// The resources a source takes writes for.
    pub fn resources(&self, source: &str) -> Result<&[&'static Resource], WriteError> {
        self.upstreams.get(source).map(|u| u.resources.as_slice()).ok_or_else(|| WriteError::UnknownSource(source.to_string()))
    }

    /// Check a request and turn it into the key's request.
    fn key_request(&self, request: WriteRequest) -> Result<KeyRequest, WriteError> {
        crate::ids::check_text("Idempotency-Key", &request.key).map_err(|e| WriteError::BadRequest(e.0))?;
        let upstream = self.upstreams.get(&request.source).ok_or_else(|| WriteError::UnknownSource(request.source.clone()))?;
        let unknown = || WriteError::UnknownResource { name: request.source.clone(), resource: request.path.clone() };
        let target = crate::stripe_api::resolve(upstream.resources.iter().copied(), &request.path).ok_or_else(unknown)?;
        if let Some(bad) = target.parent.iter().chain(&target.id).find(|id| !is_id(id)) {
            return Err(WriteError::BadRequest(format!("'{bad}' is not an object id")));
        }
        let resource = target.resource;
        let (allowed, action) = match (request.method, &target.id) {
            ("DELETE", Some(_)) => (resource.delete_endpoint, "delete"),
            ("DELETE", None) => (false, "delete a whole list of"),
            (_, Some(_)) => (resource.update, "update"),
            (_, None) => (resource.create, "create"),
        };
        if !allowed {
            return Err(WriteError::NotWritable { resource: resource.path.to_string(), action });
        }
        let path = format!("/v1/{}", request.path.trim_matches('/'));
        let params = crate::stripe_api::form_encode(&request.params);
        let fingerprint = crate::ids::sha256_hex(&format!("{} {path}\n{params}", request.method));
        Ok(KeyRequest {
            app_id: request.app_id,
            key: request.key,
            source: request.source,
            method: request.method.to_string(),
            path,
            params,
            fingerprint,
            account: request.account,
        })
    }

    /// Run a write to its end, or replay its key's answer.
    pub async fn execute(&self, request: WriteRequest) -> Result<Outcome, WriteError> {
        let request = self.key_request(request)?;
        let (at, expired) = self.lock_window();
        match self.store.begin_write(&request, &at, &expired).await? {
            Begin::Replay(answer) => Ok(Outcome { answer, replayed: true }),
            Begin::InFlight => Err(WriteError::InFlight),
            Begin::Mismatch => Err(WriteError::Mismatch),
            Begin::Proceed(record) => Ok(Outcome { answer: self.drive(*record).await?, replayed: false }),
        }
    }

    /// Now, and the instant before which a lock is presumed abandoned.
    fn lock_window(&self) -> (String, String) {
        let at = now();
        (timestamp(at), timestamp(at - chrono::Duration::from_std(self.grace).unwrap_or_default()))
    }

    /// The completer: take keys left unfinished and untouched for the grace
    /// period and drive each from its recovery point; returns how many
    /// finished. One the upstream still fails is left for the next round.
    pub async fn complete_abandoned(&self, limit: usize) -> Result<usize, StoreError> {
        let (at, expired) = self.lock_window();
        let mut finished = 0;
        for record in self.store.abandoned_keys(&expired, limit).await? {
            // taken like a client retry would: one holder at a time
            let Begin::Proceed(record) = self.store.begin_write(&record.request, &at, &expired).await? else { continue };
            let (app, key) = (record.request.app_id.clone(), record.request.key.clone());
            match self.drive(*record).await {
                Ok(answer) => {
                    tracing::info!(kind = "write_completed", by = "completer", app = %app, key = %key, status = answer.status,
                        "abandoned write finished");
                    finished += 1;
                }
                Err(WriteError::Store(e)) => return Err(e),
                Err(e) => tracing::warn!(kind = "write_incomplete", app = %app, key = %key, error = %e, "abandoned write not finished yet"),
            }
        }
        Ok(finished)
    }

    /// From the key's recovery point to `finished`.
    async fn drive(&self, record: KeyRecord) -> Result<Answer, WriteError> {
        let request = &record.request;
        let upstream = match record.upstream {
            Some(answer) => answer,
            None => {
                let target = self.upstreams.get(&request.source).ok_or_else(|| WriteError::UnknownSource(request.source.clone()))?;
                match target.send(request).await {
                    // recorded only if the last phase fails: were the process
                    // to stop first, sending again under the derived key
                    // gets the same answer back
                    Ok(answer) => answer,
                    Err(reason) => {
                        tracing::warn!(kind = "write_upstream_failed", source = %request.source, key = %request.key, error = %reason,
                            "write left at its recovery point for a retry");
                        self.store.release_key(&request.app_id, &request.key, &timestamp(now())).await?;
                        return Err(WriteError::Upstream(reason));
                    }
                }
            }
        };
        if let Err(e) = self.finish(request, &upstream).await {
            if record.recovery_point == RecoveryPoint::Started {
                self.store.record_upstream(&request.app_id, &request.key, &upstream, &timestamp(now())).await?;
            }
            self.store.release_key(&request.app_id, &request.key, &timestamp(now())).await?;
            return Err(e);
        }
        Ok(upstream)
    }

    /// Phase 3: the object the upstream returned into the mirror and the
    /// change log, the staged job and the answer, in one transaction.
    async fn finish(&self, request: &KeyRequest, upstream: &Answer) -> Result<(), WriteError> {
        let mut writes = Vec::new();
        let mut jobs = Vec::new();
        let object = (200..300).contains(&upstream.status).then(|| serde_json::from_str::<Value>(&upstream.body).ok()).flatten();
        if let Some(mut object) = object.filter(|o| o["id"].is_string() && o["object"].is_string()) {
            // the mirror holds objects complete, as backfill and events store
            // them (the answer goes back to the client as it came)
            if let Some(target) = self.upstreams.get(&request.source) {
                crate::source::stripe::complete_nested(&target.reader, request.account.as_deref(), &mut object)
                    .await
                    .map_err(|e| WriteError::Upstream(format!("completing a nested list of the answer: {e}")))?;
            }
            let (kind, id) =
                (object["object"].as_str().unwrap_or_default().to_string(), object["id"].as_str().unwrap_or_default().to_string());
            jobs.push(StagedJob {
                kind: "write.completed".into(),
                payload: json!({"id": format!("write_{}", &upstream::upstream_key(&request.app_id, &request.key)[4..28]),
                    "account": request.account, "app_id": request.app_id, "idempotency_key": request.key, "source": request.source,
                    "method": request.method, "path": request.path, "status": upstream.status, "object": kind, "object_id": id}),
            });
            let mutation = if object["deleted"] == json!(true) { Mutation::Delete } else { Mutation::Upsert(object) };
            writes.push(Write { object: kind, id, account: request.account.clone(), mutation, origin: Origin::Write, generation: 0 });
        }
        let finish = Finish { app_id: request.app_id.clone(), key: request.key.clone(), response: upstream.clone(), jobs };
        let staged = !finish.jobs.is_empty();
        self.store.apply(Batch { source: request.source.clone(), writes, finish: Some(finish), ..Batch::default() }).await?;
        if staged {
            self.staged.notify_one();
        }
        Ok(())
    }
}
