//! Sinks: where delivery sends changes. Each sink kind has the same shape:
//! a validated config section and a runtime that sends one batch and says
//! whether a failure is worth retrying.
//!
//! Every kind has a folder with the same files: `mod.rs` (declares),
//! `config.rs` (its typed `[[sinks]]` keys with their defaults, validated
//! once) and `sink.rs` (the runtime).
//!
//! - `config`: `[[sinks]]` entries: the common keys, the kind, the filter
//! - `webhook`: signed POSTs (Standard Webhooks)
//! - `redis`: `XADD` to Redis Streams
//! - `nats`: JetStream publish with server-side dedupe
//! - `kafka`: an idempotent producer, keyed by object id
//! - `encoding`: message bodies — the JSON envelope, or Avro in the
//!   Confluent wire format with schemas derived and registered

pub mod config;
pub mod encoding;
pub mod kafka;
pub mod nats;
pub mod redis;
pub mod webhook;

pub use config::{Filter, SinkConfig, SinkKind};

use crate::store::Change;

/// One change as every sink sends it: the JSON envelope and what sinks
/// route or dedupe by.
#[derive(Debug, Clone)]
pub struct Message {
    /// The change id, stable across redeliveries.
    pub id: String,
    /// The object id: Kafka key, per-object ordering.
    pub key: String,
    pub source: String,
    pub object: String,
    pub account: Option<String>,
    /// The envelope: `id`, `source`, `object`, `object_id`, `account`, `op`,
    /// `type`, `data`, `previous_attributes`, `upstream_event_id`, `committed_at`.
    pub body: String,
}

impl Message {
    pub fn from_change(change: &Change) -> Message {
        Message {
            id: change.id.clone(),
            key: change.object_id.clone(),
            source: change.source.clone(),
            object: change.object.clone(),
            account: change.account.clone(),
            // `Change` serializes as exactly the envelope
            body: serde_json::to_string(change).unwrap_or_default(),
        }
    }

    /// The message of a stored envelope (a dead letter's), as it was first
    /// sent.
    pub fn from_envelope(envelope: &str) -> Result<Message, String> {
        #[derive(serde::Deserialize)]
        struct Head {
            id: String,
            source: String,
            object: String,
            object_id: String,
            account: Option<String>,
        }
        let head: Head = serde_json::from_str(envelope).map_err(|e| e.to_string())?;
        Ok(Message {
            id: head.id,
            key: head.object_id,
            source: head.source,
            object: head.object,
            account: head.account,
            body: envelope.to_string(),
        })
    }

    /// A topic, subject or stream key from a template with `{source}`,
    /// `{object}` and `{account}` (`platform` when there is none).
    pub fn route(&self, template: &str) -> String {
        template
            .replace("{source}", &self.source)
            .replace("{object}", &self.object)
            .replace("{account}", self.account.as_deref().unwrap_or("platform"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth another try: the destination is down, slow or said 5xx.
    #[error("{0}")]
    Retryable(String),
    /// The destination asked never to be called again (webhook 410).
    #[error("{0}")]
    Disabled(String),
    /// The sink cannot be built from its config (bad secret, bad URL).
    #[error("{0}")]
    Config(String),
    /// This message can never be delivered: the destination refused it for
    /// good (a 4xx other than 408 and 429) or it cannot be encoded (it does
    /// not fit its Avro schema). Parked at once, never retried.
    #[error("{0}")]
    Rejected(String),
}

impl SinkError {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Retryable(_) => "retryable",
            SinkError::Disabled(_) => "disabled",
            SinkError::Config(_) => "config",
            SinkError::Rejected(_) => "rejected",
        }
    }

    /// No retry can deliver it: it goes to the dead letters whatever
    /// `max_attempts` says.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SinkError::Rejected(_))
    }
}

/// A destination for messages.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Deliver a batch in order; `Ok` only once the destination confirmed
    /// every message.
    async fn send(&self, batch: &[Message]) -> Result<(), SinkError>;
}

/// Connect the runtime of a sink.
pub async fn build(config: &SinkConfig) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match &config.kind {
        SinkKind::Webhook(c) => Box::new(webhook::Webhook::new(&config.name, c)?),
        SinkKind::Redis(c) => Box::new(redis::RedisStreams::connect(c).await?),
        SinkKind::Nats(c) => Box::new(nats::JetStream::connect(c).await?),
        SinkKind::Kafka(c) => Box::new(kafka::Kafka::connect(c)?),
    })
}
